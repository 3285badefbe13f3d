"""The nightly segmentation decision: sweep candidates, keep the incumbent, or assign to stored.

This is where a segment is chosen. ``run_sweep`` fits every (feature space, method, size) on a
sample, scores it on cluster quality, fits the contenders again at the holdout cut to measure how
well their segments forecast the spend that followed, and applies the selection rule
(``selection.choose``). ``assign_stored`` is the night without a refit (``stored.refit_reason``
decides): today's customers go to the nearest stored centroid. Both return a ``SweepResult``: the
candidates table, the chosen model and every customer's label; naming, ids and tables are the
caller's (``nightly.segment_customers``).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from seg_pipeline.lib.parallel import each_in_threads
from seg_pipeline.lib.segmentation.features import (
    FEATURE_SETS,
    RFM_FEATURES,
    NotEnoughData,
    feature_matrix,
    prepare,
    scale,
)
from seg_pipeline.lib.segmentation.forecast import forecast_power, log_target
from seg_pipeline.lib.segmentation.selection import (
    METHODS,
    SUPERVISED,
    Candidate,
    TreeInputs,
    assign_to,
    candidate_params,
    centroids_of,
    choose,
    contenders,
    fit_candidate,
)
from seg_pipeline.lib.segmentation.stored import StoredModel
from seg_pipeline.lib.segmentation.tree import apply_rules


@dataclass(frozen=True)
class SweepSettings:
    """What to sweep and how to choose; the Dagster config (``SegmentationConfig``) mirrors it."""

    methods: tuple[str, ...] = ("kmeans", "gmm", "agglomerative", "tree")
    linkage: str = "ward"
    features: tuple[str, ...] = ("rfm", "behaviour")
    scaling: str = "robust"
    k_min: int = 3
    k_max: int = 10
    max_segments: int = 10
    min_share: float = 0.02
    silhouette_tolerance: float = 0.1
    silhouette_sample: int = 3_000
    fit_sample: int = 5_000
    selection_sample: int = 20_000
    refit: bool = True
    refit_after_days: int = 28
    refit_changed_share: float = 0.25
    keep_margin: float = 0.25
    change_margin: float = 0.02
    match_distance: float = 1.0
    random_state: int = 42

    def validate(self) -> None:
        """Raise ``ValueError`` naming any unknown method or feature space."""
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown segmentation method(s) {unknown}; use {list(METHODS)}")
        unknown = sorted(set(self.features) - set(FEATURE_SETS))
        if unknown:
            raise ValueError(f"unknown feature set(s) {unknown}; use {list(FEATURE_SETS)}")

    @property
    def selection_rule(self) -> dict:
        return {
            "max_segments": self.max_segments,
            "min_share": self.min_share,
            "silhouette_tolerance": self.silhouette_tolerance,
        }


@dataclass
class FeatureSpace:
    """One feature space prepared on today's customers (and on the holdout snapshot)."""

    x: np.ndarray
    scaler: object
    features: tuple[str, ...]
    raw: np.ndarray
    x_hold: np.ndarray | None
    # The features in their own units, today and at the holdout cut: what a tree's rules read.
    values: np.ndarray | None = None
    hold_values: np.ndarray | None = None


