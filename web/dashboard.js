// Operator dashboard: reads GET /v1/admin/live (Server-Sent Events) with fetch streaming,
// because EventSource cannot send the X-Admin-Key header. The key is typed once and kept in
// sessionStorage only (gone when the tab closes). Nothing but the key form shows without a
// key the service accepted.

import { Charts } from "./dashboard-charts.js";

const KEY_STORE = "boxoffice.adminKey";
const $ = (id) => document.getElementById(id);

let controller = null;
let backoff = 500;
let scheduleId = null;
let charts = null;

function storedKey() {
  return sessionStorage.getItem(KEY_STORE);
}

function showKeyForm(message) {
  $("live").hidden = true;
  $("key-section").hidden = false;
  $("key-error").textContent = message || "";
}

function showLive() {
  $("key-section").hidden = true;
  $("live").hidden = false;
}

// The error envelope in words: "403 forbidden: admin key required".
async function envelopeText(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error}: ${body.message}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function figure(label, value) {
  const wrap = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = label;
  dd.textContent = value;
  wrap.append(dt, dd);
  return wrap;
}

const fmt = (n, digits = 1) => (typeof n === "number" ? n.toFixed(digits).replace(/\.0+$/, "") : "–");

function render(snap) {
  const q = snap.queue;
  const h = snap.holdsPerSecond;
  const c = snap.commit;
  const items = [
    ["Waiting", fmt(q.waiting, 0)],
    ["Active tokens", fmt(q.active, 0)],
    ["Admissions/s", fmt(q.admissionsPerSecond)],
    ["Holds placed/s", fmt(h.placed)],
    ["Holds refused (conflict)/s", fmt(h.refused)],
    ["Holds expired/s", fmt(h.expired)],
    ["Holds voided/s", fmt(h.voided)],
    ["Paid/s", fmt(h.paid)],
    ["Commit p50 ms", fmt(c.p50Ms, 2)],
    ["Commit p99 ms", fmt(c.p99Ms, 2)],
    ["Commit batch size", fmt(c.meanBatch)],
    ["503s/s", fmt(snap.unavailablePerSecond)],
  ];
  for (const s of snap.schedules) {
    items.push([`Schedule ${s.scheduleId} sold / held / seats`, `${s.sold} / ${s.held} / ${s.seats}`]);
  }
  $("figures").replaceChildren(...items.map(([l, v]) => figure(l, v)));
  renderOpening(snap.opening);
  if (charts) {
    charts.push({
      atMs: snap.atMs,
      waiting: q.waiting,
      admissionsPerSecond: q.admissionsPerSecond,
      placed: h.placed,
      refused: h.refused,
      expired: h.expired,
      paid: h.paid,
      commitP99Ms: c.p99Ms,
    });
  }
  renderPicker(snap.schedules);
  renderMap(snap.seatMap);
}

function countdown(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// The fair opening: the pre-queue filling up to the draw, then the draw's size and duration.
function renderOpening(o) {
  const items = [["Opening", o.status.toLowerCase()]];
  if (o.status === "SCHEDULED") {
    items.push(["Opens at", o.opensAt], ["Time to opening", countdown(o.secondsToOpening)], ["Pre-queue", fmt(o.participants, 0)]);
  } else if (o.status === "DRAWN") {
    items.push(["Drawn participants", fmt(o.participants, 0)]);
  }
  if (typeof o.drawMs === "number") items.push(["Draw took (ms)", fmt(o.drawMs, 1)]);
  $("opening-figures").replaceChildren(...items.map(([l, v]) => figure(l, v)));
}

// The last ten minutes as the service kept them, so a page opened mid-drop sees the start.
async function loadHistory(key) {
  if (!charts) charts = new Charts($("charts"));
  try {
    const response = await fetch("/v1/admin/live/history", { headers: { "X-Admin-Key": key } });
    if (response.ok) charts.load((await response.json()).points);
  } catch {
    // The charts fill from the live frames instead.
  }
}

function renderPicker(schedules) {
  const pick = $("schedule-pick");
  const ids = schedules.map((s) => String(s.scheduleId));
  const have = [...pick.options].map((o) => o.value);
  if (ids.join(",") !== have.join(",")) {
    pick.replaceChildren(
      ...schedules.map((s) => {
        const o = document.createElement("option");
        o.value = String(s.scheduleId);
        o.textContent = `Schedule ${s.scheduleId} (concert ${s.concertId})`;
        return o;
      }),
    );
  }
  if (scheduleId !== null) pick.value = String(scheduleId);
}

const STATE = { F: ["free", "·", "free"], H: ["held", "H", "held"], S: ["sold", "S", "sold"] };

function renderMap(map) {
  const box = $("seat-map");
  if (!map) {
    box.replaceChildren();
    $("map-summary").textContent = "No schedule chosen.";
    return;
  }
  const counts = { F: 0, H: 0, S: 0 };
  if (box.children.length !== map.seatIds.length || box.dataset.schedule !== String(map.scheduleId)) {
    box.dataset.schedule = String(map.scheduleId);
    box.replaceChildren(
      ...map.seatIds.map((id) => {
        const cell = document.createElement("span");
        cell.setAttribute("role", "listitem");
        cell.dataset.seat = String(id);
        return cell;
      }),
    );
  }
  [...map.states].forEach((ch, i) => {
    counts[ch] = (counts[ch] || 0) + 1;
    const [cls, text, word] = STATE[ch] || STATE.F;
    const cell = box.children[i];
    if (cell.dataset.state === ch) return;
    cell.dataset.state = ch;
    cell.className = `cell ${cls}`;
    cell.textContent = text;
    cell.setAttribute("aria-label", `seat ${map.seatIds[i]} ${word}`);
  });
  $("map-summary").textContent =
    `Schedule ${map.scheduleId}: ${counts.S} sold, ${counts.H} held, ${counts.F} free`;
}

// Splits an SSE byte stream into events; calls onData with each event's parsed `data:`.
async function readEvents(body, onData) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = raw
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart())
        .join("\n");
      if (data) onData(JSON.parse(data));
    }
  }
}

