"""One night of segmentation, from customer features to the rows of the segment tables.

``segment_customers`` is the whole decision in one call, without Dagster, MLflow or a database:
it refits when ``stored.refit_reason`` says so and otherwise assigns today's customers to the
stored segments, profiles the segments (with what their customers did next), gives them stable
ids and names and every customer a reason, measures how well the named RFM segments and the 125
RFM cells forecast next-period spend for comparison and how many quiet customers kept their
segment, and builds the model that assigns a new customer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from seg_pipeline.lib.segmentation.features import SKEWED, transform_columns, winsorise
from seg_pipeline.lib.segmentation.forecast import forecast_power
from seg_pipeline.lib.segmentation.identity import inherit_identity
from seg_pipeline.lib.segmentation.profiles import descriptions, profile_segments
from seg_pipeline.lib.segmentation.reasons import centroid_reasons, rule_reasons
from seg_pipeline.lib.segmentation.stability import membership_stability
from seg_pipeline.lib.segmentation.stored import StoredModel, refit_reason, scaler_state
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
from seg_pipeline.lib.segmentation.tree import RuleSegmenter, describe, rule_name
from seg_pipeline.lib.segmentation.value import horizon_days

# The pipeline's transformers are our own functions; skops loads only what it is told to trust.
SEGMENTER_TRUSTED_TYPES = [
    "seg_pipeline.lib.segmentation.features.transform_columns",
    "seg_pipeline.lib.segmentation.features.winsorise",
    "seg_pipeline.lib.segmentation.tree.RuleSegmenter",
]


@dataclass
class SegmentationNight:
    """Tonight's segments: the decision, and the rows the segment tables are written from.

    ``segments`` has one row per customer (customer_id, segment_id, segment_name, method);
    ``profiles`` one per segment, in id order; ``centroids`` is the model kept for the next
    nights (``stored.StoredModel``: the assigning centroids in raw feature units, the scaler and
    the fit date).
    ``rfm_eta`` holds (η², ω²) of next-period spend for ``rfm_segment`` and ``rfm_cell``.
    """

    sweep: SweepResult
    segments: pd.DataFrame
    profiles: pd.DataFrame
    centroids: pd.DataFrame
    rfm_eta: dict[str, tuple[float, float]]
    as_of: object
    basis: str
    stability: dict = field(default_factory=dict)
    population: int | None = None  # customers segmented, when ``segments`` holds a sample

    @property
    def n_customers(self) -> int:
        return len(self.segments) if self.population is None else self.population

    @cached_property
    def segmenter(self) -> Pipeline | None:
        """The registered model (``segmenter_pipeline``)."""
        return segmenter_pipeline(
            self.sweep, dict(zip(self.profiles["label"], self.profiles["segment_id"], strict=True))
        )

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
            "rfm_segment_omega2": self.rfm_eta.get("rfm_segment", (None, None))[1],
            "rfm_cell_omega2": self.rfm_eta.get("rfm_cell", (None, None))[1],
            "note": self.sweep.note,
            "refit": self.sweep.method != "assigned",
            "decision": self.sweep.decision,
            "fitted_as_of": self.centroids["fitted_as_of"].iloc[0],
            **self.kept_shares,
        }

    @property
    def kept_shares(self) -> dict[str, float]:
        """``segment_kept_day``, ``rfm_segment_kept_day`` (and ``_week``): the shares of quiet
        customers who kept their segment, for each lag with a snapshot."""
        return {
            f"{kind}_kept_{lag}": figures[kind]
            for lag, figures in self.stability.items()
            for kind in ("segment", "rfm_segment")
        }


def segment_customers(
    current: pd.DataFrame,
    holdout: pd.DataFrame,
    previous: pd.DataFrame | None,
    settings: SweepSettings,
    *,
    as_of,
    basis: str = "revenue",
    history: pd.DataFrame | None = None,
    last_night: tuple[pd.DataFrame, object] | None = None,
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
    history : DataFrame, optional
        Earlier ``segment_history`` snapshots, for the membership stability of quiet customers
        (``stability.membership_stability``).
    last_night : (DataFrame, date), optional
        The last run's ``customer_segments`` (customer_id, segment_id) and its as-of date: between
        refits, customers who bought nothing since keep that segment unless they moved clearly
        (``settings.keep_margin``).
    warn : callable
        Receives a line for each candidate that could not be fitted.
    """
    settings.validate()
    if len(current) == 0:
        raise ValueError("no customer has bought anything: nothing to segment")
    y_hold = holdout_target(holdout)
    stored = StoredModel.from_frame(previous)
    reason = refit_reason(
        stored,
        current,
        holdout,
        y_hold,
        as_of,
        refit_after_days=settings.refit_after_days,
        refit_changed_share=settings.refit_changed_share,
        change_margin=settings.change_margin,
    )
    if stored is not None and reason is not None and not settings.refit:
        warn(f"refits are off: keeping the stored segments although {reason}")
        reason = None
    try:
        spaces, (identity_x, identity_scaler, _, identity_raw) = prepare_spaces(
            current, holdout, settings, sweep=reason is not None
        )
        if reason is None:
            sweep = assign_stored(
                current,
                holdout,
                y_hold,
                stored,
                _kept_because(stored, as_of),
                **_last_positions(stored, current, last_night, as_of),
                keep_margin=settings.keep_margin,
            )
        else:
            sweep = run_sweep(
                spaces, y_hold, len(holdout), settings, incumbent=incumbent_of(previous), warn=warn
            )
            sweep.refit = reason
    except NotEnoughData as exc:
        warn(str(exc))
        sweep = single_segment(current, str(exc))
        space = sweep.space
        identity_x, identity_scaler, identity_raw = space.x, space.scaler, space.raw
    labels = sweep.labels
    model = stored if sweep.method == "assigned" else _fitted_model(sweep, as_of, holdout, y_hold)
    outcomes = _outcomes(model, holdout, labels)
    profiles = profile_segments(
        current, labels, basis=basis, outcomes=outcomes, horizon_days=horizon_days(current, holdout)
    )
    label_order = profiles["label"].to_numpy()
    rules = {lb: model.rules[lb] for lb in label_order} if model.rules is not None else None
    if sweep.method == "assigned":
        # Between refits a segment is the stored one: it keeps its id and name.
        ids = [stored.ids[label] for label in label_order]
        names = [stored.names[label] for label in label_order]
    else:
        derived = profiles["segment_name"].tolist()
        if sweep.method == "single":
            derived = ["All customers"]
        elif rules is not None:
            derived = [rule_name(rules[lb]) for lb in label_order]
        today = np.vstack([identity_x[labels == label].mean(axis=0) for label in label_order])
        kept = _stored_identity(previous, identity_scaler, today.shape[1], warn)
        ids, names = inherit_identity(
            today,
            derived,
            kept,
            previous["segment_id"].tolist() if kept is not None else [],
            previous["segment_name"].tolist() if kept is not None else [],
            max_distance=settings.match_distance,
        )
    profiles["segment_id"], profiles["segment_name"] = ids, names
    profiles["rule"] = None
    if rules is not None:
        profiles["rule"] = [describe(rules[lb]) for lb in label_order]
        profiles["description"] = descriptions(profiles, basis, horizon_days(current, holdout))
    profiles = profiles.sort_values("segment_id", key=lambda s: s.str[1:].astype(int))
    segment_of = dict(zip(profiles["label"], profiles["segment_id"], strict=True))
    name_of = dict(zip(profiles["label"], profiles["segment_name"], strict=True))

    rfm_eta = {}
    if y_hold is not None:
        for col in ("rfm_segment", "rfm_cell"):
            rfm_eta[col] = forecast_power(holdout[col].to_numpy(), y_hold)

    segments = current[["customer_id"]].copy()
    segments["segment_id"] = [segment_of[label] for label in labels]
    segments["segment_name"] = [name_of[label] for label in labels]
    segments["method"] = sweep.method
    if rules is not None:
        segments["reason"] = rule_reasons(
            labels, dict(zip(profiles["label"], profiles["rule"], strict=True))
        )
    else:
        # Between refits the runner-up may be a stored segment nobody is in tonight.
        every_id = dict(enumerate(stored.ids)) if sweep.method == "assigned" else segment_of
        segments["reason"] = centroid_reasons(
            sweep.space.x, sweep.centroids, labels, sweep.space.features, every_id
        )
    centroids = _stored_frame(model, profiles, labels, identity_raw, as_of)
    today = segments.assign(
        rfm_segment=current["rfm_segment"].to_numpy(),
        recency_days=current["recency_days"].to_numpy(),
    )
    return SegmentationNight(
        sweep=sweep,
        segments=segments,
        profiles=profiles,
        centroids=centroids,
        rfm_eta=rfm_eta,
        as_of=as_of,
        basis=basis,
        stability=membership_stability(today, history, as_of) if history is not None else {},
    )