@dataclass
class SweepResult:
    """What the night decided.

    ``table`` has one row per fitted candidate (``chosen`` marks the winner); ``rows`` are the
    same rows as dicts with the candidate's own metric types, for experiment tracking.
    ``labels`` gives every customer's cluster label (positions into ``centroids``), in the row
    order of the customers passed in.
    """

    table: pd.DataFrame
    rows: list[dict]
    method: str
    param: object
    space_name: str
    space: FeatureSpace
    centroids: np.ndarray
    labels: np.ndarray
    contenders: list[int] = field(default_factory=list)
    incumbent: dict | None = None
    candidates: list[Candidate] = field(default_factory=list)
    note: str | None = None  # what the data could not support, for the run's warnings
    kept: str | None = None  # why the stored segments were kept (nights between refits)
    refit: str | None = None  # why tonight refitted (``stored.refit_reason``)
    rules: list | None = None  # a tree's leaf rules, one per label

    @property
    def decision(self) -> str | None:
        """Why tonight refitted, or why it kept the stored segments."""
        return self.refit or self.kept

    @property
    def chosen_row(self) -> dict:
        return self.table.loc[self.table["chosen"]].iloc[0].to_dict()

    @property
    def linkage_matrix(self):
        """The first agglomerative tree of the sweep, for the dendrogram (None if none)."""
        return next(
            (c.linkage_matrix for c in self.candidates if c.linkage_matrix is not None), None
        )


def prepare_spaces(
    current: pd.DataFrame, holdout: pd.DataFrame, settings: SweepSettings, *, sweep: bool = True
) -> tuple[dict[str, FeatureSpace], tuple]:
    """Each swept feature space (none unless ``sweep``), and the fixed log-RFM space in which
    segments are matched to yesterday's whatever space wins (``prepare``'s 4-tuple,
    standard-scaled).

    The spaces are prepared one per core: numpy releases the GIL in the logs and the scalers'
    sorts.
    """

    def one(name: str | None):
        if name is None:
            return prepare(current, RFM_FEATURES, "standard")
        x, scaler, feats, raw = prepare(current, FEATURE_SETS[name], settings.scaling)
        x_hold = None
        # Holdout customers who are all alike give no forecast power, not a single segment.
        with suppress(NotEnoughData):
            if len(holdout) > 20:
                x_hold = prepare(holdout, feats, settings.scaling)[0]
        return FeatureSpace(
            x=x,
            scaler=scaler,
            features=feats,
            raw=raw,
            x_hold=x_hold,
            values=current[list(feats)].to_numpy(dtype=float),
            hold_values=None if x_hold is None else holdout[list(feats)].to_numpy(dtype=float),
        )

    names = settings.features if sweep else ()
    *prepared, identity = each_in_threads(one, [*names, None])
    return dict(zip(names, prepared, strict=True)), identity


def incumbent_of(previous: pd.DataFrame | None) -> dict | None:
    """Yesterday's (feature space, method, parameter), the candidate the change margin favours."""
    if previous is None or len(previous) == 0 or "feature_space" not in previous:
        return None
    method_param = str(previous["method"].iloc[0]).split(" ", 1)
    return {
        "features": previous["feature_space"].iloc[0],
        "method": method_param[0],
        "param": method_param[-1],
    }


