// "My tickets" on the buyer page (API.md §12): each ticket's QR code, big enough for a phone at
// the door, its seat and status, a form to hand it to another user, and a refund button per
// paid reservation.
import { api, won } from "./api.js";

const $ = (id) => document.getElementById(id);

function ticketItem(userId, t, onChange) {
  const li = document.createElement("li");
  li.className = "ticket";
  const title = document.createElement("p");
  const row = t.row ? `row ${t.row}, ` : "";
  title.textContent = `Ticket ${t.ticketId}: ${row}seat ${t.seatNumber}, ${t.concertAt} (${t.status})`;
  li.append(title);
  if (t.status === "VALID") {
    const img = document.createElement("img");
    img.src = `/v1/tickets/${t.ticketId}/qr.svg?userId=${userId}&v=${encodeURIComponent(t.code.slice(-12))}`;
    img.alt = `QR code of ticket ${t.ticketId}`;
    img.width = 300;
    img.height = 300;
    img.className = "qr";
    li.append(img);
    const code = document.createElement("input");
    code.readOnly = true;
    code.value = t.code;
    code.setAttribute("aria-label", `Code of ticket ${t.ticketId}`);
    li.append(code);
    const form = document.createElement("form");
    const label = document.createElement("label");
    label.textContent = "Give this ticket to user id";
    const to = document.createElement("input");
    to.inputMode = "numeric";
    to.id = `transfer-${t.ticketId}`;
    label.htmlFor = to.id;
    const send = document.createElement("button");
    send.type = "submit";
    send.textContent = "Transfer";
    form.append(label, to, send);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const toUserId = Number(to.value.trim());
      if (!Number.isSafeInteger(toUserId) || toUserId < 1) return;
      try {
        await api("POST", `/v1/tickets/${t.ticketId}/transfer?userId=${userId}`, { body: { toUserId } });
        onChange(`Ticket ${t.ticketId} now belongs to user ${toUserId}.`);
      } catch (err) {
        onChange(err.words || "The transfer did not go through.");
      }
    });
    li.append(form);
  }
  return li;
}

// A key for one refund: a click again after a lost answer repeats the same refund, and the
// service answers it as the first time instead of refusing it as already refunded.
// getRandomValues, not randomUUID: the page may be served over plain http on a LAN address.
function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "refund-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// One refund button per paid reservation whose tickets are all still valid.
function refundItem(userId, reservationId, onChange) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = `Refund reservation ${reservationId}`;
  const key = idempotencyKey();
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const r = await api("POST", `/v1/reservations/${reservationId}/refund?userId=${userId}`, {
        headers: { "Idempotency-Key": key },
      });
      const balance = await api("GET", `/v1/balance/users/${userId}`);
      onChange(`Refunded ${won(r.amount)}. Your balance is now ${won(balance.currentAmount)}.`);
    } catch (err) {
      button.disabled = false;
      onChange(err.words || "The refund did not go through.");
    }
  });
  li.append(button);
  return li;
}

/** Lists the user's tickets into #ticket-list; `say` reports in words. */
export async function showTickets(userId, say) {
  const list = $("ticket-list");
  const body = await api("GET", `/v1/tickets/users/${userId}`);
  list.replaceChildren();
  const refresh = (words) => {
    say(words);
    showTickets(userId, say).catch(() => {});
  };
  for (const t of body.tickets) list.append(ticketItem(userId, t, refresh));
  const refundable = new Map();
  for (const t of body.tickets) {
    const ok = refundable.get(t.reservationId) ?? true;
    refundable.set(t.reservationId, ok && t.status === "VALID");
  }
  for (const [reservationId, ok] of refundable) {
    if (ok) list.append(refundItem(userId, reservationId, refresh));
  }
  $("tickets-empty").hidden = body.tickets.length > 0;
  $("my-tickets").hidden = false;
}
