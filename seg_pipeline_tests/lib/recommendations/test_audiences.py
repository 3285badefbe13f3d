"""Audiences: the customers to tell about an item or a category, and their evaluation."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from seg_pipeline.lib.recommendations import audiences as aud
from seg_pipeline.lib.recommendations.blends import HybridRecommender
from seg_pipeline.lib.recommendations.content import ContentRecommender
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
from seg_pipeline.lib.recommendations.item_models import EASERecommender, RP3BetaRecommender
from seg_pipeline.lib.recommendations.neighbours import ItemKNNRecommender
from seg_pipeline.lib.recommendations.popularity import PopularityRecommender
from seg_pipeline_tests.lib.recommendations.test_models import N_USERS, _data, _two_taste_matrix

# Items 0-5 are category "a", items 6-11 category "b" (the two tastes of _two_taste_matrix).
CATEGORIES = dict(
    item_categories=np.repeat([0, 1], 6),
    category_names=np.array(["a", "b"], dtype=object),
    item_text=np.array([f"{'red' if i < 6 else 'blue'} thing {i}" for i in range(12)], object),
)


def _shop():
    return _data(_two_taste_matrix(), **CATEGORIES)


@pytest.mark.parametrize(
    "model",
    [
        ALSRecommender(factors=2, iterations=10, random_state=0),
        EASERecommender(l2=1.0),
        RP3BetaRecommender(alpha=1.0, beta=0.5, k=10),
        ItemKNNRecommender(weighting="cosine", k=10),
        ContentRecommender(k=5),
        HybridRecommender(
            components=[(EASERecommender(l2=1.0), 1.0), (PopularityRecommender(), 0.3)]
        ),
    ],
)
def test_group_scores_are_the_item_scores_summed_over_each_group(model):
    """The fast path (the groups folded into the item side) scores as the model does."""
    data = _shop()
    model.fit(data)
    groups = sp.csr_matrix(
        (np.ones(5, np.float32), ([3, 7, 0, 1, 2], [0, 1, 2, 2, 2])), shape=(12, 3)
    )
    users = np.arange(5, 30)
    full = np.asarray(model.score(users), dtype=np.float64)
    expected = np.column_stack([full[:, 3], full[:, 7], full[:, [0, 1, 2]].sum(axis=1)])
    assert np.allclose(model.group_scorer(groups)(users), expected, rtol=1e-4, atol=1e-5)


def test_item_audience_ranks_the_items_taste_group_first_and_leaves_out_buyers_and_opt_outs():
    data = _shop()
    model = EASERecommender(l2=1.0).fit(data)
    left_out = np.zeros(N_USERS, dtype=bool)
    left_out[[2, 25]] = True
    item = 3  # a category "a" item, bought by some of users 0-19
    built = aud.build_audiences(
        model, data, "item", np.array([item]), 10, mode="model", left_out=left_out
    )
    members = built.users[0][built.users[0] >= 0]
    buyers = set(np.flatnonzero(data.purchased[:, item].toarray().ravel()))
    prospects = [u for u in range(20) if u not in buyers and u != 2]
    assert set(members[: len(prospects)]) == set(prospects)  # the taste group comes first
    assert not set(members) & buyers and 2 not in members and 25 not in members
    scores = built.scores[0][: len(members)]
    assert (np.diff(scores) <= 0).all()
    # The reason names a bought item of the same taste group.
    because = built.because[0][: len(prospects)]
    assert ((because >= 0) & (because < 6)).all()
    assert np.asarray(data.purchased[members[: len(prospects)], because]).all()


def test_category_audience_keeps_the_categorys_buyers_and_counts_what_they_bought():
    data = _shop()
    built = aud.build_audiences(
        EASERecommender(l2=1.0).fit(data), data, "category", np.array([1]), 20, mode="baseline"
    )
    assert set(built.users[0]) == set(range(20, 40))
    assert (built.owned[0] == 4).all()  # every user bought four items of their group
    assert built.model == aud.BASELINE


def test_a_popularity_champion_ranks_audiences_by_the_baseline():
    data = _shop()
    built = aud.build_audiences(
        PopularityRecommender().fit(data), data, "item", np.array([8]), 5, mode="model"
    )
    assert built.model == aud.BASELINE
    assert set(built.users[0]) <= set(range(20, 40))


def test_ties_go_to_the_lower_customer_row():
    data = _data(sp.csr_matrix(np.eye(5, 3, dtype=np.float32)))  # no categories: one group
    built = aud.build_audiences(PopularityRecommender().fit(data), data, "item", np.array([0]), 4)
    # User 0 bought item 0 (left out), users 1 and 2 one other item each, users 3-4 nothing.
    assert built.users[0].tolist() == [1, 2, 3, 4]


def test_evaluation_counts_first_purchases_inside_the_audience():
    data = _shop()
    # After the split: users 0 and 1 buy item 5 for the first time, user 30 buys item 6.
    truth = np.zeros((N_USERS, 12), dtype=np.float32)
    truth[[0, 1], 5] = 1
    truth[30, 6] = 1
    truth = sp.csr_matrix(truth - truth * data.purchased.toarray())
    settings = aud.AudienceSettings(size=10, items=("i05", "i06"), categories=("a", "b"))
    model = EASERecommender(l2=1.0).fit(data)
    table = aud.evaluate_audiences(model, data, truth, settings)
    assert set(table["mode"]) == set(aud.MODES)
    buyers = table.groupby(["kind", "target"])["buyers"].first().to_dict()
    first_buyers = {"i05": truth[:, 5].nnz, "i06": truth[:, 6].nnz}
    assert {k: v for (kind, k), v in buyers.items() if kind == "item"} == first_buyers
    for row in table.itertuples():
        item = 5 if row.target in ("i05", "a") else 6
        built = aud.build_audiences(
            model,
            data,
            row.kind,
            np.array([item if row.kind == "item" else item // 6]),
            10,
            mode=row.mode,
        )
        who = set(truth[:, item].nonzero()[0]) if row.kind == "item" else None
        if who is not None:
            assert row.hits == len(who & set(built.users[0]))
        assert 0 <= row.hits <= row.buyers


def test_hit_rates_pool_targets_and_the_tie_goes_to_the_baseline():
    table = pd.DataFrame(
        {
            "kind": ["item"] * 6,
            "target": ["x", "y"] * 3,
            "mode": ["model", "model", "blend", "blend", "baseline", "baseline"],
            "model": ["als", "als", "als+b", "als+b", "b", "b"],
            "audience_size": 10,
            "buyers": [10, 30] * 3,
            "hits": [5, 15, 4, 12, 8, 12],
        }
    )
    rates = aud.hit_rates(table).set_index("mode")
    assert rates.loc["model", "hit_rate"] == pytest.approx(20 / 40)
    assert rates.loc["baseline", "hit_rate"] == pytest.approx(20 / 40)
    assert rates.loc["blend", "lift"] == pytest.approx((16 / 40) / (20 / 40))
    assert aud.choose_modes(rates.reset_index()) == {"item": "baseline"}
    table.loc[0, "hits"] = 6
    assert aud.choose_modes(aud.hit_rates(table)) == {"item": "model"}


def test_default_targets_are_the_most_bought_recently():
    matrix = np.zeros((6, 4), dtype=np.float32)
    matrix[:, 2] = 1  # everyone bought item 2
    matrix[:3, 0] = 1
    days = sp.csr_matrix(np.where(matrix > 0, 5.0, 0.0).astype(np.float32))
    days[:, 0] = days[:, 0].multiply(100)  # item 0 was bought long ago
    data = _data(sp.csr_matrix(matrix), days_ago=sp.csr_matrix(days))
    settings = aud.AudienceSettings(top_items=2, recent_days=30)
    assert aud.target_items(data, settings).tolist() == [2]
    assert aud.target_items(data, aud.AudienceSettings(items=("i00", "zz"))).tolist() == [0]


def test_written_audiences_never_hold_an_opted_out_customer_and_say_why(tmp_path):
    import duckdb

    from seg_pipeline.lib.recommendations import tables

    data = _shop()
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    con.execute(
        "create table item_catalog as select 'i' || lpad(i::varchar, 2, '0') as item_id, "
        "'Thing ' || i as title, if(i < 6, 'a', 'b') as category from range(12) t(i)"
    )
    con.execute("create table recommendation_opt_outs as select 'u03' as customer_id")
    left_out = tables.opted_out_rows(con, data)
    assert left_out.tolist() == [u == 3 for u in range(N_USERS)]
    model = EASERecommender(l2=1.0).fit(data)
    built = tuple(
        aud.build_audiences(model, data, kind, np.array([0]), 15, mode=mode, left_out=left_out)
        for kind, mode in (("item", "model"), ("category", "baseline"))
    )
    rates = aud.hit_rates(
        aud.evaluate_audiences(model, data, sp.csr_matrix(data.shape), aud.AudienceSettings())
    )
    counts = tables.write_audiences(
        con,
        built,
        data,
        rates,
        as_of="2025-01-02",
        split="2025-01-01",
        model_run_id="m",
        run_id="r",
    )
    assert counts["item_audiences"] == 15 and counts["category_audiences"] == 15
    assert counts["audience_metrics"] == len(rates)
    for table in ("item_audiences", "category_audiences"):
        ids = {r[0] for r in con.execute(f"select customer_id from {table}").fetchall()}
        assert "u03" not in ids
    reasons = con.execute(
        "select distinct reason from item_audiences where because_item_id is not null"
    ).fetchall()
    assert reasons and all(r[0].startswith("Bought Thing ") for r in reasons)
    category_reasons = {
        r[0] for r in con.execute("select reason from category_audiences").fetchall()
    }
    assert category_reasons == {"Bought 4 items in a"}
