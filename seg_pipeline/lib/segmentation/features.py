"""Customer features for clustering.

RFM values are heavily right-skewed (a few customers place hundreds of orders), and K-Means on raw
values just isolates those few. A signed log followed by standard scaling gives clusters that
reflect the bulk of the customer base.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

RFM_FEATURES = ("recency_days", "frequency", "monetary")


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: a log that keeps net-negative spend (more returns) ordered."""
    values = np.asarray(values, dtype=float)
    return np.sign(values) * np.log1p(np.abs(values))


def rfm_matrix(rfm: pd.DataFrame) -> np.ndarray:
    """Return the log-transformed RFM matrix (n_customers × 3), before scaling.

    Raises
    ------
    ValueError
        If a feature column is missing or contains NaN.
    """
    missing = [c for c in RFM_FEATURES if c not in rfm.columns]
    if missing:
        raise ValueError(f"RFM frame lacks column(s) {missing}")
    raw = rfm[list(RFM_FEATURES)].to_numpy(dtype=float)
    if np.isnan(raw).any():
        raise ValueError("RFM features contain NaN; customer_rfm should never produce them")
    return signed_log1p(raw)


def scale(features: np.ndarray) -> tuple[np.ndarray, StandardScaler]:
    """Standard-scale the features; constant columns are left at zero rather than divided by 0."""
    scaler = StandardScaler().fit(features)
    return scaler.transform(features), scaler
