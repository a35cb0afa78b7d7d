"""Fixtures of the multi-host tests: a LAN of network namespaces and a deployment on it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrt.benchmarks.deployment import Deployment, build_deployment
from fedrt.benchmarks.lan import Lan, netns_unavailable_reason


@pytest.fixture
def lan() -> Iterator[Lan]:
    """A switch and host namespaces, deleted after the test (skipped where not root)."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    network = Lan()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def deployment(lan: Lan, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """Broker, coordinator, operator and two device hosts, each its own namespace."""
    dep = build_deployment(lan, tmp_path)
    try:
        yield dep
    finally:
        # Every process goes before the namespaces it runs in (``lan`` closes after this).
        dep.stop_all()
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            sys.stderr.write(dep.logs() + "\n")
