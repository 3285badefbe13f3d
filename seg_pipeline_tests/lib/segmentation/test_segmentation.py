import numpy as np
import pandas as pd
import pytest

from seg_pipeline.lib.segmentation.features import feature_matrix, scale, signed_log1p
from seg_pipeline.lib.segmentation.profiles import profile_segments
from seg_pipeline.lib.segmentation.selection import choose, fit_candidate


def test_signed_log_keeps_order_of_negative_spend():
    values = signed_log1p(np.array([-100.0, -1.0, 0.0, 1.0, 100.0]))
    assert np.all(np.diff(values) > 0)
    assert values[2] == 0


def test_feature_matrix_rejects_nan():
    frame = pd.DataFrame(
        {"recency_days": [1.0, np.nan], "frequency": [1, 2], "monetary": [1.0, 2.0]}
    )
    with pytest.raises(ValueError, match="NaN"):
        feature_matrix(frame)


def _sweep(x, ks, **kwargs):
    cands = [fit_candidate(x, "kmeans", k, random_state=0) for k in ks]
    table = pd.DataFrame([c.metrics for c in cands])
    return cands, table, choose(table, **kwargs)


def test_selection_finds_the_true_number_of_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [8, 0], [0, 8], [8, 8]])
    x = np.vstack([c + rng.normal(0, 0.5, (150, 2)) for c in centres])
    cands, table, chosen = _sweep(x, range(2, 8), silhouette_tolerance=0.0)
    assert cands[chosen].n_segments == 4
    assert set(np.bincount(cands[chosen].labels)) == {150}


def test_selection_ignores_k_with_a_tiny_cluster():
    rng = np.random.default_rng(1)
    x = np.vstack(
        [rng.normal(0, 0.3, (300, 2)), rng.normal(6, 0.3, (300, 2)), [[30, 30], [31, 30]]]
    )
    cands, table, chosen = _sweep(x, range(2, 5), min_share=0.02, silhouette_tolerance=0.0)
    assert table["min_share"].min() < 0.02  # some k isolates the two outliers...
    assert table.loc[chosen, "min_share"] >= 0.02  # ...and is never chosen


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
    # The pair differs most in recency (they tie on orders); the qualifier ranks them by it.
    assert profiles.set_index("label").loc[[1, 0], "segment_name"].tolist() == [
        "Lapsed one-time buyers (most recent)",
        "Lapsed one-time buyers (2nd by recency)",
    ]


def test_segments_of_one_name_are_ranked_on_what_separates_them_without_contradiction():
    # Two groups of big spenders who differ only in spend: "top spend" and "2nd by spend",
    # never "big spenders (lower spend)".
    rfm = _rfm([(5, 12, 5000.0, 100), (5, 12, 2500.0, 100), (300, 1, 20.0, 300)])
    profiles = profile_segments(rfm, np.repeat([0, 1, 2], [100, 100, 300]))
    names = profiles.set_index("label").loc[[0, 1], "segment_name"].tolist()
    assert names == ["Active big spenders (top spend)", "Active big spenders (2nd by spend)"]


def test_scale_centres_features():
    x, _ = scale(np.array([[1.0, 10.0], [3.0, 10.0]]))
    assert np.allclose(x.mean(axis=0), 0)


@pytest.mark.parametrize(
    "method,param", [("kmeans", 3), ("gmm", 3), ("agglomerative", 3), ("hdbscan", 30)]
)
def test_every_method_recovers_three_blobs(method, param):
    from seg_pipeline.lib.segmentation.selection import fit_candidate

    rng = np.random.default_rng(3)
    centres = np.array([[0, 0], [10, 0], [0, 10]])
    x = np.vstack([c + rng.normal(0, 0.6, (200, 2)) for c in centres])
    cand = fit_candidate(x, method, param, random_state=0, fit_sample_size=400)
    assert cand.n_segments == 3
    truth = np.repeat([0, 1, 2], 200)
    # Each true blob maps onto one segment (labels are a permutation of the truth).
    for blob in range(3):
        assert len(np.unique(cand.labels[truth == blob])) == 1
    assert cand.metrics["silhouette"] > 0.7
    if method == "hdbscan":
        assert 0 <= cand.metrics["noise_share"] < 0.2


def test_choose_prefers_forecasting_power_among_good_silhouettes():
    from seg_pipeline.lib.segmentation.selection import choose

    table = pd.DataFrame(
        {
            "n_segments": [3, 4, 5, 12],
            "silhouette": [0.50, 0.45, 0.30, 0.60],
            "min_share": [0.1, 0.1, 0.1, 0.1],
            "forecast_omega2": [0.20, 0.25, 0.40, 0.50],
        }
    )
    # k=12 is over the cap; k=5's silhouette is too far from the best; k=4 forecasts best.
    assert choose(table, max_segments=10, silhouette_tolerance=0.1) == 1


def test_contenders_are_the_candidates_within_tolerance_per_feature_space():
    from seg_pipeline.lib.segmentation.selection import choose, contenders

    table = pd.DataFrame(
        {
            "features": ["rfm", "rfm", "rfm", "rfm", "behaviour", "behaviour"],
            "n_segments": [3, 4, 5, 6, 3, 4],
            "silhouette": [0.50, 0.45, 0.30, 0.48, 0.20, 0.15],
            "min_share": [0.1, 0.1, 0.1, 0.01, 0.1, 0.1],
        }
    )
    # rfm: k=5 is too far from the best, k=6 has a too small segment; behaviour has its own best.
    assert list(contenders(table, silhouette_tolerance=0.1).index) == [0, 1, 4, 5]
    # Forecasts measured for the contenders only (NaN elsewhere) choose as if all were known:
    # the far candidates could never have won.
    full = table.assign(forecast_omega2=[0.20, 0.25, 0.90, 0.95, 0.10, 0.30])
    partial = full.copy()
    partial.loc[[2, 3], "forecast_omega2"] = float("nan")
    assert choose(full, silhouette_tolerance=0.1) == choose(partial, silhouette_tolerance=0.1) == 5


def test_choose_keeps_yesterdays_model_unless_clearly_beaten():
    from seg_pipeline.lib.segmentation.selection import choose

    table = pd.DataFrame(
        {
            "features": ["rfm", "rfm", "rfm"],
            "method": ["kmeans", "kmeans", "gmm"],
            "param": ["k=4", "k=6", "k=6"],
            "n_segments": [4, 6, 6],
            "silhouette": [0.40, 0.38, 0.37],
            "min_share": [0.1, 0.1, 0.1],
            "forecast_omega2": [0.240, 0.245, 0.300],
        }
    )
    yesterday = {"features": "rfm", "method": "kmeans", "param": "k=4"}
    # k=6 K-Means is better by 0.005 (noise): keep yesterday's; GMM is better by 0.06: switch.
    assert choose(table.iloc[:2], incumbent=yesterday, margin=0.01) == 0
    assert choose(table, incumbent=yesterday, margin=0.01) == 2
