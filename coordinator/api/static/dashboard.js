// fedrt dashboard: polls /v1/overview (and /v1/models when versions may have moved) and draws
// tables and SVG charts. ES modules, no build step, nothing loaded from elsewhere.
import { ApiError, api, signIn, signOut, token } from "./api.js";
import { el, lineChart } from "./charts.js";
import { allRoundFigures, flagged, fmtBytes, fmtDuration, kindsText, pct, secaggShare } from "./figures.js";
import { initVersions, renderVersions } from "./versions.js";
import { loadAsync, renderAsync } from "./fedbuff.js";
import { renderEvaluation } from "./evaluation.js";

const REFRESH_MS = 2000;
const MAX_ROUNDS = 12; // rows in the rounds table, newest first
let models = { key: null, list: [], bySha: new Map() };

function ago(ts, now) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, Math.round(now - ts));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
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

// One series per task (and per figure in `names`) from the rounds' figures.
function figureSeries(figures, tasks, names, pick) {
  const out = [];
  for (const t of tasks) {
    const mine = figures.filter((x) => x.task === t && !x.f.running);
    for (const name of names) {
      const points = mine.map((x) => [x.round.round_no, pick(x.f, name)]).filter((p) => p[1] !== null);
      if (points.length) out.push({ name: (tasks.length > 1 ? t.task_id + " " : "") + name, points });
    }
  }
  return out;
}

