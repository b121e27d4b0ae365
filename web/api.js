// The one fetch wrapper of the buyer page: JSON in and out, the server clock, and every error
// envelope turned into plain words from its `error` slug (the table in API.md / src/http/error.rs).

const WORDS = {
  invalid_request: "The request was not understood. Check what you typed and try again.",
  invalid_token: "Your place in line is not valid any more. Join the line again.",
  token_expired: "Your turn has ended. Join the line again to continue.",
  token_not_active: "It is not your turn yet. Please wait in line.",
  token_not_found: "You have not joined the line yet.",
  user_not_found: "There is no user with that id.",
  concert_not_found: "That concert does not exist.",
  schedule_not_found: "That performance does not exist.",
  seat_not_found: "One of the seats you picked does not exist.",
  reservation_not_found: "That hold could not be found.",
  reservation_failed: "Sorry, one of the seats you picked was just taken by someone else. Nothing was held; the map now shows what is free.",
  reservation_not_open: "Booking is not open for this performance.",
  seat_limit_exceeded: "You have picked more seats than one person may hold for this performance.",
  reservation_expired: "Your hold has run out and the seats are free again.",
  reservation_cancelled: "This hold was cancelled and the seats are free again.",
  reservation_already_paid: "This hold has already been paid.",
  payment_in_progress: "A payment for this hold is already on its way. Please wait a moment.",
  not_enough_balance: "Your balance is not enough to pay. Recharge first.",
  invalid_recharge_amount: "That recharge amount is not allowed.",
  idempotency_key_reused: "This request was already sent with different details. Please try again.",
  unavailable: "The service is busy for a moment. Please try again in a few seconds.",
  rate_limited: "Too many requests. Please wait a moment.",
  request_timeout: "The request took too long. Please try again.",
  unsupported_media_type: "The request was not understood.",
  unauthorized: "You are not signed in, or your sign-in token has expired.",
  forbidden: "That token belongs to someone else.",
  payment_failed: "The payment failed on our side. Nothing was charged.",
  recharge_failed: "The recharge failed on our side. Nothing was charged.",
  not_found: "That page of the service does not exist.",
  method_not_allowed: "That action is not allowed here.",
  headers_too_large: "The request was too large.",
  pow_required: "Your browser must finish a short check before joining the line. Please try again.",
  pow_invalid: "Your browser's check before joining did not pass or took too long. Please try again.",
  waitlist_entry_not_found: "You are not on the waiting list of this performance.",
  waitlist_already_joined: "You are already on the waiting list of this performance.",
  seats_on_sale: "Seats of this performance are on sale again: go back and pick them.",
  waitlist_full: "The waiting list of this performance is full.",
  waitlist_closed: "The waiting list of this performance is closed.",
  performance_cancelled: "This performance is cancelled. Paid tickets are refunded to your balance.",
  ticket_not_found: "You do not hold that ticket (any more).",
  refund_not_allowed: "This reservation cannot be refunded: a ticket of it was checked in or given away, or the concert is too close.",
  transfer_not_allowed: "This ticket cannot be given away: it was checked in or refunded, or the other person already holds as many seats as one may.",
};

/** An error the page can show: `slug` for decisions, `words` for people. */
export class ApiError extends Error {
  constructor(status, slug, words) {
    super(words);
    this.status = status;
    this.slug = slug;
    this.words = words;
  }
}

/** Plain words for an error slug; never the raw envelope. */
export function wordsFor(slug) {
  return WORDS[slug] || "Something went wrong. Please try again.";
}

// The seam where a bearer token comes from in `--auth jwt` mode: the page's token field sets it.
let bearer = "";
export function setBearer(token) {
  bearer = token.trim();
}
function authHeaders() {
  return bearer ? { Authorization: `Bearer ${bearer}` } : {};
}

// Server clock minus ours, in ms, from the last response's Date header (one-second precision).
let skewMs = 0;
export function serverNow() {
  return Date.now() + skewMs;
}

/**
 * One request. Resolves to the parsed body; rejects with an ApiError in plain words.
 * `token` is the queue token (TOKEN-ID header).
 */
export async function api(method, path, { body, token, headers } = {}) {
  const all = { ...authHeaders(), ...(headers || {}) };
  if (token !== undefined && token !== null) all["TOKEN-ID"] = String(token);
  if (body !== undefined) all["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "network", "The service cannot be reached. Check your connection and try again.");
  }
  const date = resp.headers.get("Date");
  if (date) {
    const parsed = Date.parse(date);
    if (!Number.isNaN(parsed)) skewMs = parsed - Date.now();
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const slug = data && typeof data.error === "string" ? data.error : "unknown";
    throw new ApiError(resp.status, slug, wordsFor(slug));
  }
  return data;
}

/** "110,000 won" */
export function won(amount) {
  return `${Number(amount).toLocaleString("en-US")} won`;
}
