"""The segments kept between refits, and the rule that decides when to refit them.

A segment is only useful to a marketer if it stays put while its customers do. Refitting every
night moved a fifth of Online Retail's customers to another segment overnight on the same events:
the sample, the scaler (fitted on each night's customers) and the clustering's local optimum all
shift a little, and every shift moves the customers near a boundary. So the night keeps the
stored model, with the scaler it was fitted with, and refits only when one of these holds
(``refit_reason``):

* there is no usable stored model (first night, other features, a work file from before the
  scaler was stored), or tonight re-runs the night it was fitted;
* it is older than ``refit_after_days``;
* at least ``refit_changed_share`` of today's customers bought since it was fitted (new customers
  included): the population it was fitted on has changed;
* its forecast power (omega squared of next-period spend on tonight's holdout) fell below what
  it had when it was fitted by more than ``change_margin`` and by more than twice the standard
  error of that figure (``forecast_noise``): the segments stopped telling the marketer what
  customers do next. The standard error matters on small shops, where moving the holdout cut by
  one day moved a 400-customer shop's figure by 0.03 with no change in the customers.

Between refits a customer's segment changes only when their own features cross a boundary of the
stored model: after a purchase, or when the passing days carry their recency (and what follows
from it) across. A customer who bought nothing since the last night moves to another cluster only
when it is nearer by more than ``keep_margin`` (``StoredModel.keep_quiet``); a tree's rules are
exact boundaries.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.preprocessing import RobustScaler, StandardScaler

from seg_pipeline.lib.segmentation.features import CLIP, feature_matrix
from seg_pipeline.lib.segmentation.forecast import forecast_power
from seg_pipeline.lib.segmentation.selection import nearest_centroid
from seg_pipeline.lib.segmentation.tree import apply_rules

SCALERS = {"robust": RobustScaler, "standard": StandardScaler}


def scaler_state(scaler) -> tuple[str, list[float], list[float]]:
    """(kind, centre, scale) of a fitted scaler: what is stored to scale tomorrow's customers
    exactly as tonight's."""
    if isinstance(scaler, RobustScaler):
        return "robust", list(map(float, scaler.center_)), list(map(float, scaler.scale_))
    return "standard", list(map(float, scaler.mean_)), list(map(float, scaler.scale_))


def restore_scaler(kind: str, center, scale):
    """A fitted scikit-learn scaler from ``scaler_state``'s values."""
    center, scale = np.asarray(center, dtype=float), np.asarray(scale, dtype=float)
    scaler = SCALERS[kind]()
    if kind == "robust":
        scaler.center_, scaler.scale_ = center, scale
    else:
        scaler.mean_, scaler.scale_, scaler.var_ = center, scale, scale**2
        scaler.n_samples_seen_ = 1
    scaler.n_features_in_ = len(center)
    return scaler


