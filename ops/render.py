"""Human-readable text of the API's JSON: aligned tables and key/value blocks."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]
# Twelve hex digits tell versions apart in a table; --json and `models list` give all 64.
SHORT_SHA = 12


def when(ts: Any) -> str:
    """An epoch time as UTC (a fleet spans time zones; the audit log is compared across them)."""
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def short(sha: Any) -> str:
    return sha[:SHORT_SHA] if isinstance(sha, str) else "-"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True) if value else "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> str:
    """Left-aligned columns two spaces apart; ``empty`` when there are no rows."""
    if not rows:
        return empty
    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = [headers, *text]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)  # fmt: skip


def pairs(items: Sequence[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}" for k, v in items)


def _round_summary(rnd: Any) -> str:
    if not isinstance(rnd, dict):
        return "-"
    return f"{rnd.get('round_no')} {rnd.get('status')} ({rnd.get('stage')})"


def tasks(body: Json) -> str:
    rows = [
        (t["task_id"], t["name"], t["status"], _round_summary(t.get("latest_round")),
         short(t["model_sha256"]), when(t["updated_at"]))
        for t in body["tasks"]
    ]  # fmt: skip
    headers = ("TASK", "NAME", "STATUS", "LATEST ROUND", "MODEL", "UPDATED")
    return table(headers, rows, "no tasks (fedrt tasks create adds one)")


def task(t: Json) -> str:
    items: list[tuple[str, Any]] = [
        ("task", t["task_id"]),
        ("name", t["name"]),
        ("status", t["status"]),
        ("model", t["model_sha256"]),
        ("created", when(t["created_at"])),
        ("updated", when(t["updated_at"])),
        ("latest round", _round_summary(t.get("latest_round"))),
    ]
    items += [(f"spec.{k}", v) for k, v in sorted(t.get("spec", {}).items())]
    return pairs(items)


def rounds(body: Json) -> str:
    rows = [
        (r["round_no"], r["status"], r["stage"], r["checked_in"], r["selected"], r["reporting"],
         r["dropped"], when(r["started_at"]), when(r["ended_at"]), r.get("epsilon"))
        for r in body["rounds"]
    ]  # fmt: skip
    headers = ("ROUND", "STATUS", "STAGE", "CHECKED IN", "SELECTED", "REPORTING", "DROPPED",
               "STARTED", "ENDED", "EPSILON")  # fmt: skip
    return table(headers, rows, "no rounds yet")


def round_detail(r: Json) -> str:
    items: list[tuple[str, Any]] = [
        (k, r.get(k)) for k in ("task_id", "round_no", "status", "stage", "model_sha256",
                                "result_sha256", "checked_in", "selected", "reporting",
                                "dropped", "bytes_in", "epsilon", "noise_stddev", "detail")
    ]  # fmt: skip
    items += [("started", when(r.get("started_at"))), ("ended", when(r.get("ended_at")))]
    stages = table(("AT", "STAGE", "DETAIL"),
                   [(when(s["at"]), s["stage"], s["detail"]) for s in r.get("stages", [])],
                   "no stage transitions")  # fmt: skip
    return pairs(items) + "\n\n" + stages


def models(body: Json) -> str:
    rows = [
        (m["sha256"], m["task_id"], m["status"], m["round_no"], short(m["parent_sha256"]),
         m["size"], when(m["created_at"]))
        for m in body["models"]
    ]  # fmt: skip
    headers = ("SHA256", "TASK", "STATUS", "ROUND", "PARENT", "BYTES", "CREATED")
    return table(headers, rows, "no model versions")


def model(m: Json) -> str:
    return pairs([(k, m.get(k)) for k in ("sha256", "task_id", "status", "round_no",
                                          "parent_sha256", "size")]
                 + [("created", when(m.get("created_at")))])  # fmt: skip


def devices(body: Json) -> str:
    rows = [
        (d["device_id"], "revoked" if d["revoked"] else "active", when(d["enrolled_at"]),
         when(d["last_seen"]), d.get("labels"))
        for d in body["devices"]
    ]  # fmt: skip
    headers = ("DEVICE", "STATE", "ENROLLED", "LAST SEEN", "LABELS")
    return table(headers, rows, "no devices enrolled (fedrt tokens create issues a token)")


def audit(body: Json) -> str:
    rows = [
        (e["seq"], when(e["at"]), e["actor"], e["action"], e["subject"], e.get("detail"))
        for e in body["entries"]
    ]  # fmt: skip
    return table(("SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAIL"), rows, "no entries")


def task_moved(t: Json, verb: str) -> str:
    return f"task {t['task_id']} {verb}: status {t['status']}, model {short(t['model_sha256'])}"


__all__ = [
    "audit", "cell", "devices", "model", "models", "pairs", "round_detail", "rounds", "short",
    "table", "task", "task_moved", "tasks", "when",
]  # fmt: skip
