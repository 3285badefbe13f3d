"""Customer features for clustering.

Spend, order counts and intervals are heavily right-skewed (a few customers place hundreds of
orders), and K-Means on raw values just isolates those few. Skewed features get a signed log, then
every feature is scaled (robust scaling by default, so outliers do not set the scale). Constant
columns carry no information and are dropped rather than divided by zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.preprocessing import RobustScaler, StandardScaler

RFM_FEATURES = ("recency_days", "frequency", "monetary")
BEHAVIOUR_FEATURES = RFM_FEATURES + (
    "tenure_days",
    "avg_order_value",
    "interpurchase_days_filled",
    "return_rate",
    "n_categories",
    "top_category_share",
    "activity_trend",
)
SKEWED = {
    "recency_days",
    "frequency",
    "monetary",
    "tenure_days",
    "avg_order_value",
    "interpurchase_days_filled",
    "n_categories",
    "activity_trend",
}


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: a log that keeps net-negative spend (more returns) ordered."""
    values = np.asarray(values, dtype=float)
    return np.sign(values) * np.log1p(np.abs(values))


def feature_matrix(frame: pd.DataFrame, features: tuple[str, ...] = RFM_FEATURES) -> np.ndarray:
    """The transformed (not yet scaled) feature matrix, one row per customer.

    Raises
    ------
    ValueError
        If a feature column is missing or contains NaN.
    """
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise ValueError(f"feature frame lacks column(s) {missing}")
    # A copy: pandas may hand out a read-only view, and the logs below are taken in place.
    raw = frame[list(features)].to_numpy(dtype=float, copy=True)
    if np.isnan(raw).any():
        bad = [f for f, col in zip(features, raw.T, strict=True) if np.isnan(col).any()]
        raise ValueError(f"features contain NaN in {bad}")
    skewed = np.array([f in SKEWED for f in features])
    raw[:, skewed] = signed_log1p(raw[:, skewed])
    return raw


def informative(x: np.ndarray) -> np.ndarray:
    """Boolean mask of columns that are not constant."""
    return np.ptp(x, axis=0) > 1e-12


def scale(features: np.ndarray, method: str = "standard") -> tuple[np.ndarray, object]:
    """Scale features with ``standard`` or ``robust`` scaling; returns (scaled, fitted scaler)."""
    scaler = {"standard": StandardScaler, "robust": RobustScaler}[method]().fit(features)
    return scaler.transform(features), scaler


def transform_columns(x: np.ndarray, skewed: list[bool]) -> np.ndarray:
    """Apply the signed log to the ``skewed`` columns; a picklable step for a saved model."""
    x = np.array(x, dtype=float, copy=True)
    mask = np.asarray(skewed, dtype=bool)
    x[:, mask] = signed_log1p(x[:, mask])
    return x


FEATURE_SETS = {"rfm": RFM_FEATURES, "behaviour": BEHAVIOUR_FEATURES}
# Scaled values are winsorised at ±CLIP: without it a handful of extreme customers (one with
# hundreds of orders, one who returned everything) form segments of their own and inflate the
# silhouette while telling a marketer nothing.
CLIP = 3.0


class NotEnoughData(ValueError):
    """The customers cannot support a sweep (too few, or all alike); one segment holds them."""


def prepare(
    frame: pd.DataFrame, features: tuple[str, ...], scaling: str = "robust", scaler=None
) -> tuple[np.ndarray, object, tuple[str, ...], np.ndarray]:
    """Transform, drop constant columns, scale and winsorise.

    Returns the clustering matrix, the scaler, the features kept and the transformed (unscaled)
    values of those features. Pass a fitted ``scaler`` (with its features) to reuse it. Raises
    ``NotEnoughData`` when every feature is constant (nothing to cluster on).
    """
    raw = feature_matrix(frame, features)
    if scaler is None:
        keep = informative(raw)
        if not keep.any():
            raise NotEnoughData(
                f"all {len(frame)} customers have the same features: one segment holds them"
            )
        features = tuple(f for f, k in zip(features, keep, strict=True) if k)
        raw = raw[:, keep]
        scaled, scaler = scale(raw, scaling)
    else:
        scaled = scaler.transform(raw)
    return np.clip(scaled, -CLIP, CLIP), scaler, features, raw


def winsorise(x: np.ndarray) -> np.ndarray:
    """Clip scaled features to ±CLIP; the last transform step of a saved segmenter."""
    return np.clip(x, -CLIP, CLIP)
