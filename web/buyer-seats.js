// The seat plan: one <button> per seat at its x, y (or in a grid by seat number when the seat
// has no plan), coloured by grade and marked by shape when taken. Redraws update the buttons in
// place, so a refresh keeps the selection and the keyboard focus. Arrow keys move between seats
// (one tab stop for the whole plan).
import { won } from "./api.js";

const GRID_COLUMNS = 10;
const GRADE_CLASSES = ["g0", "g1", "g2", "g3", "g4", "g5"];

export class SeatPlan {
  constructor(root, legend, limit, onChange) {
    this.root = root;
    this.legend = legend;
    this.limit = limit;
    this.onChange = onChange;
    this.buttons = new Map(); // seatId -> button
    this.seats = new Map(); // seatId -> seat
    this.selected = new Set();
    this.grades = new Map(); // grade -> class
    this.focusId = null;
    root.addEventListener("keydown", (e) => this.onKey(e));
  }

  clear() {
    this.root.replaceChildren();
    this.buttons.clear();
    this.seats.clear();
    this.selected.clear();
    this.focusId = null;
  }

  gradeOf(seat) {
    return seat.seatGrade || "Seat";
  }

  label(seat) {
    const parts = [this.gradeOf(seat)];
    if (seat.row) parts.push(`row ${seat.row}`);
    parts.push(`seat ${seat.seatNumber}`, won(seat.seatPrice));
    const taken = seat.seatStatus !== "AVAILABLE";
    parts.push(this.selected.has(seat.seatId) ? "selected" : taken ? "taken" : "available");
    return parts.join(", ");
  }

  /** Draws or updates the plan from a seat map answer. Returns the ids that were picked and are now taken. */
  update(seats) {
    const lost = [];
    const hasPlan = seats.every((s) => Number.isInteger(s.x) && Number.isInteger(s.y));
    seats.forEach((seat, index) => {
      if (!this.grades.has(this.gradeOf(seat))) {
        this.grades.set(this.gradeOf(seat), {
          cls: GRADE_CLASSES[this.grades.size % GRADE_CLASSES.length],
          price: seat.seatPrice,
        });
      }
      this.seats.set(seat.seatId, seat);
      let b = this.buttons.get(seat.seatId);
      if (!b) {
        b = document.createElement("button");
        b.type = "button";
        b.className = `seat ${this.grades.get(this.gradeOf(seat)).cls}`;
        b.dataset.seatId = String(seat.seatId);
        b.tabIndex = -1;
        b.addEventListener("click", () => this.toggle(seat.seatId));
        b.addEventListener("focus", () => this.setFocus(seat.seatId, false));
        const col = hasPlan ? seat.x : index % GRID_COLUMNS;
        const row = hasPlan ? seat.y : Math.floor(index / GRID_COLUMNS);
        // CSSOM writes are allowed by the CSP (style= attributes are not).
        b.style.gridColumnStart = String(col + 1);
        b.style.gridRowStart = String(row + 1);
        b.textContent = String(seat.seatNumber);
        this.root.appendChild(b);
        this.buttons.set(seat.seatId, b);
      }
      const taken = seat.seatStatus !== "AVAILABLE";
      if (taken && this.selected.has(seat.seatId)) {
        this.selected.delete(seat.seatId);
        lost.push(seat);
      }
      b.classList.toggle("taken", taken);
      b.classList.toggle("picked", this.selected.has(seat.seatId));
      b.disabled = false; // taken seats stay focusable so their label can be read
      b.setAttribute("aria-disabled", taken ? "true" : "false");
      b.setAttribute("aria-pressed", this.selected.has(seat.seatId) ? "true" : "false");
      b.setAttribute("aria-label", this.label(seat));
    });
    if (this.focusId === null && seats.length) {
      const first = seats.find((s) => s.seatStatus === "AVAILABLE") || seats[0];
      this.setFocus(first.seatId, false);
    }
    this.drawLegend();
    if (lost.length) this.onChange();
    return lost;
  }

  drawLegend() {
    const items = [];
    for (const [grade, { cls, price }] of this.grades) {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = `swatch ${cls}`;
      sw.setAttribute("aria-hidden", "true");
      li.append(sw, `${grade}: ${won(price)}`);
      items.push(li);
    }
    const taken = document.createElement("li");
    const tsw = document.createElement("span");
    tsw.className = "swatch taken";
    tsw.setAttribute("aria-hidden", "true");
    taken.append(tsw, "Taken (crossed out)");
    const picked = document.createElement("li");
    const psw = document.createElement("span");
    psw.className = "swatch picked";
    psw.setAttribute("aria-hidden", "true");
    picked.append(psw, "Your pick (ringed)");
    items.push(taken, picked);
    this.legend.replaceChildren(...items);
  }

  toggle(id) {
    const seat = this.seats.get(id);
    if (!seat) return;
    if (this.selected.has(id)) {
      this.selected.delete(id);
    } else if (seat.seatStatus !== "AVAILABLE") {
      this.onChange(`${this.label(seat)}: this seat is taken.`);
      return;
    } else if (this.selected.size >= this.limit) {
      this.onChange(`You can pick at most ${this.limit} seats.`);
      return;
    } else {
      this.selected.add(id);
    }
    this.update([...this.seats.values()]);
    this.onChange();
  }

  setFocus(id, move) {
    if (this.focusId !== null && this.buttons.has(this.focusId)) this.buttons.get(this.focusId).tabIndex = -1;
    this.focusId = id;
    const b = this.buttons.get(id);
    b.tabIndex = 0;
    if (move) b.focus();
  }

  onKey(e) {
    if (this.focusId === null) return;
    const cur = this.seats.get(this.focusId);
    const all = [...this.seats.values()];
    const pos = (s) => {
      const b = this.buttons.get(s.seatId);
      return [Number(b.style.gridColumnStart), Number(b.style.gridRowStart)];
    };
    const [cx, cy] = pos(cur);
    let next = null;
    const pick = (filter, dist) => {
      let best = null;
      for (const s of all) {
        if (!filter(s)) continue;
        if (best === null || dist(s) < dist(best)) best = s;
      }
      return best;
    };
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const dir = e.key === "ArrowRight" ? 1 : -1;
      next = pick((s) => pos(s)[1] === cy && (pos(s)[0] - cx) * dir > 0, (s) => Math.abs(pos(s)[0] - cx));
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      const dir = e.key === "ArrowDown" ? 1 : -1;
      next = pick(
        (s) => (pos(s)[1] - cy) * dir > 0,
        (s) => Math.abs(pos(s)[1] - cy) * 1000 + Math.abs(pos(s)[0] - cx),
      );
    } else if (e.key === "Home" || e.key === "End") {
      next = e.key === "Home" ? all[0] : all[all.length - 1];
    } else {
      return;
    }
    e.preventDefault();
    if (next) this.setFocus(next.seatId, true);
  }

  picked() {
    return [...this.selected].map((id) => this.seats.get(id));
  }
}
