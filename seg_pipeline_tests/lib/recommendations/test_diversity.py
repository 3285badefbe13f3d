"""MMR re-ranking, intra-list diversity and the choice of strength on validation."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from seg_pipeline.lib.recommendations import diversity as div
from seg_pipeline.lib.recommendations.evaluation import evaluate
from seg_pipeline.lib.recommendations.item_models import EASERecommender
from seg_pipeline.lib.recommendations.lists import build_lists
from seg_pipeline.lib.recommendations.metrics import ranking_metrics
from seg_pipeline.lib.recommendations.popularity import PopularityRecommender
from seg_pipeline_tests.lib.recommendations.test_models import N_USERS, _data, _two_taste_matrix

# Items 0 and 1 are near-duplicates, item 2 points elsewhere, item 3 is between.
VECTORS = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0], [0.707, 0.707]], dtype=np.float32)


def test_strength_zero_keeps_the_champions_order():
    items = np.array([[0, 1, 2, 3]])
    scores = np.array([[4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    chosen, chosen_scores = div.mmr_rerank(items, scores, VECTORS, 3, 0.0)
    assert chosen.tolist() == [[0, 1, 2]]
    assert chosen_scores.tolist() == [[4.0, 3.0, 2.0]]


def test_a_near_duplicate_gives_way_to_a_different_item():
    items = np.array([[0, 1, 2, 3]])
    scores = np.array([[1.0, 0.95, 0.6, 0.0]], dtype=np.float32)
    chosen, _ = div.mmr_rerank(items, scores, VECTORS, 3, 0.5)
    # Relevance 1, 0.875, 0.5, 0: item 1 is worth 0.4375 - 0.5*0.99 < item 2's 0.25 - 0.
    assert chosen[0, :2].tolist() == [0, 2]


def test_the_category_cap_holds_while_mmr_chooses():
    items = np.array([[0, 1, 2, 3, -1]])
    scores = np.array([[4.0, 3.0, 2.0, 1.0, -np.inf]], dtype=np.float32)
    categories = np.array([0, 0, 0, 1])
    chosen, _ = div.mmr_rerank(
        items, scores, VECTORS, 4, 0.2, categories=categories, max_per_category=2
    )
    picked = chosen[0][chosen[0] >= 0]
    assert np.bincount(categories[picked]).max() <= 2
    assert len(picked) == 3 and (chosen[0][3:] == -1).all()


def test_intra_list_diversity_is_one_minus_the_mean_pairwise_cosine():
    recs = np.array([[0, 2, -1], [0, 1, 3]])
    cosines = VECTORS @ VECTORS.T
    expected_second = 1 - np.mean([cosines[0, 1], cosines[0, 3], cosines[1, 3]])
    expected = np.mean([1 - cosines[0, 2], expected_second])
    assert div.intra_list_diversity(recs, VECTORS) == pytest.approx(expected, rel=1e-5)


def test_the_strongest_setting_within_the_ndcg_cost_is_chosen():
    trials = pd.DataFrame({"strength": [0.0, 0.1, 0.2, 0.3], "ndcg": [0.2, 0.199, 0.197, 0.18]})
    assert div.choose_strength(trials, 0.02) == 0.2
    assert div.choose_strength(trials, 0.001) == 0.0


def test_svd_vectors_put_items_bought_by_the_same_customers_together():
    vectors = div.item_vectors(_two_taste_matrix(), dims=2)
    cosines = vectors @ vectors.T
    same = cosines[:6, :6][~np.eye(6, dtype=bool)].mean()
    across = cosines[:6, 6:].mean()
    assert same > 0.5 > across


def _three_taste_matrix(seed=0, users=60):
    """User u buys 3 of the 8 items of taste u % 3 (items 8t..8t+7): the champion's list for a
    customer is all of their own taste, which is what diversity re-ranking should open up."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((users, 24), dtype=np.float32)
    for u in range(users):
        dense[u, rng.choice(np.arange(8) + 8 * (u % 3), size=3, replace=False)] = 1.0
    return sp.csr_matrix(dense)


