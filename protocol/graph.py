"""The SecAgg+ neighbour graph and the choice of its degree k and threshold t.

The graph is a Harary graph H(k, n) on a random ring order (Bell et al. 2020): a device at
ring position p neighbours positions p +- 1 .. p +- k // 2, plus p + n / 2 when k is odd (then
n must be even). It is k-regular and k-connected, and k = n - 1 gives the complete graph of
classic SecAgg. The ring order comes from a seed, so every party derives the same graph.

Each device shares its two secrets with its k neighbours and itself (k + 1 holders, as in
classic SecAgg, so exactly t survivors suffice there). ``choose_parameters`` picks the
smallest k with a threshold t such that
  * 2t > k + 1 + c for the c corrupted neighbours a device may have: an honest holder reveals
    one share per peer and a device never reveals its own key share, so the server cannot
    gather t shares of both secrets of one device (t seed shares need t - 1 neighbours, t
    key shares t more);
  * n * P[Binomial(k, 1 - dropout) < t] <= 2**failure_log2: every device keeps t live
    neighbours, not counting itself (union bound over devices, dropouts independent);
  * n * P[Binomial(k, corrupt) >= 2t - k - 1] <= 2**security_log2 (only when corrupt > 0);
  * the honest live devices stay connected, else the server learns the sum of a smaller
    component: k >= 2, and cutting the ring takes two runs of k/2 consecutive removed
    positions, so n**2 * (dropout + corrupt)**k <= 2**security_log2.
"""

from __future__ import annotations

import hashlib
from math import comb, log2

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import ParameterError
from fedrt.protocol.prg import keystream

__all__ = [
    "choose_parameters",
    "neighbor_graph",
    "neighbors_of",
    "round_failure_log2",
    "validate_parameters",
]

Graph = tuple[tuple[int, ...], ...]
Ints = npt.NDArray[np.int64]


def validate_parameters(clients: int, neighbors: int, threshold: int) -> None:
    """Raise ``ParameterError`` unless (n, k, t) make a valid SecAgg+ graph and threshold."""
    if clients < 2:
        raise ParameterError(f"need at least 2 clients, got {clients}")
    if not 1 <= neighbors <= clients - 1:
        raise ParameterError(f"neighbors must be in 1..{clients - 1}, got {neighbors}")
    if neighbors % 2 and clients % 2:
        raise ParameterError("no k-regular graph has odd k and an odd number of clients")
    if not neighbors + 1 < 2 * threshold <= 2 * (neighbors + 1):
        raise ParameterError(
            f"threshold must satisfy (k+1)/2 < t <= k+1 (k={neighbors}), got {threshold}"
        )


def _ring(clients: int, neighbors: int, seed: bytes) -> tuple[Ints, Ints, list[int]]:
    if clients < 2 or not 1 <= neighbors <= clients - 1 or (neighbors % 2 and clients % 2):
        raise ParameterError(f"no {neighbors}-regular graph on {clients} devices")
    key = hashlib.sha256(b"fedrt/secagg/graph/v1\x00" + seed).digest()
    sort_keys = np.frombuffer(keystream(key, 8 * clients), dtype="<u8")
    ring = np.argsort(sort_keys, kind="stable").astype(np.int64)
    position = np.empty(clients, dtype=np.int64)
    position[ring] = np.arange(clients)
    offsets = [d for d in range(1, neighbors // 2 + 1)] + [-d for d in range(1, neighbors // 2 + 1)]
    if neighbors % 2:
        offsets.append(clients // 2)
    return ring, position, offsets


def neighbor_graph(clients: int, neighbors: int, seed: bytes) -> Graph:
    """Neighbours of every device (sorted tuples) in the seeded random Harary graph."""
    ring, position, offsets = _ring(clients, neighbors, seed)
    table = np.sort(ring[(position[:, None] + np.asarray(offsets)) % clients], axis=1)
    return tuple(tuple(row) for row in table.tolist())


def neighbors_of(clients: int, neighbors: int, seed: bytes, index: int) -> tuple[int, ...]:
    """One device's row of ``neighbor_graph`` (a device needs only its own)."""
    if not 0 <= index < clients:
        raise ParameterError(f"device {index} is not in 0..{clients - 1}")
    ring, position, offsets = _ring(clients, neighbors, seed)
    return tuple(sorted(int(ring[(position[index] + d) % clients]) for d in offsets))


def _binomial_below(trials: int, p: float, bound: int) -> float:
    """P[Binomial(trials, p) < bound]."""
    return sum(comb(trials, s) * p**s * (1 - p) ** (trials - s) for s in range(max(bound, 0)))


def round_failure_log2(clients: int, neighbors: int, threshold: int, dropout: float) -> float:
    """log2 of the union bound on a round failing because some device keeps < t neighbours."""
    bound = clients * _binomial_below(neighbors, 1.0 - dropout, threshold)
    return log2(bound) if bound > 0 else float("-inf")


def choose_parameters(
    clients: int,
    *,
    dropout: float = 0.1,
    failure_log2: float = -20.0,
    corrupt: float = 0.0,
    security_log2: float = -40.0,
) -> tuple[int, int]:
    """The smallest (k, t) meeting the bounds in the module docstring; k = n - 1 at most.

    When even the complete graph misses the failure target, it returns classic SecAgg with
    the smallest allowed threshold, which is the most dropout-tolerant choice there is.
    """
    if clients < 2:
        raise ParameterError(f"need at least 2 clients, got {clients}")
    if not (0.0 <= dropout < 1.0 and 0.0 <= corrupt < 1.0 and dropout + corrupt < 1.0):
        raise ParameterError("dropout and corrupt must be fractions in [0, 1)")
    removed = dropout + corrupt
    for k in range(1 if clients == 2 else 2, clients):
        if k % 2 and clients % 2:
            continue
        if k < clients - 1 and clients**2 * removed**k > 2.0**security_log2:
            continue
        for t in range((k + 1) // 2 + 1, k + 2):
            margin = 2 * t - k - 1  # corrupted neighbours tolerated: c < 2t - k - 1
            insecure = clients * (1.0 - _binomial_below(k, corrupt, margin)) if corrupt else 0.0
            if insecure > 2.0**security_log2:
                continue
            if round_failure_log2(clients, k, t, dropout) <= failure_log2:
                return k, t
    k = clients - 1
    return k, (k + 1) // 2 + 1
