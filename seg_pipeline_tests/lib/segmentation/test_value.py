"""The value forecast on small shops whose answer is known."""

import numpy as np
import pandas as pd

from seg_pipeline.lib.segmentation.value import calibration_table, forecast_value, horizon_days


def _customers(n: int, seed: int, spend_of=lambda frequency: 40.0 * frequency):
    rng = np.random.default_rng(seed)
    frequency = rng.integers(1, 10, n).astype(float)
    recency = rng.integers(1, 200, n).astype(float)
    active = recency < 100
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(n)],
            "recency_days": recency,
            "frequency": frequency,
            "monetary": frequency * rng.uniform(20, 60, n),
            "next_period_value": np.where(active, spend_of(frequency), 0.0),
            "cutoff_date": pd.Timestamp("2025-04-01"),
        }
    )


def test_the_forecast_learns_who_buys_and_how_much_and_is_calibrated_out_of_fold():
    holdout = _customers(2000, 0)
    current = _customers(500, 1).assign(cutoff_date=pd.Timestamp("2025-06-30"))
    value = forecast_value(current, holdout, features=("recency_days", "frequency", "monetary"))
    forecast = value.forecast.set_index("customer_id").join(current.set_index("customer_id"))
    active = forecast["recency_days"] < 100
    # Recent customers buy; lapsed ones do not; recent spend grows with their orders.
    assert forecast.loc[active, "buy_probability"].min() > 0.9
    assert forecast.loc[~active, "buy_probability"].max() < 0.1
    recent = forecast[active]
    assert np.corrcoef(recent["frequency"], recent["expected_spend"])[0, 1] > 0.95
    assert abs(value.figures["value_spend_ratio"] - 1) < 0.05
    assert value.calibration["customers"].sum() == len(holdout)
    assert horizon_days(current, holdout) == 90


def test_a_holdout_where_nobody_bought_again_forecasts_zero_instead_of_failing():
    holdout = _customers(200, 0, spend_of=lambda f: 0.0 * f)
    value = forecast_value(holdout, holdout, features=("recency_days", "frequency", "monetary"))
    assert (value.forecast["expected_spend"] == 0).all()
    assert (value.forecast["buy_probability"] == 0).all()


def test_too_few_customers_at_the_holdout_cut_give_no_forecast():
    assert forecast_value(_customers(30, 0), _customers(49, 0)) is None


def test_calibration_table_by_decile_of_the_prediction():
    predicted = np.arange(1.0, 21.0)
    actual = predicted * 2
    table = calibration_table(predicted, np.full(20, 0.5), actual, bins=4)
    assert table["customers"].tolist() == [5, 5, 5, 5]
    assert table["predicted_spend"].tolist() == [3.0, 8.0, 13.0, 18.0]
    assert table["actual_spend"].tolist() == [6.0, 16.0, 26.0, 36.0]
    assert table["actual_buy_rate"].tolist() == [1.0] * 4
