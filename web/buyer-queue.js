// The waiting room: join (solving the service's proof of work in a Web Worker when it asks
// one), then poll exactly at the server's `pollAfterMs` with one timer and never two requests
// at once, until the token is ACTIVE (resolve) or EXPIRED (offer a rejoin).
import { api, ApiError, serverNow } from "./api.js";

const $ = (id) => document.getElementById(id);

function fmtWait(seconds) {
  if (seconds === null || seconds === undefined) return "calculating";
  if (seconds < 60) return `about ${seconds} s`;
  return `about ${Math.ceil(seconds / 60)} min`;
}

/**
 * Solves a challenge in Web Workers (one per core, up to 4, each searching nonces of its own),
 * showing the progress; resolves with the X-Queue-Pow value.
 */
function solveInWorkers(challenge, bits) {
  const expected = 2 ** bits;
  const count = Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
  const workers = [];
  let tried = 0;
  $("pow-status").hidden = false;
  $("pow-progress").value = 0;
  const stop = () => {
    for (const w of workers) w.terminate();
    $("pow-status").hidden = true;
  };
  return new Promise((resolve, reject) => {
    for (let i = 0; i < count; i++) {
      const worker = new Worker("/web/buyer-pow-worker.js");
      workers.push(worker);
      worker.onmessage = (event) => {
        if (event.data.error) {
          stop();
          reject(new ApiError(0, "pow_required", "Your browser could not finish the check before joining. Please try again."));
          return;
        }
        if (event.data.solution) {
          $("pow-progress").value = 100;
          stop();
          resolve(event.data.solution);
          return;
        }
        // The work is random: after the expected number of hashes 63 % of searches are done.
        // The bar shows that chance, never full before the answer.
        tried += event.data.tried;
        const chance = 1 - Math.exp(-tried / expected);
        $("pow-progress").value = Math.min(99, Math.round(chance * 100));
      };
      worker.onerror = () => {
        stop();
        reject(new ApiError(0, "pow_required", "Your browser could not finish the check before joining. Please try again."));
      };
      worker.postMessage({ challenge, bits, first: i });
    }
  });
}

// The service writes times in its own zone without naming it ("2030-07-19T10:00:00"). A
// fresh token's createdAt is the server's "now" in that zone, so the zone's offset is that
// string read as UTC minus the server's clock; zones are whole quarter hours, so anything
// further from one (an older token given back) is not an offset. Kept for the tab's life.
const QUARTER_HOUR_MS = 15 * 60 * 1000;
const ZONE_KEY = "boxoffice.zoneOffsetMs";

function learnZone(createdAt) {
  const raw = Date.parse(`${createdAt}Z`) - serverNow();
  const rounded = Math.round(raw / QUARTER_HOUR_MS) * QUARTER_HOUR_MS;
  if (Number.isFinite(raw) && Math.abs(raw - rounded) <= 3000) {
    sessionStorage.setItem(ZONE_KEY, String(rounded));
  }
}

/** A service time string as epoch milliseconds, or null when its zone is not known. */
function serviceTimeMs(text) {
  const offset = sessionStorage.getItem(ZONE_KEY);
  if (offset === null) return null;
  return Date.parse(`${text}Z`) - Number(offset);
}

function fmtCountdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// The fair opening (API.md §11): the pre-queue's countdown and commitment, then the place the
// draw gave, with the way to check it.
let countdownTimer = null;
let opening = null;

async function openingOnce(refresh) {
  if (opening === null || refresh) {
    try {
      opening = await api("GET", "/v1/queue/opening");
    } catch (e) {
      opening = null;
    }
  }
  return opening;
}

function showPrequeue(st) {
  $("prequeue").hidden = false;
  $("pq-at").textContent = st.opensAt.slice(11, 16);
  $("pq-arrivals").textContent = Number(st.remainingWaitListCount).toLocaleString("en-US");
  $("wait-place").textContent = "drawn at the opening";
  $("wait-ahead").textContent = "not known before the draw";
  $("wait-estimate").textContent = "after the draw";
  openingOnce(false).then((o) => {
    if (o) $("pq-commitment").textContent = o.commitment;
  });
  const at = serviceTimeMs(st.opensAt);
  if (at === null || countdownTimer !== null) return;
  $("pq-countdown-box").hidden = false;
  const tick = () => {
    $("pq-countdown").textContent = fmtCountdown(at - serverNow());
  };
  tick();
  countdownTimer = setInterval(tick, 1000);
}

