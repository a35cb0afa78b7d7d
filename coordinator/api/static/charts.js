// Line charts drawn as inline SVG (no library, nothing fetched from elsewhere).
export const COLORS = ["#2f6fed", "#1f9d55", "#d97706", "#c53030", "#7c3aed", "#0891b2"];
const SVG_NS = "http://www.w3.org/2000/svg";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// series: [{name, points: [[x, y], ...]}]; `range`: fixed [y0, y1] (e.g. 0..1 for rates).
export function lineChart(target, series, { yFormat = (v) => v.toFixed(3), range = null,
  xFormat = (v) => "round " + Math.round(v) } = {}) {
  target.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (!all.length) { target.append(el("div", { class: "empty" }, "no data yet")); return; }
  const W = 400, H = 200, L = 52, R = 10, T = 10, B = 24;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = range || [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const y of [y0, y1]) {
    const t = svg("text", { x: L - 4, y: sy(y) + 3, "text-anchor": "end" });
    t.textContent = yFormat(y);
    root.append(t);
  }
  for (const [x, anchor] of [[x0, "start"], [x1, "end"]]) {
    const t = svg("text", { x: sx(x), y: H - 6, "text-anchor": anchor });
    t.textContent = xFormat(x);
    root.append(t);
  }
  series.forEach((s, i) => {
    const colour = COLORS[i % COLORS.length];
    const d = s.points.map((p, j) => (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
    root.append(svg("path", { class: "series", d, stroke: colour }));
    for (const p of s.points) root.append(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: colour }));
  });
  target.append(root);
  if (series.length > 1) {
    target.append(el("div", { class: "legend" }, ...series.map((s, i) =>
      el("span", {}, el("i", { class: "swatch c" + (i % COLORS.length) }), s.name))));
  }
}
