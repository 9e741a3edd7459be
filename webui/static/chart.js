// A small canvas line chart (what uPlot would do here): downsampled to the canvas width, EMA smoothing,
// drag to zoom, several series. No dependencies, so the page works unplugged. docs/gui.md
"use strict";
class LSChart {
  constructor(canvas, opts = {}) {
    this.canvas = canvas; this.opts = opts; this.series = []; this.zoom = null; this.drag = null;
    this.colors = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#718096"];
    canvas.addEventListener("mousedown", e => { this.drag = {x0: this._x(e), x1: this._x(e)}; });
    canvas.addEventListener("mousemove", e => { if (this.drag) { this.drag.x1 = this._x(e); this.draw(); } });
    window.addEventListener("mouseup", () => {
      if (!this.drag) return;
      const [a, b] = [this.drag.x0, this.drag.x1].sort((p, q) => p - q);
      this.drag = null;
      if (b - a > 5 && this.view) this.zoom = [this._stepAt(a), this._stepAt(b)];
      this.draw();
    });
    canvas.addEventListener("dblclick", () => this.resetZoom());
  }
  _x(e) { const r = this.canvas.getBoundingClientRect(); return (e.clientX - r.left) * this.canvas.width / r.width; }
  _stepAt(px) { const v = this.view; return v.x0 + (px - v.left) / (v.w) * (v.x1 - v.x0); }
  resetZoom() { this.zoom = null; this.draw(); }
  setSeries(series) { this.series = series; this.draw(); }
  static smooth(points, alpha) {  // TensorBoard-style debiased EMA
    if (!alpha) return points;
    let last = 0, n = 0;
    return points.map(([x, y]) => { last = last * alpha + (1 - alpha) * y; n++; return [x, last / (1 - Math.pow(alpha, n))]; });
  }
  static bucket(points, x0, x1, columns) {  // min/max/last per pixel column: 100k steps draw as fast as 1k
    if (points.length <= columns * 2) return points;
    const out = [], span = (x1 - x0) || 1;
    let col = -1, lo = null, hi = null, lastP = null;
    const flush = () => { if (lo) { out.push(lo[0] <= hi[0] ? lo : hi, lo[0] <= hi[0] ? hi : lo); if (lastP !== lo && lastP !== hi) out.push(lastP); } };
    for (const p of points) {
      const c = Math.floor((p[0] - x0) / span * columns);
      if (c !== col) { flush(); col = c; lo = hi = p; }
      if (p[1] < lo[1]) lo = p; if (p[1] > hi[1]) hi = p; lastP = p;
    }
    flush();
    return out;
  }
  draw() {
    const c = this.canvas, g = c.getContext("2d"), W = c.width, H = c.height;
    const left = 64, right = 12, top = 10, bottom = 24, w = W - left - right, h = H - top - bottom;
    g.clearRect(0, 0, W, H);
    g.font = "11px sans-serif"; g.fillStyle = "#555";
    const all = this.series.filter(s => s.points.length);
    if (!all.length) { g.fillText("no data yet", left + 8, top + 16); this.view = null; return; }
    let x0 = Infinity, x1 = -Infinity;
    all.forEach(s => { x0 = Math.min(x0, s.points[0][0]); x1 = Math.max(x1, s.points[s.points.length - 1][0]); });
    if (this.zoom) [x0, x1] = this.zoom;
    if (x1 === x0) x1 = x0 + 1;
    const drawn = all.map((s, i) => {
      let pts = s.points.filter(p => p[0] >= x0 && p[0] <= x1 && isFinite(p[1]));
      const raw = LSChart.bucket(pts, x0, x1, w);
      const smooth = s.smooth ? LSChart.bucket(LSChart.smooth(pts, s.smooth), x0, x1, w) : null;
      return {name: s.name, raw, smooth, color: this.colors[i % this.colors.length]};
    });
    let y0 = Infinity, y1 = -Infinity;
    drawn.forEach(d => d.raw.forEach(p => { y0 = Math.min(y0, p[1]); y1 = Math.max(y1, p[1]); }));
    if (!isFinite(y0)) { y0 = 0; y1 = 1; }
    if (y1 === y0) { y1 += Math.abs(y1) * 0.05 || 1; y0 -= Math.abs(y0) * 0.05 || 0; }
    const X = x => left + (x - x0) / (x1 - x0) * w, Y = y => top + (1 - (y - y0) / (y1 - y0)) * h;
    this.view = {x0, x1, left, w};
    g.strokeStyle = "#ddd"; g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + i * h / 4; g.beginPath(); g.moveTo(left, y); g.lineTo(left + w, y); g.stroke();
      g.fillText(Number(y1 - i * (y1 - y0) / 4).toPrecision(3), 4, y + 4);
    }
    for (let i = 0; i <= 5; i++) { const x = x0 + i * (x1 - x0) / 5; g.fillText(String(Math.round(x)), X(x) - 8, H - 6); }
    drawn.forEach((d, i) => {
      const line = (pts, color, width) => { g.strokeStyle = color; g.lineWidth = width; g.beginPath();
        pts.forEach((p, j) => j ? g.lineTo(X(p[0]), Y(p[1])) : g.moveTo(X(p[0]), Y(p[1]))); g.stroke(); };
      line(d.raw, d.smooth ? d.color + "55" : d.color, 1);
      if (d.smooth) line(d.smooth, d.color, 2);
      g.fillStyle = d.color; g.fillText(d.name, left + 8 + i * 110, top + 12);
    });
    if (this.drag) { g.fillStyle = "rgba(66,153,225,0.2)"; const [a, b] = [this.drag.x0, this.drag.x1].sort((p, q) => p - q); g.fillRect(a, top, b - a, h); }
    this.canvas.dataset.points = String(drawn.reduce((n, d) => n + d.raw.length, 0));
  }
}