function showDrawn(st, token) {
  if (countdownTimer !== null) clearInterval(countdownTimer);
  countdownTimer = null;
  $("prequeue").hidden = true;
  if (!st.drawnPlace || !$("drawn").hidden) return;
  $("drawn").hidden = false;
  $("drawn-place").textContent = `#${Number(st.drawnPlace).toLocaleString("en-US")}`;
  $("drawn-verify").href = `/v1/queue/draw?offset=${st.drawnPlace - 1}&limit=1`;
  $("drawn-command").textContent = `boxoffice verify-draw --url ${location.origin} --token ${token}`;
  openingOnce(true).then((o) => {
    if (o) $("drawn-total").textContent = Number(o.participants).toLocaleString("en-US");
  });
}

/**
 * Joins the line: without work first (a live token comes back as is, and a service that asks
 * none answers at once); on `pow_required`, with a solved challenge, fetched again once if it
 * expired while a slow device solved it.
 */
async function join(userId) {
  const path = `/v1/queue-tokens/users/${userId}`;
  try {
    return await api("POST", path);
  } catch (e) {
    if (!(e instanceof ApiError) || e.slug !== "pow_required") throw e;
  }
  for (let attempt = 0; ; attempt++) {
    const { challenge, bits } = await api("GET", "/v1/queue/challenge");
    const proof = await solveInWorkers(challenge, bits);
    try {
      return await api("POST", path, { headers: { "X-Queue-Pow": proof } });
    } catch (e) {
      if (attempt > 0 || !(e instanceof ApiError) || e.slug !== "pow_invalid") throw e;
    }
  }
}

/**
 * Joins the line for `userId` and waits. Resolves with the ACTIVE token id; rejects with an
 * ApiError("expired") when the token expired so the caller can offer to join again.
 */
export async function waitInLine(userId) {
  $("prequeue").hidden = true;
  $("drawn").hidden = true;
  const joined = await join(userId);
  learnZone(joined.createdAt);
  const token = joined.tokenId;
  let firstAhead = null;
  return new Promise((resolve, reject) => {
    const poll = async () => {
      let st;
      try {
        st = await api("GET", `/v1/queue-status/users/${userId}`, { token });
      } catch (e) {
        // A busy server (503/429) is retried at the usual pace; anything else ends the wait.
        if (e instanceof ApiError && (e.slug === "unavailable" || e.slug === "rate_limited")) {
          setTimeout(poll, 2000);
          return;
        }
        reject(e);
        return;
      }
      if (st.prequeue) {
        showPrequeue(st);
        setTimeout(poll, Math.max(st.pollAfterMs, 100));
        return;
      }
      showDrawn(st, token);
      const ahead = st.remainingWaitListCount;
      if (firstAhead === null) firstAhead = ahead;
      $("wait-place").textContent = st.status === "ACTIVE" ? "your turn" : String(ahead + 1);
      $("wait-ahead").textContent = String(ahead);
      $("wait-estimate").textContent = st.status === "ACTIVE" ? "none" : fmtWait(st.estimatedWaitSeconds);
      $("wait-updated").textContent = new Date().toLocaleTimeString();
      const done = firstAhead > 0 ? (firstAhead - ahead) / firstAhead : 1;
      $("wait-progress").value = st.status === "ACTIVE" ? 100 : Math.round(done * 95);
      if (st.status === "ACTIVE") {
        resolve(token);
      } else if (st.status === "EXPIRED") {
        reject(new ApiError(401, "expired", "Your place in line has expired. Join the line again."));
      } else {
        // The server spreads polls with pollAfterMs; the next poll starts only after this one
        // answered, so there is never more than one in flight.
        setTimeout(poll, Math.max(st.pollAfterMs, 100));
      }
    };
    poll();
  });
}
