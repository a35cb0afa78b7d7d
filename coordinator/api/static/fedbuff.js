// Async (FedBuff) tasks: commits over time, the staleness of committed updates and the
// buffer fill, as GET /v1/tasks/{id}/async reports them (coordinator/api/async_view.py).
import { api } from "./api.js";
import { el, lineChart } from "./charts.js";
import { fmtDuration } from "./figures.js";

export function isAsync(task) {
  return (task.spec || {}).mode === "async";
}

export async function loadAsync(tasks) {
  const out = [];
  for (const task of tasks.filter(isAsync)) {
    out.push({ task, view: await api("/v1/tasks/" + encodeURIComponent(task.task_id) + "/async") });
  }
  return out;
}

function count(n, of) {
  return n === undefined ? "–" : of ? n + "/" + of : String(n);
}

function card(task, view, now) {
  const lobby = view.lobby;
  const counts = el("div", { class: "counts" });
  for (const [fig, text, label] of [
    ["buffer", count(lobby.ready, view.buffer_size), "buffer fill"],
    ["training", count(lobby.training, view.max_concurrent), "training"],
    ["staleness", view.mean_staleness === null ? "–" : view.mean_staleness.toFixed(1), "mean staleness"],
    ["refused", count(lobby.refused_stale), "refused as stale"],
  ]) counts.append(el("div", {}, el("b", { "data-async-fig": fig }, text), label));
  const when = view.lobby_at === null ? "no cohort ended yet" : "as of the last cohort, " + fmtDuration(now - view.lobby_at) + " ago";
  return el("div", { class: "card", "data-async": task.task_id },
    el("div", {}, el("code", {}, task.task_id), " · ",
      el("span", { "data-async-fig": "commits" }, view.commits.length), " commits of " + view.buffer_size),
    counts, el("div", { class: "muted" }, when));
}

export function renderAsync(views, now) {
  const section = document.getElementById("async");
  section.hidden = !views.length;
  if (!views.length) return;
  document.getElementById("async-cards").replaceChildren(...views.map(({ task, view }) => card(task, view, now)));
  const name = (task, what) => (views.length > 1 ? task.task_id + " " : "") + what;
  const whole = (v) => String(Math.round(v));
  lineChart(document.getElementById("chart-commits"),
    views.map(({ task, view }) => ({ name: name(task, "commits"),
      points: view.commits.map((c, i) => [c.since_start_s, i + 1]) })),
    { yFormat: whole, xFormat: fmtDuration });
  lineChart(document.getElementById("chart-staleness"),
    views.map(({ task, view }) => ({ name: name(task, "updates"),
      points: Object.entries(view.staleness).map(([s, n]) => [Number(s), n]) })),
    { yFormat: whole, xFormat: (v) => "staleness " + Math.round(v) });
}
