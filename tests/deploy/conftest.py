"""Fixtures of the multi-host tests: a LAN of network namespaces and deployments on it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from fedrt.benchmarks.deployment import Deployment, build_deployment
from fedrt.benchmarks.instances_deployment import InstancesDeployment, build_instances_deployment
from fedrt.benchmarks.lan import Lan, netns_unavailable_reason
from fedrt.benchmarks.postgres import find_bin_dir
from tests.support.nats import nats_available


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


D = TypeVar("D", bound=Deployment)


@contextmanager
def _stopped_after(dep: D, request: pytest.FixtureRequest) -> Iterator[D]:
    """``dep`` for the test; then every process goes before the namespaces it runs in
    (``lan`` closes after this), with the logs shown when the test failed."""
    try:
        yield dep
    finally:
        dep.stop_all()
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            sys.stderr.write(dep.logs() + "\n")


@pytest.fixture
def deployment(lan: Lan, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """Broker, coordinator, operator and two device hosts, each its own namespace."""
    with _stopped_after(build_deployment(lan, tmp_path), request) as dep:
        yield dep


@pytest.fixture
def instances(
    lan: Lan, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[InstancesDeployment]:
    """PostgreSQL, three NATS nodes, two coordinator instances and two device hosts."""
    if not nats_available():
        pytest.skip("nats-server is not installed (apt-get install -y nats-server)")
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs the postgresql package)")
    with _stopped_after(build_instances_deployment(lan, tmp_path), request) as dep:
        yield dep
