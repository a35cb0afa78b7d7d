"""The fleet plays its devices' traces: offline spells cut and restore the devices' links."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from fedrt.sdk.device_state import NetworkKind
from fedrt.sdk.eligibility import EligibilityPolicy, Ineligible
from fedrt.sdk.scripted_state import ScriptedDeviceState, idle_plugged_in
from fedrt.simulation.datasets import Dataset
from fedrt.simulation.fleet import Fleet, TracedState
from fedrt.simulation.traces import DeviceTrace, Offline


class Link:
    """Stands in for a Device: records what the fleet tells it about its network."""

    def __init__(self) -> None:
        self.changes: list[bool] = []

    def network_changed(self, available: bool) -> None:
        self.changes.append(available)


def _state(offline: tuple[Offline, ...], t0: float) -> TracedState:
    trace = DeviceTrace(ScriptedDeviceState([(0.0, idle_plugged_in())]), offline)
    return TracedState(trace, t0=t0, speed=1.0, sim_start=0.0)


def test_an_offline_spell_has_no_network_and_is_not_eligible() -> None:
    state = _state((Offline(10.0, 20.0),), t0=1000.0)
    policy = EligibilityPolicy()
    before, during = state.snapshot(1005.0), state.snapshot(1015.0)
    assert before.network is NetworkKind.WIFI
    assert policy.decide(before, 1005.0).eligible
    assert during.network is NetworkKind.NONE
    decision = policy.decide(during, 1015.0)
    assert not decision.eligible
    assert Ineligible.NO_NETWORK in {r.code for r in decision.reasons}
    assert (state.online(1005.0), state.online(1015.0), state.online(1025.0)) == (
        True,
        False,
        True,
    )


def test_the_fleet_cuts_and_restores_links_as_traces_say(tmp_path: Path) -> None:
    fleet = Fleet(
        tmp_path,
        coordinator_url="http://127.0.0.1:9",
        task_id="t",
        mqtt_protocol=5,
        token_factory=lambda: "unused",
        dropout=0.0,
        rng=np.random.default_rng(0),
    )
    data = Dataset(name="tiny", x=np.zeros((1, 2), np.float32), y=np.zeros(1, np.int32), classes=2)
    now = time.time()
    # Device 0 goes offline 0.3 s from now for 0.6 s; device 1 never does.
    spells = [(Offline(0.3, 0.9),), ()]
    links = []
    for i, offline in enumerate(spells):
        sim = fleet.add(i, data, _state(offline, t0=now))
        link = Link()
        sim.device = link  # type: ignore[assignment]
        links.append(link)
    thread = threading.Thread(target=fleet._connectivity, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while len(links[0].changes) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    fleet._stop.set()
    thread.join(5.0)
    assert links[0].changes == [False, True]
    assert links[1].changes == []
    assert [d.offline_spells for d in fleet.devices] == [1, 0]