def _fitted_model(sweep: SweepResult, as_of, holdout: pd.DataFrame, y_hold) -> StoredModel:
    """Tonight's choice as the model kept for the next nights, with its forecast power on the
    holdout (what a later night's refit rule compares with)."""
    model = StoredModel(
        features=sweep.space.features,
        raw_centroids=sweep.space.scaler.inverse_transform(sweep.centroids),
        scaler=sweep.space.scaler,
        ids=[],
        names=[],
        method=f"{sweep.method} {sweep.param}",
        space_name=sweep.space_name,
        fitted_as_of=None if as_of is None else pd.Timestamp(as_of).date(),
        fitted_omega2=None,
        rules=sweep.rules,
    )
    model.fitted_omega2 = model.forecast_omega2(holdout, y_hold)
    return model


def _outcomes(model: StoredModel, holdout: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Per segment label: what the holdout's customers of that segment did in the period that
    followed (mean spend, share who bought again), the segment's "likely to do next"."""
    if not len(holdout) or "next_period_value" not in holdout:
        return pd.DataFrame(columns=["expected_spend", "buy_again_share"])
    spend = holdout["next_period_value"].to_numpy(dtype=float)
    frame = pd.DataFrame({"label": model.assign(holdout), "spend": spend, "again": spend > 0})
    out = frame.groupby("label").agg(
        expected_spend=("spend", "mean"), buy_again_share=("again", "mean")
    )
    return out.reindex(np.unique(labels))


def _stored_frame(
    model: StoredModel, profiles: pd.DataFrame, labels: np.ndarray, identity_raw, as_of
) -> pd.DataFrame:
    """The ``segment_centroids`` rows: one per segment, the model the next nights assign with."""
    label_order = profiles["label"].to_numpy()
    kind, center, scale = scaler_state(model.scaler)
    return pd.DataFrame(
        {
            "segment_id": profiles["segment_id"].to_numpy(),
            "segment_name": profiles["segment_name"].to_numpy(),
            "centroid": [list(map(float, model.raw_centroids[lb])) for lb in label_order],
            "rfm_centroid": [
                list(map(float, identity_raw[labels == lb].mean(axis=0))) for lb in label_order
            ],
            "features": json.dumps(list(model.features)),
            "method": model.method,
            "feature_space": model.space_name,
            "as_of": as_of,
            "scaling": kind,
            "scaler_center": [center] * len(label_order),
            "scaler_scale": [scale] * len(label_order),
            "fitted_as_of": model.fitted_as_of,
            "fitted_forecast_omega2": model.fitted_omega2,
            "rule": [
                None if model.rules is None else json.dumps(model.rules[lb]) for lb in label_order
            ],
        }
    )


def _last_positions(stored: StoredModel, current: pd.DataFrame, last_night, as_of) -> dict:
    """Each of today's customers' position in the stored segments last night (-1 for none), and
    whether they bought nothing since: what ``assign_stored`` keeps quiet customers by."""
    since = None if last_night is None else days_since(last_night[1], as_of)
    if since is None:
        return {}
    segments = last_night[0]
    position = {sid: i for i, sid in enumerate(stored.ids)}
    before = (
        current["customer_id"]
        .map(dict(zip(segments["customer_id"], segments["segment_id"], strict=True)))
        .map(position)
        .fillna(-1)
        .to_numpy(dtype=np.int64)
    )
    return {"before": before, "quiet": quiet_customers(current["recency_days"].to_numpy(), since)}


def days_since(last_as_of, as_of) -> int | None:
    """Days from last night's as-of date to tonight's; None without either, or when last night
    is later (a backfill of an earlier date keeps no one)."""
    if last_as_of is None or as_of is None:
        return None
    since = (pd.Timestamp(as_of) - pd.Timestamp(last_as_of)).days
    return None if since < 0 else since


def quiet_customers(recency_days: np.ndarray, since: int) -> np.ndarray:
    """Who bought nothing since last night. Recency counts from the as-of date: a purchase on
    last night's as-of date came after it. A re-run of the same night (``since`` 0) holds
    everyone to the first run's segments, which gives the first run's result again (those it
    moved are nearest where they are)."""
    return recency_days > since if since else np.ones(len(recency_days), bool)


def _kept_because(stored: StoredModel, as_of) -> str:
    age = (pd.Timestamp(as_of).date() - stored.fitted_as_of).days
    return f"kept the segments fitted on {stored.fitted_as_of}, {age} days ago: no refit rule fired"


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


def segmenter_pipeline(sweep: SweepResult, segment_of: dict) -> Pipeline | RuleSegmenter | None:
    """Raw features in, segment id out: the model registered in MLflow.

    Its nearest-centroid step holds the very centroids that assigned tonight's customers (each
    fitted on its own point), so the model gives a customer the segment the tables give them.
    None for a single segment, which needs no model.
    """
    if len(segment_of) < 2:
        return None
    features = sweep.space.features
    labels = list(segment_of)
    if sweep.rules is not None:
        return RuleSegmenter(
            features=list(features),
            rules=[[list(c) for c in sweep.rules[lb]] for lb in labels],
            segment_ids=[segment_of[lb] for lb in labels],
        )
    # One point per class has no within-class spread, which only shrinkage would use.
    with np.errstate(invalid="ignore", divide="ignore"):
        nearest = NearestCentroid().fit(sweep.centroids[labels], [segment_of[lb] for lb in labels])
    return make_pipeline(
        FunctionTransformer(transform_columns, kw_args={"skewed": [f in SKEWED for f in features]}),
        sweep.space.scaler,
        FunctionTransformer(winsorise),
        nearest,
    )
