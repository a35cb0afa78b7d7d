"""The coordinator's import rules: each subpackage imports only the layers below it.

Every import of every module under coordinator/ counts: top-level, inside functions and under
``TYPE_CHECKING``. docs/architecture.md draws the same table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COORDINATOR = Path(__file__).resolve().parents[2] / "coordinator"
PREFIX = "fedrt.coordinator"

# Low to high. A package imports its own modules and the packages of lower layers; siblings
# in one layer are independent of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("records", "validation", "state_thread"),
    ("store", "security", "strategies", "selection"),
    ("privacy", "devices", "models"),
    ("tasks",),
    ("driver",),
    ("rounds", "api", "broker", "telemetry"),
)
# The composition root: imports anything, imported by nothing below it ("__init__" is
# coordinator/__init__.py).
ROOF = ("__init__", "cli", "config", "driver_registry", "service", "startup")
# The round state machine and its parts: sans I/O, so none of the persistence or driver side.
SANS_IO = frozenset(
    f"{PREFIX}.rounds.{m}"
    for m in (
        "aggregation",
        "cohort_results",
        "cohorts",
        "commands",
        "delegation",
        "eval_figures",
        "machine",
        "outbox",
        "personal_spans",
        "remote_cohorts",
        "roster",
        "routing",
        "states",
    )
)
SANS_IO_MAY_NOT = ("store", "records", "driver", "models", "tasks")
# What it may use of fedrt outside itself: the version, the error root, the protocol core
# and the model file format.
OUTSIDE = ("fedrt", "fedrt.errors")
OUTSIDE_PACKAGES = ("fedrt.protocol", "fedrt.model_export")

LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(COORDINATOR).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PREFIX, *parts))


def module_path(module: str) -> Path | None:
    """The file of a coordinator module or package; None if there is none."""
    base = COORDINATOR.joinpath(*module.split(".")[2:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_of(module: str) -> str:
    """``fedrt.coordinator.rounds.machine`` -> ``rounds``; the coordinator itself: ``__init__``."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else "__init__"


def imported(module: str, source: str) -> list[tuple[int, str]]:
    """(line, module) of every fedrt import in ``source`` (module ``module``)."""
    out: list[tuple[int, str]] = []
    path = module_path(module)
    is_package = path is not None and path.name == "__init__.py"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("fedrt")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("fedrt"):
                continue
            for alias in node.names:
                # ``from fedrt.coordinator.rounds import commands`` imports a module.
                sub = f"{base}.{alias.name}"
                is_module = sub.startswith(PREFIX) and module_path(sub) is not None
                out.append((node.lineno, sub if is_module else base))
    return out


def violations(module: str, source: str) -> list[str]:
    """The import rules ``module`` (with this ``source``) breaks, one line each."""
    src = package_of(module)
    found = []
    for line, target in imported(module, source):
        where = f"{module}:{line} imports {target}"
        if not target.startswith(PREFIX):
            if target not in OUTSIDE and not target.startswith(OUTSIDE_PACKAGES):
                found.append(f"{where}: the coordinator uses only {OUTSIDE + OUTSIDE_PACKAGES}")
            continue
        dst = package_of(target)
        path = module_path(target)
        if path is None:
            found.append(f"{where}: no such module")
            continue
        if path.name == "__init__.py" and target != PREFIX:
            found.append(f"{where}: a package facade; import the module that defines the name")
        if module in SANS_IO and (
            dst in SANS_IO_MAY_NOT or (dst == "rounds" and target not in SANS_IO)
        ):
            found.append(f"{where}: the round machine's modules are sans I/O")
        if src == dst or src in ROOF:
            continue
        if dst in ROOF:
            found.append(f"{where}: nothing below the roof ({', '.join(ROOF)}) imports it")
        elif LAYER[dst] == LAYER[src]:
            found.append(f"{where}: {src} and {dst} are siblings, independent of each other")
        elif LAYER[dst] > LAYER[src]:
            found.append(f"{where}: {src} (layer {LAYER[src]}) is below {dst} (layer {LAYER[dst]})")
    return found


MODULES = sorted(COORDINATOR.rglob("*.py"))


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = {module_name(p) for p in MODULES} - {
        m for m in map(module_name, MODULES) if package_of(m) in LAYER or package_of(m) in ROOF
    }
    assert not unplaced, f"place these in LAYERS or ROOF: {sorted(unplaced)}"
    assert not set(LAYER) & set(ROOF)
    # Every package named exists, so the table cannot silently go stale.
    assert all(module_path(f"{PREFIX}.{p}") is not None for p in (*LAYER, *ROOF[1:]))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(COORDINATOR)))
def test_imports_follow_the_layers(path: Path) -> None:
    assert violations(module_name(path), path.read_text()) == []


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        (f"{PREFIX}.store.base", "from fedrt.coordinator.api.app import build_app", "below"),
        (f"{PREFIX}.api.routes_tasks", "import fedrt.coordinator.rounds.driver", "siblings"),
        (f"{PREFIX}.tasks.spec", "from fedrt.coordinator.config import Secret", "roof"),
        (f"{PREFIX}.rounds.machine", "from fedrt.coordinator.records import TaskRecord", "sans"),
        (f"{PREFIX}.rounds.outbox", "from fedrt.coordinator.rounds import journal", "sans"),
        (f"{PREFIX}.models.catalog", "from fedrt.coordinator.store import Store", "facade"),
        (f"{PREFIX}.broker.link", "from fedrt.sdk.device import Device", "uses only"),
        (
            f"{PREFIX}.privacy.rounds",
            "def f():\n    from ..rounds.commands import Commit\n",
            "below",
        ),
        (
            f"{PREFIX}.devices.enrollment",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from fedrt.coordinator.service import CoordinatorService\n",
            "roof",
        ),
    ],
)
def test_a_forbidden_import_is_caught(module: str, source: str, rule: str) -> None:
    (found,) = violations(module, source)
    assert rule in found


def test_allowed_imports_pass() -> None:
    source = (
        "from fedrt.coordinator.store.base import Store\n"
        "from fedrt.coordinator.rounds import commands\n"
        "from fedrt.protocol import round_messages\n"
    )
    assert violations(f"{PREFIX}.rounds.driver", source) == []
    assert violations(f"{PREFIX}.service", "import fedrt.coordinator.rounds.driver") == []
