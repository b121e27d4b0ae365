// The buyer page: who you are → waiting room → performances → seat plan → hold → checkout →
// paid. Only the public API (api.js); each step is one <section>, shown one at a time.
import { api, ApiError, setBearer, won, wordsFor } from "./api.js";
import { waitInLine } from "./buyer-queue.js";
import { SeatPlan } from "./buyer-seats.js";
import { Waitlist } from "./buyer-waitlist.js";
import { showTickets } from "./buyer-tickets.js";

// The demo concert; another is chosen with `/?concert=ID`.
const CONCERT_ID = (() => {
  const n = Number(new URLSearchParams(location.search).get("concert"));
  return Number.isSafeInteger(n) && n > 0 ? n : 1;
})();
// The server's default `--max-seats-per-user`; no route publishes it, so the server's own
// `seat_limit_exceeded` answer (shown in words) is the authority when it is set lower.
const SEAT_LIMIT = 4;
const SEAT_REFRESH_MS = 3000;
const WARN_AT_S = 60;

const $ = (id) => document.getElementById(id);
const STEPS = ["step-who", "step-wait", "step-schedules", "step-waitlist", "step-seats", "step-checkout", "step-done"];

const state = { userId: null, token: null, schedule: null, reservation: null, payKey: null };
let seatTimer = null;
let countdownTimer = null;

function show(step) {
  for (const s of STEPS) $(s).hidden = s !== step;
  const heading = $(step).querySelector("h2");
  heading.tabIndex = -1;
  heading.focus();
}

function say(text) {
  $("message").textContent = text;
}

function alertText(text) {
  const el = $("alert");
  el.textContent = text || "";
  el.hidden = !text;
}

function fail(e) {
  const words = e instanceof ApiError ? e.words : wordsFor("unknown");
  alertText(words);
  if (e instanceof ApiError && ["invalid_token", "token_expired", "expired"].includes(e.slug)) {
    stopSeatRefresh();
    stopCountdown();
    $("rejoin").hidden = false;
    show("step-wait");
  }
}

function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- who you are, and the waiting room ----

async function join() {
  alertText("");
  $("rejoin").hidden = true;
  $("wait-progress").value = 0;
  show("step-wait");
  say("Joining the line…");
  try {
    state.token = await waitInLine(state.userId);
  } catch (e) {
    if (e instanceof ApiError && e.slug === "user_not_found") {
      alertText(e.words);
      show("step-who");
      return;
    }
    fail(e);
    $("rejoin").hidden = false;
    return;
  }
  say("It is your turn. Choose a performance.");
  await loadSchedules();
}

$("who-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const raw = $("user-id").value.trim();
  const id = Number(raw);
  if (!/^[0-9]{1,15}$/.test(raw) || !Number.isSafeInteger(id) || id < 1) {
    alertText("Type your user id as a whole number, for example 1.");
    $("user-id").setAttribute("aria-invalid", "true");
    $("user-id").focus();
    return;
  }
  $("user-id").removeAttribute("aria-invalid");
  setBearer($("bearer").value);
  state.userId = id;
  $("whoami").textContent = `Buying as user ${id}`;
  $("show-tickets").hidden = false;
  join();
});
$("rejoin").addEventListener("click", join);

// ---- performances ----

async function loadSchedules() {
  let list;
  try {
    list = await api("GET", `/v1/concerts/${CONCERT_ID}/schedules`, { token: state.token });
  } catch (e) {
    fail(e);
    return;
  }
  const items = list.events.map((ev) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    const left = ev.availableSeatCount;
    b.textContent = `${ev.concertAt.replace("T", " ")}: ${left === undefined ? "" : `${left} seats left`}`;
    b.disabled = left === 0;
    b.addEventListener("click", () => openSchedule(ev));
    li.append(b);
    if (left === 0) {
      // Sold out: the waiting list instead (API.md §12).
      const w = document.createElement("button");
      w.type = "button";
      w.textContent = "Sold out: join the waiting list";
      w.addEventListener("click", () => openWaitlist(ev));
      li.append(w);
    }
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.textContent = "No performances are left.";
    items.push(li);
  }
  $("schedule-list").replaceChildren(...items);
  show("step-schedules");
}

// ---- the waiting list of a sold-out performance ----

const waitlist = new Waitlist({
  say,
  fail,
  onPaid: () => loadSchedules(),
});

async function openWaitlist(ev) {
  alertText("");
  $("waitlist-h").textContent = `Waiting list: ${ev.concertAt.replace("T", " ")}`;
  show("step-waitlist");
  await waitlist.open(CONCERT_ID, ev.scheduleId, state.userId);
}

