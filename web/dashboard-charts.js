// The dashboard's pictures of the last ten minutes, in plain SVG (no library to vendor): one
// small chart per figure an operator watches during a drop. `load` takes the service's
// history (GET /v1/admin/live/history), `push` each live frame's point; every chart redraws
// from the points of the last ten minutes.

const SPAN_MS = 10 * 60 * 1000;
const W = 600;
const H = 120;
const SVG = "http://www.w3.org/2000/svg";

// title, unit, and the series drawn: [label, value of a point, colour class].
const CHARTS = [
  ["Waiting", "people", [["waiting", (p) => p.waiting, "s0"]]],
  ["Admissions/s", "per second", [["admitted", (p) => p.admissionsPerSecond, "s0"]]],
  [
    "Holds/s by outcome",
    "per second",
    [
      ["placed", (p) => p.placed, "s0"],
      ["refused", (p) => p.refused, "s1"],
      ["expired", (p) => p.expired, "s2"],
      ["paid", (p) => p.paid, "s3"],
    ],
  ],
  ["Commit p99", "ms", [["p99", (p) => p.commitP99Ms, "s1"]]],
];

const fmt = (n) => (typeof n === "number" ? (Math.round(n * 10) / 10).toLocaleString("en-US") : "–");

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

export class Charts {
  constructor(box) {
    this.points = [];
    this.figures = CHARTS.map(([title, unit, series]) => {
      const figure = document.createElement("figure");
      figure.className = "chart";
      const caption = document.createElement("figcaption");
      const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", preserveAspectRatio: "none" });
      const legend = document.createElement("p");
      legend.className = "chart-legend";
      for (const [label, , cls] of series) {
        const key = document.createElement("span");
        key.className = `key ${cls}`;
        key.textContent = label;
        legend.append(key);
      }
      figure.append(caption, svg, legend);
      box.append(figure);
      return { title, unit, series, caption, svg };
    });
  }

  load(points) {
    this.points = points.slice();
    this.draw();
  }

  push(point) {
    this.points.push(point);
    this.draw();
  }

  draw() {
    const last = this.points.length ? this.points[this.points.length - 1].atMs : 0;
    this.points = this.points.filter((p) => p.atMs > last - SPAN_MS);
    for (const f of this.figures) this.drawOne(f, last);
  }

  drawOne({ title, unit, series, caption, svg }, last) {
    const values = series.flatMap(([, get]) => this.points.map(get)).filter((v) => typeof v === "number");
    const top = Math.max(1, ...values);
    const x = (p) => ((p.atMs - (last - SPAN_MS)) / SPAN_MS) * W;
    const y = (v) => H - 4 - (v / top) * (H - 8);
    const lines = series.map(([, get, cls]) => {
      // A gap (null: nothing measured) breaks the line rather than drawing it as zero.
      let d = "";
      let pen = "M";
      for (const p of this.points) {
        const v = get(p);
        if (typeof v !== "number") {
          pen = "M";
          continue;
        }
        d += `${pen}${x(p).toFixed(1)},${y(v).toFixed(1)}`;
        pen = "L";
      }
      return el("path", { d: d || "M0,0", class: `line ${cls}`, fill: "none" });
    });
    const grid = el("line", { x1: 0, x2: W, y1: y(top), y2: y(top), class: "grid" });
    const label = el("text", { x: 4, y: 14, class: "axis" });
    label.textContent = `${fmt(top)} ${unit}`;
    svg.replaceChildren(grid, label, ...lines);
    const now = series
      .map(([name, get]) => {
        const lastPoint = this.points[this.points.length - 1];
        return `${name} ${fmt(lastPoint ? get(lastPoint) : null)}`;
      })
      .join(", ");
    caption.textContent = `${title} (last 10 minutes): now ${now}`;
    svg.setAttribute("aria-label", `${title} over the last 10 minutes: now ${now}; highest ${fmt(top)} ${unit}`);
  }
}
