// Model versions per task, with promote and roll-back: each asks for confirmation, then calls
// the API with the signed-in admin token and shows what the coordinator answered.
import { api, ApiError } from "./api.js";
import { el } from "./charts.js";

const MAX_VERSIONS = 8;
let pending = null; // the action the confirmation dialog is about
let afterAction = async () => {};

const short = (sha) => sha.slice(0, 12);
const when = (ts) => new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " ");

function accuracy(m) {
  const v = m.metrics.accuracy !== undefined ? m.metrics.accuracy : m.metrics.federated_accuracy;
  return typeof v === "number" ? v.toFixed(3) : "–";
}

// A task's versions, newest first: its own, and the imported model its lineage starts from.
function versionsOf(task, models) {
  const own = models.filter((m) => m.task_id === task.task_id);
  const parents = new Set(own.map((m) => m.parent_sha256));
  const bases = models.filter((m) => m.task_id === null && (m.sha256 === task.model_sha256 || parents.has(m.sha256)));
  return [...own, ...bases].sort((a, b) => b.created_at - a.created_at || (b.round_no || 0) - (a.round_no || 0));
}

function actionButton(task, m, current) {
  if (m.sha256 !== task.model_sha256) {
    return el("button", { type: "button", "data-action": "promote", "data-task": task.task_id, "data-sha": m.sha256 }, "Promote");
  }
  const parent = current && current.parent_sha256;
  if (!parent) return "";
  return el("button", { type: "button", class: "danger", "data-action": "rollback", "data-task": task.task_id,
    "data-sha": m.sha256, "data-to": parent }, "Roll back");
}

export function renderVersions(tasks, models) {
  const root = document.getElementById("versions");
  root.replaceChildren();
  if (!tasks.length) root.append(el("div", { class: "empty" }, "no tasks"));
  for (const t of tasks) {
    const all = versionsOf(t, models);
    const current = all.find((m) => m.sha256 === t.model_sha256);
    const body = el("tbody");
    for (const m of all.slice(0, MAX_VERSIONS)) {
      const isCurrent = m.sha256 === t.model_sha256;
      body.append(el("tr", { "data-version": m.sha256, class: isCurrent ? "current" : "" },
        el("td", { title: m.sha256 }, el("code", {}, short(m.sha256)), isCurrent ? el("span", { class: "badge" }, "current") : ""),
        el("td", {}, m.round_no === null ? "base" : m.round_no),
        el("td", { class: "status-" + m.status }, m.status.replace("_", " ")),
        el("td", {}, when(m.created_at)), el("td", {}, accuracy(m)),
        el("td", { class: "actions" }, actionButton(t, m, current))));
    }
    const more = all.length > MAX_VERSIONS ? el("div", { class: "muted" }, `${all.length - MAX_VERSIONS} older versions not shown`) : "";
    root.append(el("div", { class: "versions", "data-task": t.task_id },
      el("h3", {}, el("code", {}, t.task_id), " ", t.name),
      el("table", {}, el("thead", {}, el("tr", {}, ...["version", "round", "status", "created", "accuracy", ""].map((h) => el("th", {}, h)))), body),
      more));
  }
}

function ask(button) {
  const { action, task, sha, to } = button.dataset;
  pending = { action, task, sha, to };
  const text = action === "promote"
    ? `Make version ${short(sha)} the current model of task ${task}? The next round starts from it.`
    : `Roll task ${task} back from version ${short(sha)} to ${short(to)}? ${short(sha)} is marked rolled back and the next round starts from ${short(to)}.`;
  document.getElementById("confirm-title").textContent = action === "promote" ? "Promote version" : "Roll back";
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = action === "promote" ? "Promote" : "Roll back";
  const dialog = document.getElementById("confirm");
  dialog.returnValue = "";
  dialog.showModal();
}

function report(text, ok) {
  const out = document.getElementById("action-result");
  out.textContent = text;
  out.className = ok ? "ok" : "bad";
}

async function act({ action, task, sha, to }) {
  const path = `/v1/tasks/${encodeURIComponent(task)}/${action}`;
  try {
    // A rollback leaves the version the operator saw: refuse if it moved meanwhile.
    if (action === "rollback" && (await api(`/v1/tasks/${encodeURIComponent(task)}`)).model_sha256 !== sha) {
      report(`Not rolled back: task ${task} moved off ${short(sha)} meanwhile; look again.`, false);
      return;
    }
    const body = action === "promote" ? { sha256: sha } : { to };
    const after = await api(path, { method: "POST", body });
    const verb = action === "promote" ? "promoted" : "rolled back";
    report(`Task ${task} ${verb}: now on version ${short(after.model_sha256)}.`, true);
  } catch (err) {
    const why = err instanceof ApiError ? `${err.status} ${err.type}: ${err.message}` : err.message;
    report(`Refused by the coordinator (${why})`, false);
  } finally {
    await afterAction();
  }
}

export function initVersions(refresh) {
  afterAction = refresh;
  document.getElementById("versions").addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button) ask(button);
  });
  const dialog = document.getElementById("confirm");
  dialog.addEventListener("close", () => {
    const action = pending;
    pending = null;
    if (dialog.returnValue === "confirm" && action) act(action);
  });
}