def test_diverse_lists_are_full_and_more_diverse_at_a_small_accuracy_cost():
    rng = np.random.default_rng(3)
    matrix = _three_taste_matrix()
    users = matrix.shape[0]
    data = _data(matrix, item_categories=np.tile([0, 1, 2], 8))
    model = EASERecommender(l2=1.0).fit(data)
    vectors = div.item_vectors(matrix, dims=4)
    plain = build_lists(model, data, 4, max_per_category=2)
    diverse = build_lists(
        model, data, 4, max_per_category=2, diversity=0.5, similarity_vectors=vectors
    )
    for lists in (plain, diverse):
        counts = np.bincount(lists.users, minlength=users)
        assert (counts == 4).all()
        per_user = pd.DataFrame({"u": lists.users, "c": data.item_categories[lists.items]})
        assert per_user.groupby(["u", "c"]).size().max() <= 2
        assert not np.asarray(matrix[lists.users, lists.items]).any()

    def ild(lists):
        recs = np.full((users, 4), -1)
        recs[lists.users, lists.ranks - 1] = lists.items
        return div.intra_list_diversity(recs, vectors)

    assert ild(diverse) > ild(plain)
    truth = sp.csr_matrix((rng.random(matrix.shape) < 0.2) & (matrix.toarray() == 0))
    trials = div.diversity_trials(
        model, data.purchased, truth, np.arange(users), vectors, 4, strengths=(0.0, 0.5)
    )
    # Strength 0 is the champion's own list, as the candidate evaluation scored it.
    own = model.recommend(np.arange(users), data.purchased, 4).items
    assert trials["ndcg"].iloc[0] == pytest.approx(ranking_metrics(own, truth, 4)["ndcg"])
    assert trials["ild"].iloc[0] == pytest.approx(div.intra_list_diversity(own, vectors))
    assert set(trials.columns) >= {"ndcg", "coverage", "diversity", "novelty", "ild"}


def test_a_catalogue_in_one_category_is_not_capped_and_its_lists_stay_full():
    matrix = _two_taste_matrix()
    data = _data(matrix, item_categories=np.zeros(12, dtype=int))  # all "uncategorised"
    model = EASERecommender(l2=1.0).fit(data)
    vectors = div.item_vectors(matrix, dims=4)
    lists = build_lists(
        model, data, 4, max_per_category=2, diversity=0.5, similarity_vectors=vectors
    )
    assert (np.bincount(lists.users, minlength=N_USERS) == 4).all()
    truth = sp.csr_matrix(np.ones((N_USERS, 12), dtype=np.float32) - matrix.toarray())
    trials = div.diversity_trials(
        model,
        data.purchased,
        truth,
        np.arange(N_USERS),
        vectors,
        4,
        categories=data.item_categories,
        max_per_category=2,
        strengths=(0.0,),
    )
    own = model.recommend(np.arange(N_USERS), data.purchased, 4).items
    assert trials["ndcg"].iloc[0] == pytest.approx(ranking_metrics(own, truth, 4)["ndcg"])


def test_the_validation_trials_score_the_customers_the_evaluation_sampled():
    """With fewer evaluated customers allowed than bought in the window, strength 0 of the
    trials is the champion's own validation NDCG: both drew the same customers."""
    rng = np.random.default_rng(4)
    matrix = _three_taste_matrix()
    data = _data(matrix, item_categories=np.tile([0, 1, 2], 8))
    truth = sp.csr_matrix((rng.random(matrix.shape) < 0.2) & (matrix.toarray() == 0))
    evaluation = evaluate(
        [PopularityRecommender(), EASERecommender(l2=1.0)],
        data,
        truth,
        k=4,
        hybrids=False,
        max_users=17,
        random_state=5,
    )
    trials = div.validation_trials(
        evaluation.fitted_champion,
        data,
        truth,
        4,
        blocked=None,
        max_per_category=None,
        max_users=17,
        random_state=5,
    )
    champion = evaluation.table.loc[evaluation.table["is_champion"]].iloc[0]
    assert champion["n_users"] == 17
    assert trials["ndcg"].iloc[0] == pytest.approx(champion["ndcg"])
