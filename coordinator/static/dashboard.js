// fedrt dashboard: polls /v1/overview and draws tables and SVG charts. No build step.
"use strict";

const COLORS = ["#2f6fed", "#1f9d55", "#d97706", "#c53030", "#7c3aed", "#0891b2"];
const REFRESH_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

function adminToken() {
  // A token passed as #token=... is moved to sessionStorage and removed from the URL.
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("fedrt-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("fedrt-token");
}

function el(tag, attrs = {}, ...children) {
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

function ago(ts, now) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, Math.round(now - ts));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

// series: [{name, points: [[x, y], ...]}]
function lineChart(target, series, yFormat = (v) => v.toFixed(3)) {
  target.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (!all.length) { target.append(el("div", { class: "empty" }, "no data yet")); return; }
  const W = 400, H = 200, L = 48, R = 10, T = 10, B = 24;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const [y, label] of [[y0, yFormat(y0)], [y1, yFormat(y1)]]) {
    const t = svg("text", { x: L - 4, y: sy(y) + 3, "text-anchor": "end" });
    t.textContent = label;
    root.append(t);
  }
  for (const [x, anchor] of [[x0, "start"], [x1, "end"]]) {
    const t = svg("text", { x: sx(x), y: H - 6, "text-anchor": anchor });
    t.textContent = "round " + Math.round(x);
    root.append(t);
  }
  series.forEach((s, i) => {
    const d = s.points.map((p, j) => (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
    root.append(svg("path", { class: "series", d, stroke: COLORS[i % COLORS.length] }));
    for (const p of s.points) {
      root.append(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: COLORS[i % COLORS.length] }));
    }
  });
  target.append(root);
}

function seriesNamed(tasks, pattern) {
  const out = [];
  for (const t of tasks) {
    for (const [name, rows] of Object.entries(t.series || {})) {
      if (pattern.test(name)) out.push({ name: t.task_id + " " + name, points: rows.map((r) => [r.round_no, r.value]) });
    }
  }
  return out;
}

function renderTasks(tasks) {
  const body = document.querySelector("#tasks tbody");
  body.replaceChildren();
  if (!tasks.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "no tasks")));
  for (const t of tasks) {
    const r = t.latest_round;
    body.append(el("tr", { "data-task": t.task_id },
      el("td", {}, el("code", {}, t.task_id)), el("td", {}, t.name),
      el("td", { class: "status-" + t.status }, t.status), el("td", {}, t.spec.strategy || ""),
      el("td", {}, el("code", {}, t.model_sha256.slice(0, 12))),
      el("td", {}, r ? r.round_no : "–"), el("td", {}, r ? r.stage : "–"),
      el("td", { "data-epsilon": t.task_id }, r && r.epsilon != null ? r.epsilon.toFixed(2) : "–")));
  }
}

function renderLive(tasks, now) {
  const live = document.getElementById("live");
  live.replaceChildren();
  const running = tasks.filter((t) => t.latest_round && t.latest_round.status === "running");
  if (!running.length) live.append(el("div", { class: "empty" }, "no round in progress"));
  for (const t of running) {
    const r = t.latest_round;
    const left = r.deadline === null ? "no deadline" : Math.max(0, Math.round(r.deadline - now)) + " s to deadline";
    const counts = el("div", { class: "counts" });
    for (const [k, label] of [["checked_in", "checked in"], ["selected", "selected"], ["reporting", "reporting"], ["dropped", "dropped"]]) {
      counts.append(el("div", {}, el("b", { "data-count": k }, r[k]), label));
    }
    live.append(el("div", { class: "card", "data-task": t.task_id },
      el("div", {}, el("code", {}, t.task_id), " · round " + r.round_no),
      el("div", { class: "stage" }, r.stage), el("div", { class: "muted" }, left), counts));
  }
}

function renderDevices(devices, now) {
  const body = document.querySelector("#devices tbody");
  body.replaceChildren();
  document.getElementById("device-count").textContent = "(" + devices.length + ")";
  if (!devices.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "no devices enrolled")));
  for (const d of devices) {
    body.append(el("tr", { "data-device": d.device_id },
      el("td", {}, el("code", {}, d.device_id)), el("td", {}, new Date(d.enrolled_at * 1000).toISOString().slice(0, 19).replace("T", " ")),
      el("td", {}, ago(d.last_seen, now)), el("td", { class: d.revoked ? "status-cancelled" : "status-running" }, d.revoked ? "revoked" : "active"),
      el("td", {}, Object.entries(d.labels).map(([k, v]) => k + "=" + v).join(", "))));
  }
}

function render(data) {
  renderTasks(data.tasks);
  renderLive(data.tasks, data.now);
  lineChart(document.getElementById("chart-accuracy"), seriesNamed(data.tasks, /acc/));
  lineChart(document.getElementById("chart-loss"), seriesNamed(data.tasks, /loss/));
  lineChart(document.getElementById("chart-bytes"),
    data.tasks.map((t) => ({ name: t.task_id, points: (t.rounds || []).map((r) => [r.round_no, r.bytes_in]) })),
    fmtBytes);
  // Differential privacy: shown only when some task spends a privacy budget.
  const spent = data.tasks.map((t) => ({ name: t.task_id,
    points: (t.rounds || []).filter((r) => r.epsilon != null).map((r) => [r.round_no, r.epsilon]) }))
    .filter((s) => s.points.length);
  document.getElementById("privacy").hidden = !spent.length;
  if (spent.length) lineChart(document.getElementById("chart-epsilon"), spent, (v) => v.toFixed(2));
  renderDevices(data.devices, data.now);
}

function setStatus(text, cls) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = "pill " + cls;
}

async function refresh() {
  const token = adminToken();
  const login = document.getElementById("login");
  if (!token) { login.hidden = false; setStatus("signed out", "bad"); return; }
  try {
    const res = await fetch("/v1/overview", { headers: { Authorization: "Bearer " + token } });
    if (res.status === 401) { sessionStorage.removeItem("fedrt-token"); login.hidden = false; setStatus("bad token", "bad"); return; }
    if (!res.ok) throw new Error("HTTP " + res.status);
    render(await res.json());
    login.hidden = true;
    setStatus("live", "ok");
    document.body.dataset.ready = "1";
  } catch (err) {
    setStatus("offline: " + err.message, "bad");
  }
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("fedrt-token", document.getElementById("token").value);
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
