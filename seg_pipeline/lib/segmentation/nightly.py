"""One night of segmentation, from customer features to the rows of the segment tables.

``segment_customers`` is the whole decision in one call, without Dagster, MLflow or a database:
it sweeps (or assigns to yesterday's stored segments), profiles the segments, gives them stable
ids and names, measures how well the named RFM segments and the 125 RFM cells forecast next-period
spend for comparison, and builds the scikit-learn pipeline that assigns a new customer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from seg_pipeline.lib.segmentation.features import SKEWED, transform_columns, winsorise
from seg_pipeline.lib.segmentation.forecast import forecast_power
from seg_pipeline.lib.segmentation.identity import inherit_identity
from seg_pipeline.lib.segmentation.profiles import profile_segments
from seg_pipeline.lib.segmentation.sweep import (
    NotEnoughData,
    SweepResult,
    SweepSettings,
    assign_stored,
    holdout_target,
    incumbent_of,
    prepare_spaces,
    run_sweep,
    single_segment,
)

# The pipeline's transformers are our own functions; skops loads only what it is told to trust.
SEGMENTER_TRUSTED_TYPES = [
    "seg_pipeline.lib.segmentation.features.transform_columns",
    "seg_pipeline.lib.segmentation.features.winsorise",
]


@dataclass
class SegmentationNight:
    """Tonight's segments: the decision, and the rows the segment tables are written from.

    ``segments`` has one row per customer (customer_id, segment_id, segment_name, method);
    ``profiles`` one per segment, in id order; ``centroids`` is the model kept for the next
    night (raw feature means, so tomorrow's scaler maps them into tomorrow's space).
    ``rfm_eta`` holds (η², ω²) of next-period spend for ``rfm_segment`` and ``rfm_cell``.
    """

    sweep: SweepResult
    segments: pd.DataFrame
    profiles: pd.DataFrame
    centroids: pd.DataFrame
    rfm_eta: dict[str, tuple[float, float]]
    as_of: object
    basis: str

    @cached_property
    def segmenter(self) -> Pipeline | None:
        """The registered model (``segmenter_pipeline``), built when first asked for: its fit
        runs over every customer, so the step builds it while the tables are being written."""
        return segmenter_pipeline(self.sweep, self.segments["segment_id"].to_numpy())

    @property
    def model_name(self) -> str:
        return f"{self.sweep.method} {self.sweep.param}"

    @property
    def features(self) -> tuple[str, ...]:
        return self.sweep.space.features

    def run_row(self) -> dict:
        """The ``segmentation_runs`` row: what was chosen and how well it forecasts."""
        chosen = self.sweep.chosen_row
        return {
            "as_of": self.as_of,
            "method": self.sweep.method,
            "param": str(self.sweep.param),
            "n_segments": len(self.profiles),
            "silhouette": chosen.get("silhouette"),
            "forecast_eta2": chosen.get("forecast_eta2"),
            "forecast_omega2": chosen.get("forecast_omega2"),
            "rfm_segment_eta2": self.rfm_eta.get("rfm_segment", (None, None))[0],
            "rfm_cell_eta2": self.rfm_eta.get("rfm_cell", (None, None))[0],
            "note": self.sweep.note,
        }


def segment_customers(
    current: pd.DataFrame,
    holdout: pd.DataFrame,
    previous: pd.DataFrame | None,
    settings: SweepSettings,
    *,
    as_of,
    basis: str = "revenue",
    warn=lambda message: None,
) -> SegmentationNight:
    """Segment today's customers.

    Parameters
    ----------
    current, holdout : DataFrame
        ``customer_features`` at today's cut and at the holdout cut (one row per customer,
        ``customer_id`` order; the holdout carries ``next_period_value``, ``rfm_segment`` and
        ``rfm_cell``).
    previous : DataFrame or None
        The stored model of the last run (``segment_centroids``), or None on the first night.
    settings : SweepSettings
    as_of : date
        The run's as-of date, kept with the stored model.
    basis : {"revenue", "units"}
        What ``monetary`` measures, for the descriptions.
    warn : callable
        Receives a line for each candidate that could not be fitted.
    """
    settings.validate()
    if len(current) == 0:
        raise ValueError("no customer has bought anything: nothing to segment")
    has_previous = previous is not None and len(previous) > 0
    y_hold = holdout_target(holdout)
    try:
        spaces, (identity_x, identity_scaler, _, identity_raw) = prepare_spaces(
            current, holdout, settings
        )
        if settings.refit or not has_previous:
            sweep = run_sweep(
                spaces, y_hold, len(holdout), settings, incumbent=incumbent_of(previous), warn=warn
            )
        else:
            sweep = assign_stored(current, previous, settings)
    except NotEnoughData as exc:
        warn(str(exc))
        sweep = single_segment(current, str(exc))
        space = sweep.space
        identity_x, identity_scaler, identity_raw = space.x, space.scaler, space.raw
    labels = sweep.labels

    profiles = profile_segments(current, labels, basis=basis)
    label_order = profiles["label"].to_numpy()
    today = np.vstack([identity_x[labels == label].mean(axis=0) for label in label_order])
    stored = _stored_identity(previous, identity_scaler, today.shape[1], warn)
    ids, names = inherit_identity(
        today,
        ["All customers"] if sweep.method == "single" else profiles["segment_name"].tolist(),
        stored,
        previous["segment_id"].tolist() if stored is not None else [],
        previous["segment_name"].tolist() if stored is not None else [],
        max_distance=settings.match_distance,
    )
    profiles["segment_id"], profiles["segment_name"] = ids, names
    profiles = profiles.sort_values("segment_id", key=lambda s: s.str[1:].astype(int))
    segment_of = dict(zip(profiles["label"], profiles["segment_id"], strict=True))
    name_of = dict(zip(profiles["label"], profiles["segment_name"], strict=True))

    rfm_eta = {}
    if y_hold is not None:
        for col in ("rfm_segment", "rfm_cell"):
            rfm_eta[col] = forecast_power(holdout[col].to_numpy(), y_hold)

    method = sweep.method
    segments = current[["customer_id"]].copy()
    segments["segment_id"] = [segment_of[label] for label in labels]
    segments["segment_name"] = [name_of[label] for label in labels]
    segments["method"] = method
    label_order = profiles["label"].to_numpy()
    raw = sweep.space.raw
    centroids = pd.DataFrame(
        {
            "segment_id": [segment_of[label] for label in label_order],
            "segment_name": [name_of[label] for label in label_order],
            "centroid": [list(map(float, raw[labels == lb].mean(axis=0))) for lb in label_order],
            "rfm_centroid": [
                list(map(float, identity_raw[labels == lb].mean(axis=0))) for lb in label_order
            ],
            "features": json.dumps(list(sweep.space.features)),
            "method": f"{method} {sweep.param}",
            "feature_space": sweep.space_name,
            "as_of": as_of,
        }
    )
    return SegmentationNight(
        sweep=sweep,
        segments=segments,
        profiles=profiles,
        centroids=centroids,
        rfm_eta=rfm_eta,
        as_of=as_of,
        basis=basis,
    )


def _stored_identity(previous, identity_scaler, n_features: int, warn) -> np.ndarray | None:
    """Yesterday's segments in today's identity space, or None when there are none or they
    were kept in another space (a feature that was constant then, or is now)."""
    if previous is None or len(previous) == 0:
        return None
    stored = np.vstack(previous["rfm_centroid"].map(np.asarray).to_list())
    if stored.shape[1] != n_features:
        warn("the stored segments have other features than today's: segment ids start afresh")
        return None
    return identity_scaler.transform(stored)


def segmenter_pipeline(sweep: SweepResult, segment_ids: np.ndarray) -> Pipeline | None:
    """Raw features in, segment id out: the model registered in MLflow.

    The nearest-centroid step is fitted on the customers themselves, so its centroids are the
    segments' means in the scaled space. None for a single segment, which needs no model.
    """
    if len(np.unique(segment_ids)) < 2:
        return None
    features = sweep.space.features
    return make_pipeline(
        FunctionTransformer(transform_columns, kw_args={"skewed": [f in SKEWED for f in features]}),
        sweep.space.scaler,
        FunctionTransformer(winsorise),
        NearestCentroid().fit(sweep.space.x, segment_ids),
    )