async function connect() {
  const key = storedKey();
  if (!key) return showKeyForm();
  if (controller) controller.abort();
  controller = new AbortController();
  const query = scheduleId !== null ? `?scheduleId=${encodeURIComponent(scheduleId)}` : "";
  $("conn").textContent = "connecting";
  let response;
  try {
    response = await fetch(`/v1/admin/live${query}`, {
      headers: { "X-Admin-Key": key, Accept: "text/event-stream" },
      signal: controller.signal,
    });
  } catch (e) {
    if (e.name === "AbortError") return;
    return retry();
  }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY_STORE);
    return showKeyForm(`Key refused (${await envelopeText(response)}).`);
  }
  if (!response.ok) {
    $("conn").textContent = `error: ${await envelopeText(response)}`;
    if (response.status === 400 || response.status === 404) {
      // A schedule that does not exist: fall back to the default view.
      scheduleId = null;
    }
    return retry();
  }
  showLive();
  $("conn").textContent = "live";
  await loadHistory(key);
  backoff = 500;
  try {
    await readEvents(response.body, (snap) => {
      if (scheduleId === null && snap.seatMap) scheduleId = snap.seatMap.scheduleId;
      render(snap);
    });
  } catch (e) {
    if (e.name === "AbortError") return;
  }
  retry();
}

function retry() {
  $("conn").textContent = `reconnecting in ${Math.round(backoff / 100) / 10} s`;
  setTimeout(connect, backoff);
  backoff = Math.min(backoff * 2, 10_000);
}

function list(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

// Builds the POST /v1/admin/concerts body: rows × seats per row, the grade of each row (the
// last grade repeats for the remaining rows), a price per grade, one schedule per date.
function concertBody() {
  const rows = Number($("c-rows").value);
  const perRow = Number($("c-per-row").value);
  const grades = list($("c-grades").value);
  const prices = list($("c-prices").value).map(Number);
  const dates = list($("c-dates").value);
  if (!Number.isInteger(rows) || !Number.isInteger(perRow) || rows < 1 || perRow < 1) {
    throw new Error("rows and seats per row must be whole numbers of at least 1");
  }
  if (prices.length === 0 || prices.some((p) => !Number.isInteger(p) || p <= 0)) {
    throw new Error("prices must be positive whole numbers");
  }
  if (!dates.every((d) => /^\d{4}-\d{2}-\d{2}$/.test(d))) {
    throw new Error("dates must be YYYY-MM-DD");
  }
  const seats = [];
  for (let r = 0; r < rows; r++) {
    const g = grades.length ? Math.min(r, grades.length - 1) : -1;
    const rowLabel = r < 26 ? String.fromCharCode(65 + r) : `R${r + 1}`;
    for (let s = 0; s < perRow; s++) {
      const seat = {
        seatNumber: r * perRow + s + 1,
        price: prices[Math.min(Math.max(g, 0), prices.length - 1)],
        row: rowLabel,
        x: s,
        y: r,
      };
      if (g >= 0) seat.grade = grades[g];
      seats.push(seat);
    }
  }
  return {
    name: $("c-name").value,
    schedules: dates.map((d) => ({
      concertAt: `${d}T19:00:00`,
      reservationAt: `${d}T00:00:00`,
      seats,
    })),
  };
}

async function createConcert(event) {
  event.preventDefault();
  const out = $("create-result");
  out.classList.remove("error");
  let body;
  try {
    body = concertBody();
  } catch (e) {
    out.classList.add("error");
    out.textContent = e.message;
    return;
  }
  const response = await fetch("/v1/admin/concerts", {
    method: "POST",
    headers: { "X-Admin-Key": storedKey() || "", "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    out.classList.add("error");
    out.textContent = `Not created: ${await envelopeText(response)}`;
    return;
  }
  const made = await response.json();
  const ids = made.schedules.map((s) => s.scheduleId).join(", ");
  out.textContent = `Created concert ${made.concertId}, schedules ${ids}.`;
}

function init() {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key-input").value;
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("key-input").value = "";
    backoff = 500;
    connect();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    if (controller) controller.abort();
    showKeyForm();
  });
  $("schedule-pick").addEventListener("change", (e) => {
    scheduleId = Number(e.target.value);
    connect();
  });
  $("create-form").addEventListener("submit", createConcert);
  if (storedKey()) connect();
  else showKeyForm();
}

init();