$("waitlist-back").addEventListener("click", () => {
  waitlist.stop();
  loadSchedules();
});

// ---- seat plan ----

const plan = new SeatPlan($("plan"), $("legend"), SEAT_LIMIT, (note) => {
  if (note) say(note);
  renderSelection();
});
$("seat-limit").textContent = String(SEAT_LIMIT);

function renderSelection() {
  const picked = plan.picked();
  const total = picked.reduce((sum, s) => sum + s.seatPrice, 0);
  $("selection").textContent = picked.length
    ? `${picked.length} picked (${picked.map((s) => s.seatNumber).join(", ")}), total ${won(total)}.`
    : "No seats picked.";
  $("hold").disabled = picked.length === 0;
}

async function refreshSeats() {
  const map = await api("GET", `/v1/concerts/${CONCERT_ID}/schedules/${state.schedule.scheduleId}/seats`, {
    token: state.token,
  });
  const lost = plan.update(map.seats);
  if (lost.length) {
    alertText(`Seat ${lost.map((s) => s.seatNumber).join(", ")} was just taken by someone else and is no longer picked.`);
  }
  renderSelection();
}

function stopSeatRefresh() {
  clearTimeout(seatTimer);
  seatTimer = null;
}

function scheduleSeatRefresh() {
  stopSeatRefresh();
  // One timer; the next refresh is armed only after this one answered.
  seatTimer = setTimeout(async () => {
    try {
      await refreshSeats();
    } catch (e) {
      if (!(e instanceof ApiError && e.slug === "unavailable")) {
        fail(e);
        return;
      }
    }
    if (!$("step-seats").hidden) scheduleSeatRefresh();
  }, SEAT_REFRESH_MS);
}

async function openSchedule(ev) {
  state.schedule = ev;
  alertText("");
  plan.clear();
  try {
    await refreshSeats();
  } catch (e) {
    fail(e);
    return;
  }
  $("seats-h").textContent = `Choose your seats: ${ev.concertAt.replace("T", " ")}`;
  show("step-seats");
  scheduleSeatRefresh();
}

$("back-schedules").addEventListener("click", () => {
  stopSeatRefresh();
  loadSchedules();
});

// ---- hold ----

$("hold").addEventListener("click", async () => {
  const picked = plan.picked();
  if (!picked.length) return;
  $("hold").disabled = true;
  alertText("");
  try {
    state.reservation = await api("POST", "/v1/reservations", {
      token: state.token,
      body: {
        userId: state.userId,
        concertId: CONCERT_ID,
        scheduleId: state.schedule.scheduleId,
        seatIds: picked.map((s) => s.seatId),
      },
    });
  } catch (e) {
    fail(e);
    if (e instanceof ApiError && e.slug === "reservation_failed") {
      // All or nothing: nothing is held, so redraw and let the buyer pick again.
      try {
        plan.selected.clear();
        await refreshSeats();
      } catch (e2) {
        fail(e2);
      }
    }
    renderSelection();
    return;
  }
  stopSeatRefresh();
  state.payKey = randomKey();
  $("held-seats").replaceChildren(
    ...state.reservation.seats.map((s) => {
      const li = document.createElement("li");
      const seat = picked.find((p) => p.seatNumber === s.seatNumber);
      li.textContent = `${seat && seat.seatGrade ? `${seat.seatGrade}, ` : ""}${seat && seat.row ? `row ${seat.row}, ` : ""}seat ${s.seatNumber}, ${won(s.price)}`;
      return li;
    }),
  );
  say("Your seats are held. Pay before the time runs out.");
  show("step-checkout");
  await loadCheckout(true);
});

// ---- checkout ----

function stopCountdown() {
  clearInterval(countdownTimer);
  countdownTimer = null;
}

function startCountdown(remainingSeconds) {
  stopCountdown();
  // `remainingHoldSeconds` is measured on the server's clock, so the deadline does not depend
  // on this device's clock being right.
  const deadline = performance.now() + remainingSeconds * 1000;
  let warned = false;
  const tick = () => {
    const left = Math.max(0, Math.round((deadline - performance.now()) / 1000));
    const m = Math.floor(left / 60);
    const s = String(left % 60).padStart(2, "0");
    $("countdown").textContent = `Your seats are held for ${m}:${s} more.`;
    if (left <= WARN_AT_S && !warned && left > 0) {
      warned = true;
      $("countdown-warning").hidden = false;
      $("countdown-warning").textContent = `Less than a minute left: pay now or your seats are released.`;
    }
    if (left === 0) {
      stopCountdown();
      holdGone("Your hold has run out: the seats are no longer yours and are free for others again.");
    }
  };
  tick();
  countdownTimer = setInterval(tick, 1000);
}

