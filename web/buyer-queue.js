// The waiting room: join (solving the service's proof of work in a Web Worker when it asks
// one), then poll exactly at the server's `pollAfterMs` with one timer and never two requests
// at once, until the token is ACTIVE (resolve) or EXPIRED (offer a rejoin).
import { api, ApiError } from "./api.js";

const $ = (id) => document.getElementById(id);

function fmtWait(seconds) {
  if (seconds === null || seconds === undefined) return "calculating";
  if (seconds < 60) return `about ${seconds} s`;
  return `about ${Math.ceil(seconds / 60)} min`;
}

/**
 * Solves a challenge in Web Workers (one per core, up to 4, each trying every n-th nonce),
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
      worker.postMessage({ challenge, bits, first: i, step: count });
    }
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
  const joined = await join(userId);
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