function renderTasks(tasks) {
  const body = document.querySelector("#tasks tbody");
  body.replaceChildren();
  if (!tasks.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "no tasks")));
  for (const t of tasks) {
    const r = t.latest_round;
    const share = secaggShare(t);
    body.append(el("tr", { "data-task": t.task_id },
      el("td", {}, el("code", {}, t.task_id)), el("td", {}, t.name),
      el("td", { class: "status-" + t.status }, t.status), el("td", {}, t.spec.strategy || ""),
      el("td", {}, el("code", {}, t.model_sha256.slice(0, 12))),
      el("td", {}, r ? r.round_no : "–"), el("td", {}, r ? r.stage : "–"),
      el("td", { "data-epsilon": t.task_id }, r && r.epsilon != null ? r.epsilon.toFixed(2) : "–"),
      el("td", { "data-secagg-share": t.task_id, title: `${share.secure} of ${share.all} updates in committed training rounds` }, pct(share.share))));
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

function flagText(f) {
  const parts = [];
  if (f.badHolders.length) parts.push("wrong SecAgg+ shares: " + f.badHolders.join(", "));
  if (f.discarded) parts.push(f.discarded + (f.discarded === 1 ? " update" : " updates") + " discarded");
  if (f.normOutliers) parts.push(f.normOutliers + (f.normOutliers === 1 ? " norm outlier" : " norm outliers"));
  return parts.join(" · ");
}

// What the robust rule left out: shown with the flags, not a flag itself (it always does).
function robustText(f) {
  return f.robust ? f.robust.rule + " left out " + f.robust.discarded : "";
}

function renderRounds(figures) {
  const body = document.querySelector("#rounds tbody");
  body.replaceChildren();
  const recent = [...figures].sort((a, b) => b.round.started_at - a.round.started_at).slice(0, MAX_ROUNDS);
  if (!recent.length) body.append(el("tr", {}, el("td", { colspan: 13, class: "empty" }, "no rounds yet")));
  for (const { task, round: r, f } of recent) {
    const cell = (name, text, attrs = {}) => el("td", { "data-fig": name, ...attrs }, text);
    const eps = f.epsilon === null ? "–" : f.epsilon.toFixed(2) + (f.spent !== null ? " (+" + f.spent.toFixed(2) + ")" : "");
    body.append(el("tr", { "data-round": task.task_id + ":" + r.round_no, class: flagText(f) ? "flagged" : "" },
      el("td", { title: task.task_id }, task.name), el("td", {}, r.round_no), el("td", {}, (r.detail || {}).kind || "–"),
      el("td", { class: "status-" + r.status }, r.status), cell("selected", r.selected),
      cell("participation", pct(f.participation), { title: `${r.reporting} of ${r.selected} selected in the aggregate` }),
      cell("dropout", pct(f.dropout), { title: `${r.dropped} of ${r.selected} selected dropped out` }),
      cell("duration", fmtDuration(f.duration) + (f.running ? " so far" : "")),
      cell("down", fmtBytes(f.down), { title: kindsText(f.downByKind) || "version file and messages" }),
      cell("up", fmtBytes(f.up)), cell("epsilon", eps),
      cell("secagg", f.secagg ? "yes" : "no"),
      cell("flags", [flagText(f), robustText(f)].filter(Boolean).join(" · ") || "–")));
  }
}

function renderFlags(figures) {
  const list = document.getElementById("flags");
  list.replaceChildren();
  const bad = flagged(figures).reverse();
  document.getElementById("flag-count").textContent = "(" + bad.length + ")";
  if (!bad.length) list.append(el("li", { class: "empty" }, "nothing flagged in the rounds shown"));
  for (const { task, round, f } of bad) {
    list.append(el("li", { "data-flag": task.task_id + ":" + round.round_no },
      el("code", {}, task.task_id), ` round ${round.round_no}: `, flagText(f)));
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

function renderCharts(tasks, figures) {
  const chart = (id) => document.getElementById(id);
  lineChart(chart("chart-accuracy"), seriesNamed(tasks, /acc/));
  lineChart(chart("chart-loss"), seriesNamed(tasks, /loss/));
  lineChart(chart("chart-bytes"),
    tasks.map((t) => ({ name: t.task_id, points: (t.rounds || []).map((r) => [r.round_no, r.bytes_in]) })),
    { yFormat: fmtBytes });
  const rate = (v) => (100 * v).toFixed(0) + "%";
  lineChart(chart("chart-participation"), figureSeries(figures, tasks, ["participation", "dropout"], (f, n) => f[n]),
    { yFormat: rate, range: [0, 1] });
  lineChart(chart("chart-duration"), figureSeries(figures, tasks, ["duration"], (f) => f.duration), { yFormat: fmtDuration });
  lineChart(chart("chart-device-bytes"), figureSeries(figures, tasks, ["down", "up"], (f, n) => f[n]), { yFormat: fmtBytes });
  // Bytes down per device by kind (graph, weights, delta, file, meta, protocol): shown once
  // the coordinator has counted some.
  const kinds = [...new Set(figures.flatMap(({ f }) => Object.keys(f.downByKind || {})))].sort();
  const byKind = figureSeries(figures, tasks, kinds, (f, n) => (f.downByKind ? f.downByKind[n] : null));
  chart("downlink").hidden = !kinds.length;
  if (kinds.length) lineChart(chart("chart-down-kinds"), byKind, { yFormat: fmtBytes });
  // Differential privacy: shown only when some task spends a privacy budget.
  const spent = tasks.map((t) => ({ name: t.task_id,
    points: (t.rounds || []).filter((r) => r.epsilon != null).map((r) => [r.round_no, r.epsilon]) }))
    .filter((s) => s.points.length);
  chart("privacy").hidden = !spent.length;
  if (spent.length) lineChart(chart("chart-epsilon"), spent, { yFormat: (v) => v.toFixed(2) });
}

function render(data) {
  const figures = allRoundFigures(data.tasks, models.bySha, data.now);
  renderTasks(data.tasks);
  renderLive(data.tasks, data.now);
  renderFlags(figures);
  renderRounds(figures);
  renderEvaluation(data.tasks);
  renderCharts(data.tasks, figures);
  renderVersions(data.tasks, models.list);
  renderDevices(data.devices, data.now);
}

function setStatus(text, cls) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = "pill " + cls;
}

function showSignedIn(yes) {
  document.getElementById("login").hidden = yes;
  document.getElementById("logout").hidden = !yes;
}

// Versions move with rounds, promotions and rollbacks: re-read them only then.
async function loadModels(tasks, force) {
  const key = JSON.stringify(tasks.map((t) => [t.task_id, t.model_sha256, t.latest_round && t.latest_round.round_no]));
  if (!force && key === models.key) return;
  const list = (await api("/v1/models")).models;
  models = { key, list, bySha: new Map(list.map((m) => [m.sha256, m])) };
}

async function refresh(force = false) {
  if (!token()) { showSignedIn(false); setStatus("signed out", "bad"); return; }
  try {
    const data = await api("/v1/overview");
    await loadModels(data.tasks, force);
    render(data);
    renderAsync(await loadAsync(data.tasks), data.now);
    showSignedIn(true);
    setStatus("live", "ok");
    document.body.dataset.ready = "1";
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut(); showSignedIn(false); setStatus("bad token", "bad");
      return;
    }
    setStatus("offline: " + err.message, "bad");
  }
}

// The token is typed into the page only; one that arrives in a URL is dropped from it unused.
if (location.hash) history.replaceState(null, "", location.pathname + location.search);
document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  signIn(input.value);
  input.value = "";
  refresh(true);
});
document.getElementById("logout").addEventListener("click", () => {
  signOut();
  delete document.body.dataset.ready;
  location.reload();
});
initVersions(() => refresh(true));
refresh();
setInterval(refresh, REFRESH_MS);