@dataclass
class StoredModel:
    """The segments of the last refit, as ``segment_centroids`` holds them."""

    features: tuple[str, ...]
    raw_centroids: np.ndarray
    scaler: object
    ids: list[str]
    names: list[str]
    method: str
    space_name: str
    fitted_as_of: dt.date
    fitted_omega2: float | None
    rules: list | None = None  # a tree's rules, one per segment; None: nearest centroid

    @classmethod
    def from_frame(cls, previous: pd.DataFrame | None) -> StoredModel | None:
        """The stored model, or None when there is none or it lacks what assignment needs
        (a work file written before the scaler and the fit date were kept)."""
        needed = {"scaling", "scaler_center", "scaler_scale", "fitted_as_of"}
        if previous is None or len(previous) == 0 or not needed <= set(previous.columns):
            return None
        first = previous.iloc[0]
        if first["scaler_center"] is None or pd.isna(first["fitted_as_of"]):
            return None
        omega = first.get("fitted_forecast_omega2")
        rules = None
        if "rule" in previous and previous["rule"].notna().all():
            rules = [[tuple(c) for c in json.loads(rule)] for rule in previous["rule"]]
        return cls(
            features=tuple(json.loads(first["features"])),
            raw_centroids=np.vstack(previous["centroid"].map(np.asarray).to_list()),
            scaler=restore_scaler(first["scaling"], first["scaler_center"], first["scaler_scale"]),
            ids=previous["segment_id"].tolist(),
            names=previous["segment_name"].tolist(),
            method=str(first["method"]),
            space_name=str(first.get("feature_space", "stored")),
            fitted_as_of=pd.Timestamp(first["fitted_as_of"]).date(),
            fitted_omega2=None if omega is None or pd.isna(omega) else float(omega),
            rules=rules,
        )

    @property
    def centroids(self) -> np.ndarray:
        """The centroids in the stored scaled space."""
        return np.clip(self.scaler.transform(self.raw_centroids), -CLIP, CLIP)

    def scaled(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(scaled, raw) features of ``frame``'s customers, scaled as on the fit night."""
        raw = feature_matrix(frame, self.features)
        return np.clip(self.scaler.transform(raw), -CLIP, CLIP), raw

    def assign(self, frame: pd.DataFrame) -> np.ndarray:
        """Each customer's position in the stored segments (an index into ``ids``): by the
        tree's rules, or the nearest centroid (also for a customer in a leaf that had nobody
        when the model was kept)."""
        if self.rules is None:
            return nearest_centroid(self.scaled(frame)[0], self.centroids)
        labels = apply_rules(frame, self.rules, strict=False)
        lost = labels < 0
        if lost.any():
            labels[lost] = nearest_centroid(self.scaled(frame[lost])[0], self.centroids)
        return labels

    def keep_quiet(
        self,
        frame: pd.DataFrame,
        labels: np.ndarray,
        before: np.ndarray,
        quiet: np.ndarray,
        margin: float,
    ) -> np.ndarray:
        """``labels``, with each quiet customer (no purchase since the last night) kept in their
        previous segment (``before``, -1 for none) unless the new one is nearer by more than
        ``margin`` (scaled units): hysteresis, so that a day's recency does not carry a
        customer back and forth across a centroid boundary. A tree's rules are exact
        boundaries and keep no one.
        """
        if self.rules is not None or margin <= 0:
            return labels
        moved = np.flatnonzero(quiet & (before >= 0) & (before != labels))
        if not len(moved):
            return labels
        x = self.scaled(frame.iloc[moved])[0]
        centroids = self.centroids
        gain = np.linalg.norm(x - centroids[before[moved]], axis=1) - np.linalg.norm(
            x - centroids[labels[moved]], axis=1
        )
        out = labels.copy()
        kept = moved[gain <= margin]
        out[kept] = before[kept]
        return out

    def forecast_omega2(self, holdout: pd.DataFrame, y_hold: np.ndarray | None) -> float | None:
        """Omega squared of next-period spend across the stored segments on the holdout."""
        if y_hold is None or len(holdout) <= len(self.ids):
            return None
        return forecast_power(self.assign(holdout), y_hold)[1]


def forecast_noise(share: float, n: int, k: int) -> float:
    """Standard error of a share of variance explained by ``k`` groups of ``n`` customers (the
    large-sample formula for R squared, Olkin and Finn 1995)."""
    share = min(max(share, 0.0), 1.0)
    if n <= k + 1:
        return float("inf")
    return float(np.sqrt(4 * share * (1 - share) ** 2 * (n - k - 1) ** 2 / ((n**2 - 1) * (n + 3))))


def refit_reason(
    stored: StoredModel | None,
    current: pd.DataFrame,
    holdout: pd.DataFrame,
    y_hold: np.ndarray | None,
    as_of,
    *,
    refit_after_days: int,
    refit_changed_share: float,
    change_margin: float,
) -> str | None:
    """Why tonight refits (see the module docstring), or None to keep the stored model."""
    if stored is None:
        return "no stored segments to keep"
    missing = sorted(set(stored.features) - set(current.columns))
    if missing:
        return f"the stored segments use features the data no longer has: {missing}"
    if as_of is None:
        return "the run has no as-of date to age the stored segments by"
    age = (pd.Timestamp(as_of).date() - stored.fitted_as_of).days
    if age < 0:
        return f"the stored segments were fitted after tonight's as-of date ({stored.fitted_as_of})"
    if age == 0:
        # Same data, same seeds: the same segments, and a re-run gives the same tables.
        return "a re-run of the night the stored segments were fitted"
    if age >= refit_after_days:
        return f"the stored segments are {age} days old (refit after {refit_after_days})"
    # A purchase on the fit night's as-of date was after its cut (recency counts from as-of).
    changed = float((current["recency_days"].to_numpy() <= age).mean()) if age else 0.0
    if changed >= refit_changed_share:
        return (
            f"{changed:.0%} of customers bought since the segments were fitted "
            f"(refit from {refit_changed_share:.0%})"
        )
    omega = stored.forecast_omega2(holdout, y_hold)
    fitted = stored.fitted_omega2
    if fitted is not None and omega is not None:
        allowed = max(change_margin, 2 * forecast_noise(fitted, len(holdout), len(stored.ids)))
        if fitted - omega > allowed:
            return (
                f"the stored segments' forecast power fell from {fitted:.3f} to {omega:.3f} "
                f"(more than {allowed:.3f})"
            )
    return None
