// The waiting room: join, then poll exactly at the server's `pollAfterMs` with one timer and
// never two requests at once, until the token is ACTIVE (resolve) or EXPIRED (offer a rejoin).
import { api, ApiError } from "./api.js";

const $ = (id) => document.getElementById(id);

function fmtWait(seconds) {
  if (seconds === null || seconds === undefined) return "calculating";
  if (seconds < 60) return `about ${seconds} s`;
  return `about ${Math.ceil(seconds / 60)} min`;
}

/**
 * Joins the line for `userId` and waits. Resolves with the ACTIVE token id; rejects with an
 * ApiError("expired") when the token expired so the caller can offer to join again.
 */
export async function waitInLine(userId) {
  const joined = await api("POST", `/v1/queue-tokens/users/${userId}`);
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
