"""DeviceHub: many devices' events on one thread, in order per device, with wake-ups on time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fedrt.sdk.device_hub import DeviceHub
from fedrt.sdk.errors import SdkConfigError
from tests.sdk.transport_support import TIMEOUT, eventually


class Member:
    """Records the hub's calls; asks to be woken ``wake_in`` seconds after each move."""

    def __init__(self, wake_in: float = 60.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.threads: set[int] = set()
        self.wake_in = wake_in
        self.fail_on = fail_on
        self.ticks = threading.Event()

    def _record(self, kind: str, value: Any = None) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append((kind, value))
        if kind == self.fail_on:
            raise RuntimeError(f"{kind} failed")

    def _begin(self) -> None:
        self._record("begin")

    def _step(self, kind: str, value: Any) -> None:
        self._record(kind, value)
        if kind == "tick":
            self.ticks.set()

    def _end(self) -> None:
        self._record("end")

    def _wake_at(self) -> float:
        return time.time() + self.wake_in


@pytest.fixture
def hub() -> Iterator[DeviceHub]:
    h = DeviceHub()
    h.start()
    yield h
    h.stop()


def test_events_reach_each_device_in_order_on_one_thread(hub: DeviceHub) -> None:
    members = [Member() for _ in range(20)]
    for m in members:
        hub.add(m)
    for i in range(50):
        for m in members:
            hub.post(m, "inbox", i)
    for m in members:
        assert hub.remove(m, TIMEOUT)
    threads = set().union(*(m.threads for m in members))
    assert len(threads) == 1
    assert threading.get_ident() not in threads
    for m in members:
        assert m.calls == [("begin", None), *[("inbox", i) for i in range(50)], ("end", None)]
    assert hub.members == 0


def test_a_device_is_woken_when_it_asked_and_not_before(hub: DeviceHub) -> None:
    soon, later = Member(wake_in=0.2), Member(wake_in=3600.0)
    hub.add(soon)
    hub.add(later)
    assert soon.ticks.wait(TIMEOUT)
    assert not later.ticks.is_set()
    # Each move re-arms the wake-up: the fast one keeps ticking.
    assert eventually(lambda: sum(k == "tick" for k, _ in soon.calls) >= 3)
    assert [k for k, _ in later.calls] == ["begin"]


def test_one_failing_device_does_not_stop_the_others(hub: DeviceHub) -> None:
    bad, good = Member(fail_on="inbox"), Member()
    hub.add(bad)
    hub.add(good)
    hub.post(bad, "inbox", 1)
    hub.post(good, "inbox", 2)
    assert eventually(lambda: ("inbox", 2) in good.calls)
    hub.post(bad, "inbox", 3)
    assert eventually(lambda: ("inbox", 3) in bad.calls)


def test_events_after_removal_are_dropped(hub: DeviceHub) -> None:
    m = Member()
    hub.add(m)
    assert hub.remove(m, TIMEOUT)
    hub.post(m, "inbox", "late")
    witness = Member()
    hub.add(witness)
    assert hub.remove(witness, TIMEOUT)  # the hub has handled everything posted before
    assert ("inbox", "late") not in m.calls


def test_adding_to_a_hub_that_is_not_running_is_refused() -> None:
    with pytest.raises(SdkConfigError):
        DeviceHub().add(Member())
