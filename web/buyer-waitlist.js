// The waiting list of a sold-out performance (API.md §12): join, see your place, and when
// seats come back, the offer with its countdown and a pay button. An offer is paid without a
// queue token: the person waited on the list instead of in the line.
import { api, ApiError, won } from "./api.js";

const POLL_MS = 3000;
const $ = (id) => document.getElementById(id);

function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** One performance's waiting list for one user; `say` and `fail` are the page's. */
export class Waitlist {
  constructor({ say, fail, onPaid }) {
    this.say = say;
    this.fail = fail;
    this.onPaid = onPaid;
    this.timer = null;
    this.tick = null;
    this.payKey = null;
    $("waitlist-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.join();
    });
    $("waitlist-leave").addEventListener("click", () => this.leave());
    $("offer-pay").addEventListener("click", () => this.pay());
  }

  path() {
    return `/v1/concerts/${this.concert}/schedules/${this.schedule}/waitlist/users/${this.user}`;
  }

  /** Opens the list of `schedule` for `user`: shows the entry if there is one. */
  async open(concert, schedule, user) {
    this.stop();
    Object.assign(this, { concert, schedule, user, entry: null });
    try {
      this.render(await api("GET", this.path()));
    } catch (e) {
      if (!(e instanceof ApiError && e.slug === "waitlist_entry_not_found")) this.fail(e);
      this.render(null);
    }
  }

  async join() {
    const seats = Number($("waitlist-seats").value.trim());
    if (!Number.isSafeInteger(seats) || seats < 1 || seats > 4) {
      this.say("Enter a number of seats from 1 to 4.");
      $("waitlist-seats").focus();
      return;
    }
    $("waitlist-join").disabled = true;
    try {
      this.render(await api("POST", this.path(), { body: { seats } }));
      this.say("You are on the waiting list.");
    } catch (e) {
      this.fail(e);
    } finally {
      $("waitlist-join").disabled = false;
    }
  }

  async leave() {
    try {
      await api("DELETE", this.path());
      this.say("You left the waiting list.");
      this.render(null);
    } catch (e) {
      this.fail(e);
    }
  }

  async pay() {
    if (!this.entry || !this.entry.reservationId) return;
    $("offer-pay").disabled = true;
    try {
      const paid = await api("POST", `/v1/payments/users/${this.user}`, {
        body: { reservationId: this.entry.reservationId },
        headers: { "Idempotency-Key": this.payKey },
      });
      this.stop();
      this.say(`Paid ${won(paid.amount)}: the seats are yours.`);
      this.onPaid();
    } catch (e) {
      this.fail(e);
      $("offer-pay").disabled = false;
    }
  }

  render(entry) {
    this.entry = entry;
    const offered = entry && entry.status === "OFFERED";
    $("waitlist-form").hidden = !!entry;
    $("waitlist-status").hidden = !entry;
    $("waitlist-leave").hidden = !entry || offered;
    $("waitlist-offer").hidden = !offered;
    $("offer-pay").hidden = !offered;
    $("offer-pay").disabled = false;
    clearInterval(this.tick);
    if (!entry) return;
    $("waitlist-position").textContent = String(entry.position);
    $("waitlist-state").textContent = offered
      ? `${entry.seats} seat(s) are held for you.`
      : `Waiting for ${entry.seats} seat(s). This page checks every few seconds.`;
    if (offered) {
      this.payKey = this.payKey || randomKey();
      const ends = Date.now() + entry.remainingOfferSeconds * 1000;
      const show = () => {
        const left = Math.max(0, Math.round((ends - Date.now()) / 1000));
        $("offer-countdown").textContent = `Offer held for ${Math.floor(left / 60)} min ${left % 60} s.`;
      };
      show();
      this.tick = setInterval(show, 1000);
    }
    this.poll();
  }

  poll() {
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      if ($("step-waitlist").hidden) return;
      try {
        this.render(await api("GET", this.path()));
      } catch (e) {
        if (e instanceof ApiError && e.slug === "waitlist_entry_not_found") {
          this.say("Your offer ran out and passed to the next person on the list.");
          this.render(null);
        } else {
          this.poll();
        }
      }
    }, POLL_MS);
  }

  stop() {
    clearTimeout(this.timer);
    clearInterval(this.tick);
  }
}
