import numpy as np
import pytest

from seg_pipeline.lib.segmentation.forecast import forecast_power, log_target
from seg_pipeline.lib.segmentation.identity import match_segments, next_ids


def test_eta_and_omega_squared_by_hand():
    labels = np.array([0, 0, 1, 1])
    y = np.array([1.0, 3.0, 5.0, 7.0])
    # Grand mean 4; SS_total = 9+1+1+9 = 20; group means 2 and 6; SS_within = 1+1+1+1 = 4.
    eta, omega = forecast_power(labels, y)
    assert eta == pytest.approx(1 - 4 / 20)
    ms_within = 4 / (4 - 2)
    assert omega == pytest.approx((20 - 4 - 1 * ms_within) / (20 + ms_within))


def test_omega_squared_penalises_many_groups_of_noise():
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    many = np.arange(500) % 125  # like 125 RFM cells that carry no information
    eta, omega = forecast_power(many, y)
    assert eta > 0.15  # raw eta squared rewards the many groups
    assert omega < 0.05 and omega < eta / 5  # omega squared removes what chance explains


def test_log_target_keeps_sign():
    assert log_target(np.array([-9.0, 0.0, 9.0])).tolist() == pytest.approx(
        [-np.log(10), 0.0, np.log(10)]
    )


def test_segments_keep_their_ids_when_the_clustering_renumbers_them():
    previous = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 0.0]])
    # Same groups, shuffled and slightly moved, plus one brand-new group far away.
    new = np.array([[10.1, 0.2], [0.1, -0.1], [30.0, 30.0], [4.8, 5.1]])
    ids = match_segments(new, previous, ["S1", "S2", "S3"], max_distance=1.0)
    assert ids == ["S3", "S1", None, "S2"]
    assert next_ids(["S1", "S2", "S3"], 2) == ["S4", "S5"]
    assert next_ids(["S2"], 2) == ["S1", "S3"]
