"""Each customer's value forecast: expected spend in the next period and the chance of buying.

The shop's own history is the training set: at the holdout cut every customer's features are
known, and so is what they spent in the horizon that followed. Two gradient-boosted models learn
from that, a classifier for "buys again in the horizon" and a regressor with Poisson loss for
the spend (a Poisson loss fits the mean on the original scale, so the expected spends add up to
a segment's or the shop's expected revenue, which a log-scale fit would not). Today's features
then give today's forecast.

Calibration is measured out of fold: each half of the holdout customers is predicted by models
fitted on the other half, and predictions are compared with what happened, by decile of the
prediction. That table is logged to MLflow and drawn in the segment report, so a marketer can
see whether "expected 120" meant 120.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from seg_pipeline.lib.segmentation.features import BEHAVIOUR_FEATURES


@dataclass
class ValueForecast:
    """Today's forecast per customer and its out-of-fold calibration on the holdout."""

    forecast: pd.DataFrame  # customer_id, expected_spend, buy_probability
    calibration: pd.DataFrame  # decile, customers, predicted/actual spend and buying rate
    figures: dict  # overall out-of-fold figures (logged to MLflow)


def horizon_days(current: pd.DataFrame, holdout: pd.DataFrame) -> int | None:
    """Days between the holdout cut and today's: the period the holdout outcomes (and so the
    forecast) cover."""
    if "cutoff_date" not in current or not len(holdout) or "cutoff_date" not in holdout:
        return None
    today, then = current["cutoff_date"].iloc[0], holdout["cutoff_date"].iloc[0]
    return int((pd.Timestamp(today) - pd.Timestamp(then)).days)


def _models(random_state: int, n: int):
    # Shops have a few thousand customers as often as a million: small trees, a slow rate and
    # leaves of at least 1% keep the forecast from memorising the few thousand (which made the
    # buying probability overconfident, with a worse Brier score than the plain buying rate).
    options = {
        "max_iter": 100,
        "learning_rate": 0.05,
        "max_leaf_nodes": 15,
        "min_samples_leaf": max(20, n // 100),
        "l2_regularization": 1.0,
        "random_state": random_state,
    }
    return (
        HistGradientBoostingClassifier(**options),
        HistGradientBoostingRegressor(loss="poisson", **options),
    )


def _fit(values: np.ndarray, spend: np.ndarray, random_state: int):
    buys, amount = _models(random_state, len(values))
    bought = spend > 0
    if bought.all() or not bought.any():
        buys = None  # one class: the rate itself is the forecast
    else:
        buys.fit(values, bought)
    if bought.any():
        amount.fit(values, np.clip(spend, 0, None))
    else:
        amount = None  # nobody spent in the horizon: nothing to learn, the forecast is 0
    return buys, amount, float(bought.mean())


def _predict(models, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    buys, amount, rate = models
    probability = np.full(len(values), rate) if buys is None else buys.predict_proba(values)[:, 1]
    expected = np.zeros(len(values)) if amount is None else amount.predict(values)
    return expected, probability


def forecast_value(
    current: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    features: tuple[str, ...] = BEHAVIOUR_FEATURES,
    sample: int = 50_000,
    random_state: int = 42,
) -> ValueForecast | None:
    """Fit on the holdout snapshot (at most ``sample`` customers), forecast today's customers.

    Returns None when the holdout has too few customers to learn from (fewer than 50).
    """
    if len(holdout) < 50 or "next_period_value" not in holdout:
        return None
    features = tuple(f for f in features if f in holdout and f in current)
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(len(holdout), min(sample, len(holdout)), replace=False))
    values = holdout[list(features)].to_numpy(dtype=float)[rows]
    spend = holdout["next_period_value"].to_numpy(dtype=float)[rows]

    fold = rng.permutation(len(rows)) % 2 == 0
    oof_spend, oof_probability = np.empty(len(rows)), np.empty(len(rows))
    for part in (fold, ~fold):
        models = _fit(values[~part], spend[~part], random_state)
        oof_spend[part], oof_probability[part] = _predict(models, values[part])

    expected, probability = _predict(
        _fit(values, spend, random_state), current[list(features)].to_numpy(dtype=float)
    )
    forecast = pd.DataFrame(
        {
            "customer_id": current["customer_id"].to_numpy(),
            "expected_spend": expected,
            "buy_probability": probability,
        }
    )
    return ValueForecast(
        forecast=forecast,
        calibration=calibration_table(oof_spend, oof_probability, spend),
        figures=calibration_figures(oof_spend, oof_probability, spend),
    )


def calibration_table(
    predicted: np.ndarray, probability: np.ndarray, spend: np.ndarray, bins: int = 10
) -> pd.DataFrame:
    """Predicted against actual spend and buying rate, by decile of predicted spend."""
    decile = pd.qcut(pd.Series(predicted).rank(method="first"), bins, labels=False) + 1
    frame = pd.DataFrame(
        {
            "decile": decile,
            "predicted_spend": predicted,
            "actual_spend": spend,
            "predicted_buy_rate": probability,
            "actual_buy_rate": spend > 0,
        }
    )
    out = frame.groupby("decile").agg(
        customers=("actual_spend", "size"),
        predicted_spend=("predicted_spend", "mean"),
        actual_spend=("actual_spend", "mean"),
        predicted_buy_rate=("predicted_buy_rate", "mean"),
        actual_buy_rate=("actual_buy_rate", "mean"),
    )
    return out.reset_index()


def spend_totals(calibration: pd.DataFrame) -> tuple[float, float, float]:
    """Predicted and actual total spend of a ``calibration_table``, and their ratio."""
    n = calibration["customers"]
    predicted = float((n * calibration["predicted_spend"]).sum())
    actual = float((n * calibration["actual_spend"]).sum())
    return predicted, actual, predicted / actual if actual else float("nan")


def calibration_figures(
    predicted: np.ndarray, probability: np.ndarray, spend: np.ndarray
) -> dict[str, float]:
    """Out-of-fold summary: total predicted over total actual spend, the spend correlation, the
    Brier score of the buying probability and the buying rate it is measured against."""
    bought = (spend > 0).astype(float)
    return {
        "value_spend_ratio": float(predicted.sum() / spend.sum()) if spend.sum() else float("nan"),
        "value_spend_correlation": float(np.corrcoef(predicted, spend)[0, 1])
        if np.std(predicted) > 0 and np.std(spend) > 0
        else float("nan"),
        "value_buy_brier": float(((probability - bought) ** 2).mean()),
        "value_buy_rate": float(bought.mean()),
    }
