"""The consistency check as a property: whatever two survivor sets a server shows to whom,
honest devices reveal shares under at most one of them."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedrt.protocol import codec
from fedrt.protocol.errors import ConsistencyCheckFailed, ConsistencyError, RoundAborted
from fedrt.protocol.messages import ConsistencyCheck, ConsistencyRequest, UnmaskShares
from tests.protocol.secagg_support import Round


@st.composite
def splits(draw: st.DrawFn) -> tuple[int, int, int, int, list[bool]]:
    n = draw(st.integers(4, 12))
    k = draw(st.sampled_from([k for k in range(2, n) if not (k % 2 and n % 2)]))
    t = draw(st.integers((k + 1) // 2 + 1, k + 1))
    victim = draw(st.integers(0, n - 1))
    in_first = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return n, k, t, victim, in_first


@settings(deadline=None, max_examples=25)
@given(splits())
@example((6, 5, 4, 0, [True] * 6))  # one view for all: it must pass
@example((12, 5, 4, 11, [True] * 6 + [False] * 6))
def test_two_survivor_sets_are_never_both_certified(
    case: tuple[int, int, int, int, list[bool]],
) -> None:
    n, k, t, victim, in_first = case
    r = Round.new(n, threshold=t, neighbors=k)
    outgoing = r.step(r.advertise())
    for i, data in outgoing.items():  # the honest relay: every device sends its masked input
        assert r.clients[i].receive(data) is not None
    everyone = tuple(range(n))
    # The victim is "included" for the first group and "dropped" for the second.
    views = {True: everyone, False: tuple(i for i in everyone if i != victim)}
    in_first[victim] = True  # a device is only ever asked about a set that includes it
    checks: dict[bool, dict[int, ConsistencyCheck]] = {True: {}, False: {}}
    for i in everyone:
        group = in_first[i]
        request = ConsistencyRequest(
            round_id=r.config.round_id, recipient=i, survivors=views[group]
        )
        try:
            reply = codec.decode(r.clients[i].receive(codec.encode(request)) or b"")
        except (ConsistencyError, RoundAborted):
            continue  # too few holders left in its view: it refuses to sign
        assert isinstance(reply, ConsistencyCheck)
        checks[group][i] = reply
    revealed = set()
    for group in (True, False):
        for i in checks[group]:
            data = r.unmask_request(i, views[group], checks[group])
            try:
                reply = codec.decode(r.clients[i].receive(data) or b"")
            except ConsistencyCheckFailed:
                continue
            assert isinstance(reply, UnmaskShares)
            revealed.add(group)
    assert len(revealed) <= 1
    if all(in_first):
        assert revealed == {True}
