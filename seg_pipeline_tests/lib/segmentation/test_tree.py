"""Tree segments on a tiny shop whose answer is known: the rules, their words, the assignment."""

import numpy as np
import pandas as pd
import pytest

from seg_pipeline.lib.segmentation.forecast import forecast_power
from seg_pipeline.lib.segmentation.nightly import segment_customers
from seg_pipeline.lib.segmentation.stored import StoredModel
from seg_pipeline.lib.segmentation.sweep import SweepSettings
from seg_pipeline.lib.segmentation.tree import (
    RuleSegmenter,
    apply_rules,
    cross_fitted_power,
    describe,
    fit_tree,
    leaf_rules,
)

FEATURES = ("recency_days", "frequency", "monetary")


def _shop(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Customers whose next-period spend is set by two thresholds: bought within 30 days, and
    5 or more orders. Spend so far is noise."""
    rng = np.random.default_rng(seed)
    recency = np.concatenate([[30, 31], rng.integers(1, 300, n - 2)])
    frequency = np.concatenate([[4, 5], rng.integers(1, 20, n - 2)])
    recent, loyal = recency <= 30, frequency >= 5
    nxt = np.where(recent & loyal, 800.0, np.where(recent, 120.0, 0.0))
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(n)],
            "recency_days": recency.astype(float),
            "frequency": frequency.astype(float),
            "monetary": rng.lognormal(5, 1, n),
            "next_period_value": nxt * rng.uniform(0.9, 1.1, n),
            "rfm_segment": "any",
            "rfm_cell": "111",
        }
    )


def _tree(shop: pd.DataFrame, k: int = 3):
    y = np.log1p(shop["next_period_value"].to_numpy())
    values = shop[list(FEATURES)].to_numpy()
    return fit_tree(values, y, k, min_share=0.02, random_state=0), values, y


def test_the_tree_finds_the_two_thresholds_and_says_them_in_words():
    tree, _, _ = _tree(_shop())
    texts = sorted(describe(rule) for rule in leaf_rules(tree, FEATURES))
    assert texts == [
        "last ordered over 30 days ago",
        "last ordered within 30 days and 5+ orders",
        "last ordered within 30 days and at most 4 orders",
    ]


def test_every_customer_satisfies_exactly_one_rule_and_a_dropped_leaf_is_reported():
    shop = _shop()
    tree, values, _ = _tree(shop, k=4)
    rules = leaf_rules(tree, FEATURES)
    labels = apply_rules(shop, rules)
    # The rules are the tree's leaves: the same partition as the tree's own apply.
    leaves = tree.apply(values)
    assert len(set(zip(labels, leaves, strict=True))) == len(rules) == len(np.unique(leaves))
    with pytest.raises(ValueError, match="satisfy no rule"):
        apply_rules(shop, rules[1:])
    assert (apply_rules(shop, rules[1:], strict=False) == -1).sum() == (labels == 0).sum()


def test_forecast_power_is_cross_fitted_so_noise_does_not_flatter_the_tree():
    shop = _shop()
    _, values, y = _tree(shop)
    eta, omega = cross_fitted_power(values, y, 3, min_share=0.02, random_state=0)
    assert eta > 0.95 and omega > 0.95
    # Pure noise: fitted and measured on the same customers a tree seems to explain some of
    # it; fitted on one half and measured on the other it explains next to nothing.
    noise = np.random.default_rng(1).normal(size=len(y))
    in_sample = fit_tree(values, noise, 10, min_share=0.02, random_state=0).apply(values)
    seeming = forecast_power(in_sample, noise)[1]
    eta, omega = cross_fitted_power(values, noise, 10, min_share=0.02, random_state=0)
    assert seeming > 0.05 and omega < seeming / 2 and omega < 0.03


def test_the_registered_rule_segmenter_gives_the_segments_the_rules_give():
    shop = _shop()
    tree, values, _ = _tree(shop)
    rules = leaf_rules(tree, FEATURES)
    ids = ["S1", "S2", "S3"]
    model = RuleSegmenter(features=list(FEATURES), rules=rules, segment_ids=ids)
    assert model.predict(values).tolist() == [ids[i] for i in apply_rules(shop, rules)]


def test_a_tree_night_names_segments_by_their_rules_and_keeps_them_between_refits():
    shop = _shop()
    settings = SweepSettings(methods=("tree",), features=("rfm",), k_min=3, k_max=3)
    night = segment_customers(shop, shop, None, settings, as_of="2025-06-30")
    names = set(night.profiles["segment_name"])
    assert names == {
        "Last ordered over 30 days ago",
        "Last ordered within 30 days and 5+ orders",
        "Last ordered within 30 days and at most 4 orders",
    }
    merged = night.segments.merge(night.profiles, on="segment_id")
    assert (merged["reason"] == "rule: " + merged["rule"]).all()
    assert (merged["segment_name_x"].str.lower() == merged["rule"]).all()
    # What they did next is in the description: the loyal recent ones all bought again.
    loyal = night.profiles.set_index("segment_name").loc[
        "Last ordered within 30 days and 5+ orders", "description"
    ]
    assert "100% bought again" in loyal
    # The next night assigns by the stored rules: a day later, customers at exactly 30 days
    # cross the recency threshold and nobody else moves.
    stored = StoredModel.from_frame(night.centroids)
    assert stored.rules is not None
    later = shop.assign(recency_days=shop["recency_days"] + 1)
    tomorrow = segment_customers(later, shop, night.centroids, settings, as_of="2025-07-01")
    assert tomorrow.sweep.method == "assigned"
    moved = night.segments["segment_id"] != tomorrow.segments["segment_id"]
    assert (shop.loc[moved, "recency_days"] == 30).all()
    assert moved.sum() == (shop["recency_days"] == 30).sum() > 0


def test_the_rule_segmenter_survives_the_skops_round_trip_that_mlflow_logs_it_with():
    import skops.io as sio

    from seg_pipeline.lib.segmentation.nightly import SEGMENTER_TRUSTED_TYPES

    shop = _shop()
    tree, values, _ = _tree(shop)
    model = RuleSegmenter(
        features=list(FEATURES), rules=leaf_rules(tree, FEATURES), segment_ids=["S1", "S2", "S3"]
    )
    loaded = sio.loads(sio.dumps(model), trusted=SEGMENTER_TRUSTED_TYPES)
    assert loaded.predict(values).tolist() == model.predict(values).tolist()


def test_a_shop_without_a_holdout_snapshot_sweeps_clusters_alone_without_warnings():
    shop = _shop()
    warnings = []
    settings = SweepSettings(methods=("kmeans", "tree"), features=("rfm",), k_min=3, k_max=4)
    night = segment_customers(
        shop, shop.iloc[:0], None, settings, as_of="2025-06-30", warn=warnings.append
    )
    assert night.sweep.method == "kmeans" and warnings == []
    assert set(night.sweep.table["method"]) == {"kmeans"}


def test_rules_read_as_words_with_ranges_money_and_single_orders():
    rule = [
        ("recency_days", ">", 24.5),
        ("recency_days", "<=", 92.5),
        ("frequency", "<=", 1.5),
        ("monetary", ">", 36.7),
    ]
    assert describe(rule) == "last ordered 25 to 92 days ago and one order and spent over 37"
    assert describe([("monetary", "<=", 1234.4)], currency="£") == "spent up to £1,234"
    assert describe([]) == "all customers"
