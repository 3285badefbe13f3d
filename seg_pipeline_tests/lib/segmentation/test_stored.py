"""The segments kept between refits: the stored scaler, the refit rule, quiet customers."""

import numpy as np
import pandas as pd
import pytest

from seg_pipeline.lib.segmentation.nightly import segment_customers
from seg_pipeline.lib.segmentation.stored import (
    StoredModel,
    refit_reason,
    restore_scaler,
    scaler_state,
)
from seg_pipeline.lib.segmentation.sweep import SweepSettings
from seg_pipeline_tests.lib.segmentation.test_sweep import SETTINGS, _customers, _night

RULE = {"refit_after_days": 28, "refit_changed_share": 0.1, "change_margin": 0.02}


@pytest.mark.parametrize("kind", ["robust", "standard"])
def test_a_restored_scaler_scales_exactly_as_the_fitted_one(kind):
    from seg_pipeline.lib.segmentation.stored import SCALERS

    x = np.random.default_rng(0).lognormal(size=(200, 4))
    fitted = SCALERS[kind]().fit(x)
    restored = restore_scaler(*scaler_state(fitted))
    later = np.random.default_rng(1).lognormal(size=(50, 4))
    np.testing.assert_allclose(restored.transform(later), fitted.transform(later))
    np.testing.assert_allclose(restored.inverse_transform(later), fitted.inverse_transform(later))


def _older(frame: pd.DataFrame, days: int) -> pd.DataFrame:
    """The same customers ``days`` later with no purchase: only recency grew."""
    return frame.assign(recency_days=frame["recency_days"] + days)


def test_a_night_without_purchases_keeps_the_model_and_every_customers_segment():
    current, holdout, _ = _customers()
    first = _night(current, holdout)
    assert first.sweep.refit == "no stored segments to keep"
    second = segment_next(first.centroids, _older(current, 1), holdout, "2025-07-01")
    assert second.sweep.method == "assigned"
    assert second.sweep.kept.startswith("kept the segments fitted on 2025-06-30, 1 days ago")
    merged = first.segments.merge(second.segments, on="customer_id")
    assert (merged["segment_id_x"] == merged["segment_id_y"]).all()
    assert (merged["segment_name_x"] == merged["segment_name_y"]).all()
    # The stored model travels on unchanged: same centroids, scaler and fit date.
    for column in ("centroid", "scaler_center", "scaler_scale", "fitted_as_of", "method"):
        assert second.centroids[column].tolist() == first.centroids[column].tolist()
    assert second.run_row()["refit"] is False


def segment_next(stored: pd.DataFrame, current, holdout, as_of, last_night=None, **settings):
    """The night after the one that stored ``stored`` (its ``centroids``)."""
    chosen = SweepSettings(**{**SETTINGS.__dict__, **settings})
    return segment_customers(current, holdout, stored, chosen, as_of=as_of, last_night=last_night)


def test_the_stored_model_assigns_tonights_customers_as_tonight_did():
    # The kept centroids are the ones that assigned tonight, in tonight's scale: re-assigning
    # the same customers with the stored model gives every customer the same label.
    current, holdout, _ = _customers()
    first = _night(current, holdout)
    stored = StoredModel.from_frame(first.centroids)
    positions = stored.assign(current)
    ids = np.array(stored.ids)[positions]
    assert (ids == first.segments["segment_id"].to_numpy()).all()
    assert first.segmenter.predict(current[list(stored.features)].to_numpy()).tolist() == (
        first.segments["segment_id"].tolist()
    )