function holdGone(text) {
  stopCountdown();
  state.reservation = null;
  $("countdown-warning").hidden = true;
  $("pay").disabled = true;
  $("cancel").disabled = true;
  $("countdown").textContent = text;
  alertText(text);
  const back = document.createElement("button");
  back.type = "button";
  back.textContent = "Choose seats again";
  back.addEventListener("click", () => {
    back.remove();
    openSchedule(state.schedule);
  });
  $("countdown").after(back);
  back.focus();
}

async function loadCheckout(restartCountdown) {
  let p;
  try {
    p = await api("POST", `/v1/payments/users/${state.userId}/progress`, {
      token: state.token,
      body: { reservationId: state.reservation.reservationId },
    });
  } catch (e) {
    if (e instanceof ApiError && ["reservation_expired", "reservation_cancelled"].includes(e.slug)) {
      holdGone(e.words);
      return;
    }
    fail(e);
    return;
  }
  $("co-balance").textContent = won(p.currentAmount);
  $("co-total").textContent = won(p.totalPrice);
  $("co-shortfall").textContent = won(p.shortfall);
  $("pay").disabled = !p.payable;
  $("cancel").disabled = false;
  $("recharge-box").hidden = p.payable;
  if (!p.payable) {
    $("recharge-amount").value = String(p.shortfall);
    say(`Your balance is ${won(p.shortfall)} short. Recharge to pay.`);
  }
  if (restartCountdown) {
    $("countdown-warning").hidden = true;
    startCountdown(p.remainingHoldSeconds);
  }
}

$("recharge").addEventListener("click", async () => {
  const raw = $("recharge-amount").value.trim().replace(/,/g, "");
  const amount = Number(raw);
  if (!/^[0-9]{1,12}$/.test(raw) || amount <= 0) {
    alertText("Type the recharge amount in won as a whole number, for example 50000.");
    return;
  }
  $("recharge").disabled = true;
  try {
    const b = await api("POST", `/v1/balance/users/${state.userId}/recharge`, {
      body: { amount },
      headers: { "Idempotency-Key": randomKey() },
    });
    alertText("");
    say(`Recharged ${won(amount)}. Your balance is now ${won(b.currentAmount)}.`);
    await loadCheckout(false);
  } catch (e) {
    fail(e);
  } finally {
    $("recharge").disabled = false;
  }
});

$("pay").addEventListener("click", async () => {
  if (!state.reservation) return;
  $("pay").disabled = true;
  $("cancel").disabled = true;
  alertText("");
  let paid;
  try {
    // The key is made once per hold: a double click or a retry replays the first payment.
    paid = await api("POST", `/v1/payments/users/${state.userId}`, {
      token: state.token,
      body: { reservationId: state.reservation.reservationId },
      headers: { "Idempotency-Key": state.payKey },
    });
  } catch (e) {
    if (e instanceof ApiError && ["reservation_expired", "reservation_cancelled"].includes(e.slug)) {
      holdGone(e.words);
      return;
    }
    fail(e);
    await loadCheckout(false);
    return;
  }
  stopCountdown();
  let balance = null;
  try {
    balance = await api("GET", `/v1/balance/users/${state.userId}`);
  } catch (e) {
    balance = null;
  }
  $("done-seats").textContent = state.reservation.seats.map((s) => `seat ${s.seatNumber}`).join(", ");
  $("done-amount").textContent = won(paid.amount);
  $("done-payment").textContent = String(paid.paymentId);
  $("done-balance").textContent = balance ? won(balance.currentAmount) : "unknown";
  state.reservation = null;
  say("Payment complete.");
  show("step-done");
  showTickets(state.userId, say).catch(() => {});
});

$("cancel").addEventListener("click", async () => {
  if (!state.reservation) return;
  $("cancel").disabled = true;
  try {
    await api("DELETE", `/v1/reservations/${state.reservation.reservationId}?userId=${state.userId}`, {
      token: state.token,
    });
  } catch (e) {
    fail(e);
    $("cancel").disabled = false;
    return;
  }
  stopCountdown();
  state.reservation = null;
  say("Hold cancelled. The seats are free again.");
  await openSchedule(state.schedule);
});

$("show-tickets").addEventListener("click", () => {
  showTickets(state.userId, say).catch(fail);
});

// A payment spends the queue token, so buying more starts at the line again.
$("again").addEventListener("click", join);

show("step-who");
$("user-id").focus();
