"""The implicit-feedback matrix: customers × items confidence weights, built in DuckDB.

Confidence weights (Hu, Koren & Volinsky 2008 call them c_ui) say how sure we are that a customer
likes an item. A purchase order is the strongest signal; a cart add or a view is weaker; a rating
moves the weight up or down around a neutral 3; a return takes a purchase back. The weights live
here, in one place, and come from Dagster config so they can be tuned per shop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp


@dataclass(frozen=True)
class Weights:
    """Confidence weight per event kind (per order for purchases)."""

    purchase: float = 1.0
    cart: float = 0.3
    view: float = 0.1
    rating: float = 0.5
    ret: float = 1.0


@dataclass
class InteractionMatrix:
    """Users × items weights plus the purchased mask, with the ids of rows and columns.

    ``user_ids[u]`` and ``item_ids[i]`` are the text ids of row ``u`` and column ``i``.
    Columns cover the whole item catalogue, so items nobody interacted with still have a column.
    ``days_ago`` has the same sparsity as ``weights`` and holds 1 + the days between a pair's last
    event and the cut-off, for recency-windowed popularity. Item side information (category code,
    text) and each user's segment code (-1 for none) feed the content and segment models.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    weights: sp.csr_matrix
    purchased: sp.csr_matrix
    days_ago: sp.csr_matrix | None = None
    item_categories: np.ndarray | None = None
    item_text: np.ndarray | None = None
    user_segments: np.ndarray | None = None
    segment_names: list[str] | None = None
    category_names: np.ndarray | None = None  # category_names[c] for category code c

    @property
    def shape(self) -> tuple[int, int]:
        return self.weights.shape

    def take_users(self, rows: np.ndarray) -> InteractionMatrix:
        """The same matrix restricted to ``rows`` (in that order); items are unchanged."""
        return replace(
            self,
            user_ids=self.user_ids[rows],
            weights=self.weights[rows],
            purchased=self.purchased[rows],
            days_ago=None if self.days_ago is None else self.days_ago[rows],
            user_segments=None if self.user_segments is None else self.user_segments[rows],
        )


def load_interactions(
    con: duckdb.DuckDBPyConnection,
    *,
    weights: Weights = Weights(),
    before: date | None = None,
    daily_table: str = "int_customer_item_daily",
    items_table: str = "item_catalog",
    customers: np.ndarray | None = None,
) -> InteractionMatrix:
    """Aggregate daily activity (optionally only days before ``before``) into a CSR matrix.

    Ids are mapped to row and column numbers inside DuckDB, and the result comes back as numpy
    arrays through Arrow, so no Python object is created per interaction. ``customers`` keeps
    only those customer ids (a sample for model selection at scale); items stay the catalogue.
    """
    cur = con.cursor()
    cur.register(
        "_customer_filter",
        pa.table({"customer_id": pa.array([] if customers is None else customers, pa.string())}),
    )
    cur.execute(
        f"""
        create or replace temp table _items_idx as
        select item_id, (row_number() over (order by item_id) - 1)::integer as i,
               category, concat_ws(' ', title, description, category) as text
        from {items_table}
        """
    )
    cur.execute(
        f"""
        create or replace temp table _pairs as
        select customer_id, item_id,
            greatest(0,
                $w_purchase * sum(n_orders) + $w_cart * sum(n_carts) + $w_view * sum(n_views)
                + $w_rating * coalesce((sum(rating_sum) / nullif(sum(n_ratings), 0) - 3) / 2, 0)
                - $w_return * sum(n_returns))::float as weight,
            sum(n_orders) > 0 as purchased,
            -- A scalar subquery, not max(...) over (): a window would run over every pair.
            date_diff('day', max(event_date), coalesce(
                $before, (select max(event_date) + 1 from {daily_table}))) as days_ago
        from {daily_table}
        where ($before is null or event_date < $before)
          and ($all_customers or customer_id in (select customer_id from _customer_filter))
        group by customer_id, item_id
        """,
        {
            "w_purchase": weights.purchase,
            "w_cart": weights.cart,
            "w_view": weights.view,
            "w_rating": weights.rating,
            "w_return": weights.ret,
            "before": before,
            "all_customers": customers is None,
        },
    )
    cur.execute(
        """
        create or replace temp table _users_idx as
        select customer_id, (row_number() over (order by customer_id) - 1)::integer as u
        from (select distinct customer_id from _pairs)
        """
    )
    user_ids = cur.execute("select customer_id from _users_idx order by u").fetchnumpy()[
        "customer_id"
    ]
    items = cur.execute("select item_id, category, text from _items_idx order by i").fetchnumpy()
    item_ids = items["item_id"]
    segments, segment_names = _user_segments(cur, len(user_ids))
    cols = cur.execute(
        """
        select u.u, i.i, p.weight, p.purchased, p.days_ago
        from _pairs p
        join _users_idx u using (customer_id)
        join _items_idx i using (item_id)
        """
    ).fetchnumpy()
    for table in ("_pairs", "_users_idx", "_items_idx"):
        cur.execute(f"drop table if exists {table}")
    cur.unregister("_customer_filter")
    shape = (len(user_ids), len(item_ids))
    category_codes, category_names = pd.factorize(np.asarray(items["category"], dtype=object))
    weight, purchased, days = _same_pattern_csr(
        shape,
        np.asarray(cols["u"]),
        np.asarray(cols["i"]),
        np.asarray(cols["weight"], dtype=np.float32),
        np.asarray(cols["purchased"], dtype=bool),
        np.asarray(cols["days_ago"], dtype=np.float32) + 1,
    )
    return InteractionMatrix(
        user_ids=np.asarray(user_ids, dtype=object),
        item_ids=np.asarray(item_ids, dtype=object),
        weights=weight,
        purchased=purchased,
        days_ago=days,
        item_categories=category_codes,
        item_text=np.asarray(items["text"], dtype=object),
        user_segments=segments,
        segment_names=segment_names,
        category_names=np.asarray(category_names, dtype=object),
    )