def run_sweep(
    spaces: dict[str, FeatureSpace],
    y_hold: np.ndarray | None,
    n_holdout: int,
    settings: SweepSettings,
    *,
    incumbent: dict | None = None,
    warn=lambda message: None,
) -> SweepResult:
    """Fit, score and choose among every candidate; assign every customer to the chosen centroids.

    Parameters
    ----------
    spaces : dict of FeatureSpace
        From ``prepare_spaces``; every space has the same customers in the same order.
    y_hold : ndarray or None
        Log next-period spend of the holdout snapshot's customers (None: no forecast power).
    n_holdout : int
        Customers in the holdout snapshot.
    incumbent : dict, optional
        Yesterday's choice (``incumbent_of``), kept unless beaten by ``change_margin``.
    warn : callable
        Receives one line per candidate that could not be fitted.
    """
    n_current = len(next(iter(spaces.values())).x)
    opts = {
        "random_state": settings.random_state,
        "sample_size": settings.silhouette_sample,
        "fit_sample_size": settings.fit_sample,
        "linkage": settings.linkage,
    }
    rng = np.random.default_rng(settings.random_state)
    sel = np.sort(rng.choice(n_current, min(settings.selection_sample, n_current), replace=False))
    hold_sel = np.sort(
        rng.choice(n_holdout, min(settings.selection_sample, n_holdout), replace=False)
    )
    # The sweep's samples, taken once per feature space rather than once per candidate.
    sampled = {
        name: (space.x[sel], None if space.x_hold is None else space.x_hold[hold_sel])
        for name, space in spaces.items()
    }
    y_sampled = y_hold[hold_sel] if y_hold is not None else None

    def supervision(space_name: str) -> TreeInputs | None:
        space = spaces[space_name]
        if y_sampled is None or space.hold_values is None:
            return None
        return TreeInputs(
            features=space.features,
            values=space.values[sel],
            hold_values=space.hold_values[hold_sel],
            y=y_sampled,
            min_share=settings.min_share,
        )

    def fit_one(job: tuple) -> tuple[dict, Candidate] | str:
        space_name, method, param = job
        sup = supervision(space_name) if method in SUPERVISED else None
        try:
            cand = fit_candidate(sampled[space_name][0], method, param, supervision=sup, **opts)
        except ValueError as exc:
            return f"{method} {param}: {exc}"
        row = {"features": space_name, "method": method, "param": cand.param, **cand.metrics}
        return row, cand

    def forecast_one(job: tuple) -> tuple[float, float]:
        # The same method and size fitted on the holdout snapshot: do its segments separate
        # the spend that followed?
        space_name, method, param, n_segments = job
        hold_param = n_segments if method != "hdbscan" else param
        hold = fit_candidate(sampled[space_name][1], method, hold_param, score=False, **opts)
        return forecast_power(hold.labels, y_sampled)

    # A shop with a handful of customers gets fewer segments rather than none.
    k_min = min(settings.k_min, max(2, len(sel) - 1))
    ks = range(k_min, settings.k_max + 1)
    # A tree needs spend after the holdout cut to learn from; a shop too young for a holdout
    # snapshot sweeps the clusterings alone.
    jobs = [
        (space_name, method, param)
        for space_name in spaces
        for method in settings.methods
        if method not in SUPERVISED or supervision(space_name) is not None
        for param in candidate_params(method, ks, len(sel))
    ]
    # Candidates are independent: one per core, each single-threaded inside (the samples are
    # small, so sklearn's own threads mostly wait). Results keep the job order.
    rows, candidates, fitted_jobs = [], [], []
    for job, result in zip(jobs, each_in_threads(fit_one, jobs), strict=True):
        if isinstance(result, str):
            warn(result)
        else:
            rows.append(result[0])
            candidates.append(result[1])
            fitted_jobs.append(job)
    if not rows:
        raise NotEnoughData(
            f"{n_current} customers could not be split into {k_min} or more segments: "
            "one segment holds them"
        )
    # Forecast power decides only among the contenders, so only they get the holdout fit.
    in_contention = list(contenders(pd.DataFrame(rows), **settings.selection_rule).index)
    forecast_jobs = []
    if y_sampled is not None:
        for i in in_contention:
            space_name, method, param = fitted_jobs[i]
            if method in SUPERVISED:  # cross-fitted when the tree was fitted
                continue
            if sampled[space_name][1] is not None and candidates[i].n_segments >= 2:
                forecast_jobs.append((i, (space_name, method, param, candidates[i].n_segments)))
    forecasts = each_in_threads(lambda job: forecast_one(job[1]), forecast_jobs)
    for (i, _), (eta2, omega2) in zip(forecast_jobs, forecasts, strict=True):
        rows[i]["forecast_eta2"], rows[i]["forecast_omega2"] = eta2, omega2
    table = pd.DataFrame(rows)
    chosen_idx = choose(
        table, **settings.selection_rule, incumbent=incumbent, margin=settings.change_margin
    )
    table["chosen"] = table.index == chosen_idx
    chosen = candidates[chosen_idx]
    space_name = table.loc[chosen_idx, "features"]
    space = spaces[space_name]
    rules = None
    if chosen.rules is not None:
        # Everyone goes to the leaf whose rule they satisfy.
        labels = apply_rules(pd.DataFrame(space.values, columns=list(space.features)), chosen.rules)
        rules = [chosen.rules[i] for i in np.unique(labels)]
        centroids, labels = centroids_of(space.x, labels)
    else:
        # The sweep may have run on a sample: everyone goes to the nearest chosen centroid, and
        # those centroids are what is stored, so that tomorrow assigns today's customers alike.
        centroids, labels = assign_to(space.x, chosen.centroids)
    return SweepResult(
        table=table,
        rows=rows,
        method=chosen.method,
        param=chosen.param,
        space_name=space_name,
        space=space,
        centroids=centroids,
        labels=labels,
        rules=rules,
        contenders=in_contention,
        incumbent=incumbent,
        candidates=candidates,
        note=None
        if k_min == settings.k_min
        else f"only {n_current} customers: tried {k_min} to {settings.k_max} segments",
    )


