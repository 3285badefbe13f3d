"""A new item nobody bought yet takes the last slot of the lists of customers whose history
reads like it."""

import numpy as np
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.lists import build_lists
from seg_pipeline.lib.recommendations.new_items import NewItems, NewItemSettings
from seg_pipeline.lib.recommendations.popularity import PopularityRecommender
from seg_pipeline.lib.recommendations.reasons import Reason
from seg_pipeline_tests.lib.recommendations.test_models import _data

TEXTS = np.array(
    [
        "red enamel coffee mug",
        "blue garden hose reel",
        "wooden toy train set",
        "glass vase tall",
        "red enamel coffee mug large",  # new: like item 0
        "solar garden lantern",  # new: nothing like it was bought by customer 0
    ],
    dtype=object,
)


def _shop():
    bought = np.zeros((3, 6), dtype=np.float32)
    bought[0, [0, 3]] = 1  # the mug and the vase
    bought[1, 2] = 1  # the train
    bought[2, [1, 2, 3]] = 1
    categories = np.array([0, 1, 0, 1, 0, 1])  # the mugs and the train in one, the rest in another
    return _data(sp.csr_matrix(bought), item_text=TEXTS, item_categories=categories)


def test_a_new_item_like_a_bought_one_takes_the_last_slot_and_says_why():
    data = _shop()
    new = NewItems.build(TEXTS, np.array([4, 5]), NewItemSettings(min_similarity=0.2))
    # Popularity would list items 2 and 1 for customer 0 (items 4 and 5 sold nothing).
    lists = build_lists(PopularityRecommender().fit(data), data, 2, new_items=new)
    first = lists.users == 0
    last = first & (lists.ranks == lists.ranks[first].max())
    assert lists.items[last].tolist() == [4]
    assert lists.reason[last].tolist() == [Reason.NEW]
    assert lists.because[last].tolist() == [0] and lists.bought[last].all()
    # Customer 1's train is unlike either new item: their list is the plain popularity list.
    assert not (lists.reason[lists.users == 1] == Reason.NEW).any()
    # Only one slot per list goes to a new item.
    assert (np.bincount(lists.users[lists.reason == Reason.NEW], minlength=3) <= 1).all()


def test_no_slot_below_the_similarity_or_over_the_category_cap():
    data = _shop()
    strict = NewItems.build(TEXTS, np.array([4, 5]), NewItemSettings(min_similarity=0.99))
    lists = build_lists(PopularityRecommender().fit(data), data, 2, new_items=strict)
    assert not (lists.reason == Reason.NEW).any()
    new = NewItems.build(TEXTS, np.array([4, 5]), NewItemSettings(min_similarity=0.2))
    capped = build_lists(
        PopularityRecommender().fit(data), data, 2, new_items=new, max_per_category=1
    )
    # Customer 0's capped list is the train (category 0) and the hose (category 1); the new mug
    # (category 0) in the hose's slot would make two of category 0.
    assert not (capped.reason == Reason.NEW).any()
    assert NewItems.build(TEXTS, np.array([], dtype=np.int64), NewItemSettings()) is None
