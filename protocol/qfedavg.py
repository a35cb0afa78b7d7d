"""q-FedAvg (Li et al. 2020, "Fair resource allocation in federated learning"), both sides.

The paper's step, with the local learning rate ``lr`` as the inverse Lipschitz estimate
(L = 1/lr) and ``F_k`` device k's loss at the round's start weights ``w``:

    dw_k    = L (w - w_k')                         (w_k' the device's locally trained weights)
    Delta_k = F_k^q dw_k
    h_k     = q F_k^(q-1) ||dw_k||^2 + L F_k^q
    w'      = w - sum_k Delta_k / sum_k h_k

With the device's delta ``d_k = w_k' - w`` and both sums scaled by ``lr`` (a factor common to
every device, which the quotient drops): ``w' = w + sum_k F_k^q d_k / sum_k b_k`` where
``b_k = F_k^q + q F_k^(q-1) ||d_k||^2 / lr``.

That is a weighted mean: each device sends ``v_k = F_k^q d_k / b_k`` with the weight ``b_k``,
and the round's weighted mean ``sum b_k v_k / sum b_k`` applied with server_lr 1 is the step.
The weight travels as the update's "example count" coordinates (``count = b_k * cap /
H_MAX``, rounded, in 1..cap), so under SecAgg+ both sums (the weighted vector and the
weights) are masked coordinates of the update vector and the server sees only the totals.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedrt.protocol.errors import ParameterError

__all__ = ["H_MAX", "LOSS_FLOOR", "WEIGHT_CAP", "device_update", "h_term", "reference_step"]

# The largest b_k a count can say; larger ones are sent as H_MAX (that device's step grows a
# little). With WEIGHT_CAP 2^22 a count resolves b_k to 1.5e-5 and fits two 16-bit digits.
H_MAX = 64.0
WEIGHT_CAP = 2**22
# A loss of exactly 0 would make F^(q-1) infinite for q < 1 (the paper's code adds 1e-10).
LOSS_FLOOR = 1e-6

Floats = npt.NDArray[np.float64]


def h_term(loss: float, delta_sq_norm: float, q: float, lr: float) -> float:
    """``b_k = F^q + q F^(q-1) ||d||^2 / lr`` (the module docstring's scaled h_k)."""
    f = max(float(loss), LOSS_FLOOR)
    return float(f**q + q * f ** (q - 1.0) * delta_sq_norm / lr)


def device_update(
    delta: npt.NDArray[np.floating], loss: float, q: float, lr: float, weight_cap: int
) -> tuple[npt.NDArray[np.float32], int]:
    """(the vector a device sends, its count) for q-FedAvg: ``count / weight_cap * H_MAX``
    is its b_k as the server will weigh it, and the vector times that is ``F^q d``."""
    if not (math.isfinite(loss) and loss >= 0 and math.isfinite(q) and q >= 0 and lr > 0):
        raise ParameterError("q-FedAvg needs a finite loss >= 0, q >= 0 and lr > 0")
    d = np.asarray(delta, dtype=np.float64)
    b = h_term(loss, float(d @ d), q, lr)
    count = min(weight_cap, max(1, round(b * weight_cap / H_MAX)))
    sent_b = count * H_MAX / weight_cap  # the weight as sent: the vector matches it exactly
    f_q = max(float(loss), LOSS_FLOOR) ** q
    return (d * (f_q / sent_b)).astype(np.float32), int(count)


def reference_step(
    weights: npt.NDArray[np.floating],
    trained: list[npt.NDArray[np.floating]],
    losses: list[float],
    q: float,
    lr: float,
) -> Floats:
    """The paper's update in its own terms (Algorithm 2, L = 1/lr), for tests."""
    w = np.asarray(weights, dtype=np.float64)
    lip = 1.0 / lr
    num = np.zeros_like(w)
    den = 0.0
    for wk, f in zip(trained, losses, strict=True):
        dw = lip * (w - np.asarray(wk, dtype=np.float64))
        f = max(f, LOSS_FLOOR)
        num += f**q * dw
        den += q * f ** (q - 1.0) * float(dw @ dw) + lip * f**q
    out: Floats = w - num / den
    return out