def assign_stored(
    current: pd.DataFrame,
    holdout: pd.DataFrame,
    y_hold: np.ndarray | None,
    stored: StoredModel,
    reason: str,
    *,
    before: np.ndarray | None = None,
    quiet: np.ndarray | None = None,
    keep_margin: float = 0.0,
) -> SweepResult:
    """A night between refits: today's customers in the stored segments, scaled as on the fit
    night, each to its nearest stored centroid (or by the tree's rules). ``reason`` says why the
    model was kept; ``before`` (each customer's position in the stored segments last night, -1
    for none) and ``quiet`` (no purchase since) let ``StoredModel.keep_quiet`` keep quiet
    customers where they were unless they moved by more than ``keep_margin``."""
    x, raw = stored.scaled(current)
    labels = stored.assign(current)
    if before is not None and quiet is not None:
        labels = stored.keep_quiet(current, labels, before, quiet, keep_margin)
    eta2 = omega2 = None
    if y_hold is not None and len(holdout) > len(stored.ids):
        eta2, omega2 = forecast_power(stored.assign(holdout), y_hold)
    table = pd.DataFrame(
        [
            {
                "features": stored.space_name,
                "method": "assigned",
                "param": stored.method,
                "n_segments": len(stored.ids),
                "forecast_eta2": eta2,
                "forecast_omega2": omega2,
                "chosen": True,
            }
        ]
    )
    return SweepResult(
        table=table,
        rows=[],
        method="assigned",
        param=stored.method,
        space_name=stored.space_name,
        space=FeatureSpace(
            x=x, scaler=stored.scaler, features=stored.features, raw=raw, x_hold=None
        ),
        centroids=stored.centroids,
        labels=labels,
        rules=stored.rules,
        kept=reason,
    )


def single_segment(current: pd.DataFrame, why: str) -> SweepResult:
    """Every customer in one segment, in the log-RFM space: what a shop too small or too
    uniform to cluster gets, so that every buyer still has a segment."""
    raw = feature_matrix(current, RFM_FEATURES)
    x, scaler = scale(raw, "standard")
    table = pd.DataFrame(
        [{"features": "rfm", "method": "single", "param": "k=1", "n_segments": 1, "chosen": True}]
    )
    return SweepResult(
        table=table,
        rows=[],
        method="single",
        param="k=1",
        space_name="rfm",
        space=FeatureSpace(x=x, scaler=scaler, features=RFM_FEATURES, raw=raw, x_hold=None),
        centroids=x.mean(axis=0, keepdims=True),
        labels=np.zeros(len(current), dtype=np.int64),
        note=why,
    )


def holdout_target(holdout: pd.DataFrame) -> np.ndarray | None:
    """Log next-period spend of the holdout snapshot, the quantity segments should forecast."""
    if not len(holdout):
        return None
    return log_target(holdout["next_period_value"].to_numpy(dtype=float))
