import numpy as np
import pandas as pd
import pytest

from seg_pipeline.lib.segmentation.features import rfm_matrix, scale, signed_log1p
from seg_pipeline.lib.segmentation.profiles import profile_segments
from seg_pipeline.lib.segmentation.selection import select_kmeans


def test_signed_log_keeps_order_of_negative_spend():
    values = signed_log1p(np.array([-100.0, -1.0, 0.0, 1.0, 100.0]))
    assert np.all(np.diff(values) > 0)
    assert values[2] == 0


def test_rfm_matrix_rejects_nan():
    frame = pd.DataFrame(
        {"recency_days": [1.0, np.nan], "frequency": [1, 2], "monetary": [1.0, 2.0]}
    )
    with pytest.raises(ValueError, match="NaN"):
        rfm_matrix(frame)


def test_selection_finds_the_true_number_of_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [8, 0], [0, 8], [8, 8]])
    x = np.vstack([c + rng.normal(0, 0.5, (150, 2)) for c in centres])
    selection = select_kmeans(x, range(2, 8), random_state=0)
    assert selection.best_k == 4
    assert selection.candidates.loc[selection.candidates["chosen"], "k"].tolist() == [4]
    assert set(np.bincount(selection.labels)) == {150}


def test_selection_ignores_k_with_a_tiny_cluster():
    rng = np.random.default_rng(1)
    x = np.vstack(
        [rng.normal(0, 0.3, (300, 2)), rng.normal(6, 0.3, (300, 2)), [[30, 30], [31, 30]]]
    )
    selection = select_kmeans(x, range(2, 5), random_state=0, min_share=0.02)
    assert selection.candidates.set_index("k").loc[selection.best_k, "min_share"] >= 0.02


def _rfm(groups):
    rows = []
    for recency, frequency, monetary, n in groups:
        rows += [(recency, frequency, monetary)] * n
    return pd.DataFrame(rows, columns=["recency_days", "frequency", "monetary"])


def test_profiles_name_segments_from_behaviour():
    rfm = _rfm([(5, 12, 2000.0, 50), (300, 1, 20.0, 80), (40, 4, 300.0, 70)])
    labels = np.repeat([2, 0, 1], [50, 80, 70])
    profiles = profile_segments(rfm, labels)
    by_label = profiles.set_index("label")
    assert by_label.loc[2, "segment_name"] == "Active big spenders"
    assert by_label.loc[0, "segment_name"] == "Lapsed one-time buyers"
    assert profiles["segment_id"].tolist() == ["S1", "S2", "S3"]  # ordered by median spend
    assert by_label.loc[2, "segment_id"] == "S1"
    assert by_label.loc[0, "n_customers"] == 80
    assert by_label.loc[0, "share"] == pytest.approx(0.4)
    assert "80 customers (40% of 200)" in by_label.loc[0, "description"]


def test_profile_names_are_unique():
    rfm = _rfm([(300, 1, 20.0, 50), (290, 1, 22.0, 50), (5, 12, 2000.0, 300)])
    profiles = profile_segments(rfm, np.repeat([0, 1, 2], [50, 50, 300]))
    assert profiles["segment_name"].is_unique
    assert profiles.set_index("label").loc[[1, 0], "segment_name"].tolist() == [
        "Lapsed one-time buyers (higher spend)",
        "Lapsed one-time buyers (lower spend)",
    ]


def test_scale_centres_features():
    x, _ = scale(np.array([[1.0, 10.0], [3.0, 10.0]]))
    assert np.allclose(x.mean(axis=0), 0)