def test_the_refit_rule_fires_on_age_new_buyers_and_lost_forecast_power():
    current, holdout, _ = _customers()
    first = _night(current, holdout)
    stored = StoredModel.from_frame(first.centroids)
    y = np.log1p(holdout["next_period_value"].to_numpy())

    def reason(frame, as_of, y_hold=y, **rule):
        return refit_reason(stored, frame, holdout, y_hold, as_of, **{**RULE, **rule})

    assert reason(_older(current, 3), "2025-07-03") is None
    assert "40 days old" in reason(_older(current, 40), "2025-08-09")
    # A fifth of the customers bought in the three days since the fit.
    bought = _older(current, 3)
    bought.loc[bought.index[::5], "recency_days"] = 1
    assert reason(bought, "2025-07-03").startswith("20% of customers bought since")
    assert reason(bought, "2025-07-03", refit_changed_share=0.25) is None
    # Spend that no longer follows the segments: the stored model's forecast power collapses.
    shuffled = np.random.default_rng(0).permutation(y)
    assert "forecast power fell from" in reason(_older(current, 3), "2025-07-03", y_hold=shuffled)
    assert reason(current, "2025-06-29").startswith("the stored segments were fitted after")
    assert refit_reason(None, current, holdout, y, "2025-07-01", **RULE) == (
        "no stored segments to keep"
    )


def test_a_work_file_from_before_the_scaler_was_stored_means_a_refit():
    current, holdout, _ = _customers()
    first = _night(current, holdout)
    old = first.centroids.drop(columns=["scaler_center", "scaler_scale", "scaling"])
    assert StoredModel.from_frame(old) is None
    second = segment_next(old, current, holdout, "2025-07-01")
    assert second.sweep.method != "assigned" and second.sweep.refit == "no stored segments to keep"


def test_a_fall_in_forecast_power_within_its_noise_is_not_a_reason_to_refit():
    from seg_pipeline.lib.segmentation.stored import forecast_noise

    # A 400-customer shop's figure moves by a few hundredths by chance; a million customers' not.
    assert 0.03 < forecast_noise(0.47, 400, 5) < 0.04
    assert forecast_noise(0.47, 1_000_000, 5) < 0.001
    assert forecast_noise(0.5, 5, 5) == float("inf")


def test_a_quiet_customer_stays_unless_clearly_nearer_another_segment():
    current, holdout, _ = _customers()
    first = _night(current, holdout)
    stored = StoredModel.from_frame(first.centroids)
    before = stored.assign(current)
    # Customer 0 now looks like a lapsed one-time buyer (the last customer's figures).
    moved = current.copy()
    moved.loc[0, ["recency_days", "frequency", "monetary"]] = current.iloc[-1][
        ["recency_days", "frequency", "monetary"]
    ]
    labels = stored.assign(moved)
    assert labels[0] != before[0]
    quiet = np.ones(len(moved), dtype=bool)
    # A clear move is made by a quiet customer too; a margin wider than the move keeps them.
    assert stored.keep_quiet(moved, labels, before, quiet, 0.25)[0] == labels[0]
    assert stored.keep_quiet(moved, labels, before, quiet, 100.0)[0] == before[0]
    # A customer who bought since last night is never held back, nor one without a segment.
    assert stored.keep_quiet(moved, labels, before, ~quiet, 100.0)[0] == labels[0]
    unknown = before.copy()
    unknown[0] = -1
    assert stored.keep_quiet(moved, labels, unknown, quiet, 100.0)[0] == labels[0]


def test_a_rerun_of_a_night_between_refits_gives_that_nights_segments_again():
    current, holdout, _ = _customers()
    first = _night(current, holdout)
    settings = {"keep_margin": 100.0}  # everyone quiet is held: the hysteresis is what is tested
    moved = _older(current, 1)
    moved.loc[0, ["recency_days", "frequency", "monetary"]] = current.iloc[-1][
        ["recency_days", "frequency", "monetary"]
    ]
    last = (first.segments[["customer_id", "segment_id"]], "2025-06-30")
    night = segment_next(first.centroids, moved, holdout, "2025-07-01", last_night=last, **settings)
    # Customer 0 bought nothing (recency grew) and is held in their segment despite looking like
    # a lapsed buyer now.
    assert night.segments["segment_id"].tolist() == first.segments["segment_id"].tolist()
    rerun_last = (night.segments[["customer_id", "segment_id"]], "2025-07-01")
    again = segment_next(
        night.centroids, moved, holdout, "2025-07-01", last_night=rerun_last, **settings
    )
    assert again.sweep.method == "assigned"
    assert again.segments.equals(night.segments)
