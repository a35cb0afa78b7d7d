"""Fixtures for every integration test: real Mosquitto brokers and managed processes."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from tests.support.brokers import SecureBroker, start_anonymous, start_secure
from tests.support.process import ManagedProcess


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after every test, so a leaked socket or file is blamed on the test that
    leaked it (as an unraisable-exception warning), not on whichever test runs later."""
    yield
    gc.collect()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def mosquitto(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MosquittoBroker]:
    """A fresh anonymous Mosquitto on a free loopback port."""
    broker = start_anonymous(tmp_path / "mosquitto")
    yield broker
    broker.stop()
    if _failed(request):
        sys.stderr.write(f"--- mosquitto log ({broker.log_path}) ---\n{broker.logs()}\n")


@pytest.fixture
def mosquitto_secure(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SecureBroker]:
    """Mosquitto with a password file, an ACL file and a TLS listener (own CA)."""
    secure = start_secure(tmp_path / "mosquitto-secure")
    yield secure
    secure.broker.stop()
    if _failed(request):
        sys.stderr.write(f"--- mosquitto log ---\n{secure.broker.logs()}\n")


SpawnFn = Callable[..., ManagedProcess]


@pytest.fixture
def spawn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SpawnFn]:
    """Start processes whose logs are kept (and shown) when the test fails; all stopped after."""
    started: list[ManagedProcess] = []

    def start(argv: Sequence[str], *, name: str, **kwargs: object) -> ManagedProcess:
        proc = ManagedProcess(argv, log_path=tmp_path / "logs" / f"{name}.log", **kwargs)  # type: ignore[arg-type]
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()
    if _failed(request):
        for proc in started:
            sys.stderr.write(f"--- {proc.log_path} ---\n{proc.log_tail()}\n")
