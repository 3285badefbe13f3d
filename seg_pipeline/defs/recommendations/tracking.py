"""Recommendations' MLflow logging, in one place: the refit night's selection run (a child run
per candidate, the evaluation tables, the champion as a registered pyfunc) and the rescore night's
run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from seg_pipeline.defs.resources import MLflowTracking
from seg_pipeline.lib.recommendations.mlflow_export import HistoryRecommender, export_model
from seg_pipeline.lib.recommendations.nightly import NightSettings, scoring_figures
from seg_pipeline.lib.recommendations.refit import PopularityNight, RefitNight
from seg_pipeline.lib.recommendations.rescore import RescoreNight

EXPERIMENT = "recommendations"
REGISTERED_MODEL = "seg_pipeline_recommender"
_AT_K = ("precision", "recall", "f1", "ndcg", "map", "hit_rate")
_PLAIN = ("mrr", "coverage", "diversity", "novelty", "fit_seconds")


def metric_dict(row: dict, k: int) -> dict[str, float]:
    """A candidate's figures as MLflow metrics (``ndcg_at_10``, ``coverage``, ...)."""
    out = {}
    for m in _AT_K + _PLAIN:
        value = row.get(m)
        if value is not None and np.isfinite(value):
            out[f"{m}_at_{k}" if m in _AT_K else m] = float(value)
    return out


def log_refit(
    context: dg.AssetExecutionContext,
    tracking: MLflowTracking,
    night: RefitNight,
    settings: NightSettings,
    *,
    register_model: bool,
) -> str:
    """Log the selection and the champion; returns the selection run's id (``model_run_id``)."""
    import mlflow

    table = night.evaluation.table
    champ, base = night.champion_row, night.baseline_row
    n = settings.n
    with tracking.start_run(context, EXPERIMENT, run_name="champion_selection") as parent:
        mlflow.log_params(
            {
                "n": n,
                "holdout_days": settings.holdout_days,
                "split_date": str(night.split),
                "weights": json.dumps(settings.weights.__dict__),
                "champion": night.evaluation.champion_key,
                "baseline": base["candidate"],
                "refit_reason": night.why[:500],
                **night.selection,
                **scoring_figures(night.scoring),
            }
        )
        tracking.log_children(
            context,
            parent,
            [
                (
                    row["candidate"],
                    {
                        "model": row["model"],
                        "candidate": row["candidate"][:500],
                        "params": json.dumps(row["params"], default=str)[:500],
                    },
                    metric_dict(row, n),
                )
                for row in table.to_dict("records")
            ],
        )
        mlflow.log_metrics(metric_dict(champ, n))
        mlflow.log_metric(f"baseline_ndcg_at_{n}", float(base["ndcg"]))
        # Audience hit rates on the validation window, every mode beside the baseline.
        for row in night.audience_rates.to_dict("records"):
            prefix = f"audience_{row['kind']}_{row['mode']}"
            mlflow.log_metric(f"{prefix}_hit_rate", float(row["hit_rate"]))
        if len(night.audience_rates):
            mlflow.log_params({f"{k}_audience_mode": v for k, v in night.audience_modes.items()})
        mlflow.log_param("diversity_strength", night.diversity)
        for row in night.diversity_trials.to_dict("records"):
            tag = f"mmr_{row['strength']:g}".replace(".", "_")
            mlflow.log_metrics({f"{tag}_ndcg": row["ndcg"], f"{tag}_ild": row["ild"]})
        with tempfile.TemporaryDirectory() as tmp:
            night.audience_rates.to_csv(Path(tmp, "audiences.csv"), index=False)
            night.diversity_trials.to_csv(Path(tmp, "diversity.csv"), index=False)
            table.assign(params=table["params"].map(lambda p: json.dumps(p, default=str))).to_csv(
                Path(tmp, "candidates.csv"), index=False
            )
            night.evaluation.by_segment.to_csv(Path(tmp, "candidates_by_segment.csv"), index=False)
            mlflow.log_artifacts(tmp, artifact_path="evaluation")
            model_dir = Path(tmp, "model_dir")
            export_model(night.champion, night.full.item_ids, model_dir)
            mlflow.pyfunc.log_model(
                name="recommender",
                python_model=HistoryRecommender(),
                artifacts={"model_dir": str(model_dir)},
                pip_requirements=["numpy", "scipy", "pandas", "mlflow"],
                code_paths=None,
                registered_model_name=REGISTERED_MODEL if register_model else None,
            )
        return parent.info.run_id


def log_rescore(
    context: dg.AssetExecutionContext, tracking: MLflowTracking, night: RescoreNight
) -> None:
    """Log which model re-scored whom tonight."""
    import mlflow

    with tracking.start_run(context, EXPERIMENT, run_name="rescoring"):
        mlflow.log_params(
            {
                "model_run_id": night.kept.model_run_id,
                "model_trained_as_of": str(night.kept.trained_as_of),
                "rescored": night.scope[:500],
                **scoring_figures(night.champion.scoring_),
            }
        )
        mlflow.log_metrics(night.counts)


def log_popularity(
    context: dg.AssetExecutionContext, tracking: MLflowTracking, night: PopularityNight
) -> str:
    """Log a night that published popularity lists, and why; returns the run's id."""
    import mlflow

    with tracking.start_run(context, EXPERIMENT, run_name="popularity_fallback") as run:
        mlflow.log_params({"champion": night.champion.name, "reason": night.note[:500]})
        mlflow.set_tag("degraded", night.note[:500])
        return run.info.run_id
