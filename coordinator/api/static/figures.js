// What an operator reads off the stored rounds, derived here from what /v1/overview and
// /v1/models already return (pure functions: no DOM, no requests).

export function ratio(n, d) {
  return d > 0 ? n / d : null;
}

function metricsOf(round) {
  return (round.detail && round.detail.metrics) || {};
}

export function isEvaluation(round) {
  return (round.detail || {}).kind === "evaluate";
}

// Whether the round's updates went through SecAgg+; rounds stored before the driver said so
// fall back to the task's setting (evaluation rounds never use it).
export function usedSecagg(round, task) {
  const m = metricsOf(round);
  if (typeof m.secagg === "boolean") return m.secagg;
  return Boolean(task.spec.secagg) && !isEvaluation(round);
}

// One round's figures. `previous`: the task's round before it (for the epsilon this round
// spent); `models`: Map sha256 -> model view (the version the round's devices download).
export function roundFigures(round, previous, task, models, now) {
  const m = metricsOf(round);
  const detail = round.detail || {};
  const reported = m.reported !== undefined ? m.reported : round.reporting;
  const model = models.get(round.model_sha256);
  // Down: what the coordinator counted per selected device by kind (detail.traffic: the
  // version's metadata, file, graph, weights or deltas, and the MQTT messages); rounds
  // stored before it was counted: the whole version file plus the messages.
  let down = null;
  const byKind = (detail.traffic || {}).down_per_device || null;
  if (byKind) {
    down = Object.values(byKind).reduce((a, b) => a + b, 0);
  } else if (round.ended_at !== null && round.selected > 0 && detail.bytes_out !== undefined && model) {
    down = model.size + detail.bytes_out / round.selected;
  }
  let spent = null;
  if (round.epsilon !== null && round.epsilon !== undefined) {
    const before = previous && previous.epsilon !== null ? previous.epsilon : 0;
    spent = round.epsilon - before;
  }
  // A round's counts and bytes are written when it ends; until then only its clock runs.
  const ended = round.ended_at !== null;
  return {
    participation: ended ? ratio(round.reporting, round.selected) : null,
    dropout: ended ? ratio(round.dropped, round.selected) : null,
    duration: (ended ? round.ended_at : now) - round.started_at,
    running: !ended,
    down,
    downByKind: byKind,
    up: ended ? ratio(round.bytes_in, reported) : null,
    epsilon: round.epsilon === undefined ? null : round.epsilon,
    spent: ended ? spent : null,
    secagg: usedSecagg(round, task),
    badHolders: m.bad_holders || [],
    discarded: m.discarded || 0,
    // Rounds without SecAgg: the robust rule's discards (by design, not a flag) and the
    // updates whose norm stood out of the round's (the attack-detection count, a flag).
    robust: m.aggregator && m.aggregator !== "mean" ? { rule: m.aggregator, discarded: m.robust_discarded || 0 } : null,
    normOutliers: m.norm_outliers || 0,
  };
}

// Every round of every task with its figures, in round order per task.
export function allRoundFigures(tasks, models, now) {
  const out = [];
  for (const t of tasks) {
    const rounds = [...(t.rounds || [])].sort((a, b) => a.round_no - b.round_no);
    rounds.forEach((r, i) => out.push({ task: t, round: r, f: roundFigures(r, rounds[i - 1], t, models, now) }));
  }
  return out;
}

// Of the updates in a task's committed training rounds, the share aggregated under SecAgg+.
export function secaggShare(task) {
  let all = 0, secure = 0;
  for (const r of task.rounds || []) {
    if (r.status !== "committed" || isEvaluation(r)) continue;
    all += r.reporting;
    if (usedSecagg(r, task)) secure += r.reporting;
  }
  return { share: ratio(secure, all), secure, all };
}

// Rounds an operator should look at: wrong SecAgg+ shares revealed, updates refused,
// updates of outlying norm.
export function flagged(figures) {
  return figures.filter(({ f }) => f.badHolders.length || f.discarded || f.normOutliers);
}

// "delta 58.6 KiB · protocol 2.8 KiB": the kinds a device's bytes down were, largest first.
export function kindsText(byKind) {
  if (!byKind) return "";
  return Object.entries(byKind).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1])
    .map(([k, n]) => k + " " + fmtBytes(n)).join(" · ");
}

export function pct(x) {
  return x === null ? "–" : (100 * x).toFixed(0) + "%";
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
}

export function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  if (s < 120) return s + " s";
  if (s < 7200) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}
