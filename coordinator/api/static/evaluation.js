// Federated evaluation: each task's latest evaluation round, over all its devices and per
// device label (coordinator/rounds/eval_figures.py; docs/evaluation.md).
import { el } from "./charts.js";
import { isEvaluation, pct } from "./figures.js";

// [figure name, cell format]: accuracies as percentages, the spread in percentage points.
const FIGURES = [
  ["federated_accuracy", pct],
  ["worst_decile_accuracy", pct],
  ["accuracy_std", (v) => "±" + (100 * v).toFixed(1)],
  ["personalized_accuracy", pct],
];

// The task's newest committed evaluation round that carries the figures, or null.
export function latestEvaluation(task) {
  let best = null;
  for (const r of task.rounds || []) {
    const figures = (r.detail || {}).evaluation || {};
    if (!isEvaluation(r) || r.status !== "committed" || figures.federated_accuracy === undefined) continue;
    if (best === null || r.round_no > best.round_no) best = r;
  }
  return best;
}

function row(task, round, group, figures) {
  const cells = FIGURES.map(([name, fmt]) =>
    el("td", { "data-eval-fig": name }, figures[name] === undefined ? "–" : fmt(figures[name])));
  return el("tr", { "data-eval": task.task_id + ":" + group },
    el("td", { title: task.task_id }, task.name), el("td", {}, round.round_no), el("td", {}, group),
    el("td", {}, figures.eval_devices === undefined ? "–" : String(figures.eval_devices)), ...cells);
}

export function renderEvaluation(tasks) {
  const latest = tasks.map((t) => [t, latestEvaluation(t)]).filter(([, r]) => r !== null);
  document.getElementById("evaluation").hidden = !latest.length;
  const body = document.querySelector("#evaluation tbody");
  body.replaceChildren();
  for (const [task, round] of latest) {
    const detail = round.detail;
    body.append(row(task, round, "all devices", detail.evaluation));
    for (const [label, figures] of Object.entries(detail.evaluation_by_label || {})) {
      body.append(row(task, round, label, figures));
    }
  }
}
