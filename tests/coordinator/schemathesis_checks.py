"""Schemathesis hooks for the API property test: what "valid data is accepted" means where
the OpenAPI document states a rule in prose because no schema keyword can.

Loaded by the schemathesis CLI (``hooks`` in its config), not collected by pytest.
"""

from __future__ import annotations

import math
from typing import Any

import schemathesis

from fedrt.coordinator.privacy.config import DpConfig
from fedrt.coordinator.tasks import TaskSpec

# Operations whose schema-valid requests may still be refused with 400, and why.
PROSE_RULES = {
    # The manifest must name the model part's size, sha256 and file type.
    ("POST", "/v1/models"),
    # model_dir must hold an export; the TaskSpec description's cross-field rules.
    ("POST", "/v1/tasks"),
}


def broken_spec_rule(spec: dict[str, Any]) -> str | None:
    """The TaskSpec description's cross-field rule ``spec`` breaks, if any."""
    task, dp = TaskSpec(), DpConfig()
    goal = spec.get("goal_count", task.goal_count)
    if spec.get("min_reports", task.min_reports) > goal:
        return "min_reports <= goal_count"
    raw_dp = spec.get("dp", {})
    if raw_dp.get("mode", "none") != "none":
        population = max(goal, math.ceil(goal * spec.get("over_selection", task.over_selection)))
        if raw_dp.get("delta", dp.delta) >= 1.0 / population:
            return "delta < 1 / population"
    if raw_dp.get("target_epsilon", 0) > raw_dp.get("budget_epsilon", math.inf):
        return "target_epsilon <= budget_epsilon"
    return None


@schemathesis.check
def positive_data_accepted_or_explained(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """``positive_data_acceptance`` for the PROSE_RULES operations: a schema-valid request
    answered 400 must break a rule the document states (the server must say which)."""
    meta = case.meta
    if (case.method.upper(), case.path) not in PROSE_RULES or meta is None:
        return None
    if not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    error = response.json()["error"]
    if error["type"] == "BadArtifactError":
        return None  # the named or uploaded artifact is not an export: content, not shape
    body = case.body if isinstance(case.body, dict) else {}
    rule = broken_spec_rule(body.get("spec", {})) if case.path == "/v1/tasks" else None
    if rule is None:
        raise AssertionError(f"schema-valid request refused: {error['message']}")
    return None