def _same_pattern_csr(shape, rows, columns, weight, purchased, days):
    """The weights, purchased and days-ago matrices of unique (row, column) pairs.

    The pairs are put in CSR order once and the three matrices share that order: building each
    from (row, column) pairs would sort the same pairs three times.
    ``weight`` keeps no explicit zeros; ``days`` keeps every pair (a purchase cancelled by its
    return still counts as a recent interaction); ``purchased`` holds ones where bought.
    """
    order = sp.csr_matrix(
        (np.arange(1, len(rows) + 1, dtype=np.int64), (rows, columns)), shape=shape
    )
    perm = order.data - 1

    def build(values: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((values[perm], order.indices.copy(), order.indptr.copy()), shape=shape)

    weights = build(weight)
    weights.eliminate_zeros()
    bought = build(purchased.astype(np.float32))
    bought.eliminate_zeros()
    return weights, bought, build(days)


def _user_segments(cur, n_users: int) -> tuple[np.ndarray, list[str]]:
    """Segment code per matrix row (-1 for none) from customer_segments, when that table exists."""
    exists = cur.execute(
        "select count(*) from information_schema.tables where table_name = 'customer_segments'"
    ).fetchall()[0][0]
    codes = np.full(n_users, -1, dtype=np.int64)
    if not exists:
        return codes, []
    names = [
        r[0]
        for r in cur.execute(
            "select distinct segment_name from customer_segments order by 1"
        ).fetchall()
    ]
    rows = cur.execute(
        """
        select u.u, s.segment_name from customer_segments s join _users_idx u using (customer_id)
        """
    ).fetchnumpy()
    lookup = {name: code for code, name in enumerate(names)}
    codes[np.asarray(rows["u"], dtype=np.int64)] = [lookup[n] for n in rows["segment_name"]]
    return codes, names


def load_heldout_purchases(
    con: duckdb.DuckDBPyConnection,
    train: InteractionMatrix,
    since: date,
    *,
    daily_table: str = "int_customer_item_daily",
) -> sp.csr_matrix:
    """Items each training customer bought on or after ``since`` and had not bought before.

    Rows and columns follow ``train``; customers or items unknown to ``train`` are left out,
    because no model trained on ``train`` could score them.
    """
    # Ids are mapped to train's rows and columns inside DuckDB (a join on Arrow tables of the
    # ids); matching a million id strings in numpy took seconds at 10M events.
    cur = con.cursor()
    cur.register(
        "_train_users",
        pa.table(
            {"customer_id": pa.array(train.user_ids, pa.string()), "u": np.arange(train.shape[0])}
        ),
    )
    cur.register(
        "_train_items",
        pa.table(
            {"item_id": pa.array(train.item_ids, pa.string()), "i": np.arange(train.shape[1])}
        ),
    )
    pairs = cur.execute(
        f"""
        select u.u, i.i
        from (select distinct customer_id, item_id from {daily_table}
              where event_date >= $since and n_orders > 0) d
        join _train_users u using (customer_id)
        join _train_items i using (item_id)
        """,
        {"since": since},
    ).fetchnumpy()
    cur.unregister("_train_users")
    cur.unregister("_train_items")
    u, i = np.asarray(pairs["u"], dtype=np.int64), np.asarray(pairs["i"], dtype=np.int64)
    relevant = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=train.shape)
    # Only items new to the customer count: re-buying a known item is not a discovery.
    relevant = relevant - relevant.multiply(train.purchased > 0)
    relevant.eliminate_zeros()
    return relevant.tocsr()
