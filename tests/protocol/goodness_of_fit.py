"""Shared by the noise tests: a chi-square fit of integer draws to an exact pmf."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats


def chi_square_p(
    samples: npt.NDArray[np.int64], pmf: npt.NDArray[np.float64], lo: int, *, width: int = 1
) -> float:
    """p-value of a chi-square fit of ``samples`` to ``pmf`` (of lo, lo + 1, ...), values
    grouped in cells of ``width`` so that wide distributions get few, full cells. Cells
    expecting fewer than 5 draws, and draws outside the support, go to one remainder cell."""
    n = samples.size
    expected = np.bincount(np.arange(pmf.size) // width, weights=pmf) * n
    inside = samples[(samples >= lo) & (samples < lo + pmf.size)]
    counts = np.bincount((inside - lo) // width, minlength=expected.size)
    keep = expected >= 5
    obs = np.append(counts[keep], n - counts[keep].sum()).astype(np.float64)
    exp = np.append(expected[keep], n - expected[keep].sum())
    if exp[-1] < 5:  # too little mass outside: fold the remainder into the largest cell
        i = int(np.argmax(exp[:-1]))
        obs[i] += obs[-1]
        exp[i] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp).pvalue)
