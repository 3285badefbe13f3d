"""How well segments forecast what customers do next.

eta squared is the share of the variance of a target (here next-period log spend) explained by
the segment means: 1 - SS_within / SS_total. It always grows with the number of groups, which
would flatter the 125 RFM cells, so model selection uses omega squared, which subtracts the
variance that k groups would explain by chance:
(SS_between - (k - 1) MS_within) / (SS_total + MS_within).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _sums(labels: np.ndarray, y: np.ndarray) -> tuple[float, float, int, int]:
    # factorize hashes; np.unique would sort a million segment-name strings (seconds at scale).
    inverse, codes = pd.factorize(np.asarray(labels), use_na_sentinel=False)
    y = np.asarray(y, dtype=float)
    counts = np.bincount(inverse)
    means = np.bincount(inverse, weights=y) / counts
    total = float(((y - y.mean()) ** 2).sum())
    within = float(((y - means[inverse]) ** 2).sum())
    return total, within, len(codes), len(y)


def forecast_power(labels: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """eta squared and omega squared of ``y`` across ``labels``, from one pass over the data."""
    total, within, k, n = _sums(labels, y)
    eta = 1.0 - within / total if total > 0 else 0.0
    if total <= 0 or n <= k:
        return eta, 0.0
    ms_within = within / (n - k)
    return eta, (total - within - (k - 1) * ms_within) / (total + ms_within)


def log_target(values: np.ndarray) -> np.ndarray:
    """Next-period spend on a signed log scale, so a few big spenders do not dominate."""
    values = np.asarray(values, dtype=float)
    return np.sign(values) * np.log1p(np.abs(values))
