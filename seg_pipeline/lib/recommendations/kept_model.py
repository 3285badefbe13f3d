"""The model kept between refits: the nights between re-score only customers whose history changed.

A refit night selects and fits the champion, then keeps its item side in the work database:
item factors, BM25 statistics, the scoring pool and what the catalogue looked like
(``recommendation_model`` and ``recommendation_model_items``). Every customer's list is scored by
folding their history into those item factors (``ALSRecommender.fold_in``), so a list is a
function of that customer's history and the kept model alone. A fingerprint of each customer's
history is kept too (``recommendation_customers``).

On the nights between refits, a customer whose fingerprint is unchanged keeps last night's list:
re-scoring them with the same kept model would give the same list. Re-scored are the customers
whose history changed or is new, customers with no purchase (their popularity lists follow
today's shop), and, when the catalogue gained items the model never saw, customers whose list was
short or reached scores of 0 (a new item scores 0). When the kept items' availability,
categories or text change, everyone is re-scored.

The lists themselves are kept in ``customer_recommendations``: a kept customer's rows are
copied with tonight's run id. Their reasons name an item from the customer's own history (cold
customers, whose reasons name their segment, are always re-scored).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from seg_pipeline.lib.recommendations.factor_models import ALSRecommender, item_gram
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix

MODEL_TABLE = "recommendation_model"
ITEMS_TABLE = "recommendation_model_items"
CUSTOMERS_TABLE = "recommendation_customers"

_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole 64-bit output."""
    z = x + _MIX[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX[1]
    z = (z ^ (z >> np.uint64(27))) * _MIX[2]
    return z ^ (z >> np.uint64(31))


def _row_sums(matrix, values: np.ndarray) -> np.ndarray:
    """Per-row wrapping uint64 sums of ``values`` (aligned with ``matrix.data``)."""
    totals = np.concatenate([[np.uint64(0)], np.cumsum(values, dtype=np.uint64)])
    return totals[matrix.indptr[1:]] - totals[matrix.indptr[:-1]]


def row_fingerprints(data: InteractionMatrix) -> np.ndarray:
    """A 64-bit fingerprint of each customer's history: their weights and purchased items.

    Items enter by a hash of their id, not their column, so a fingerprint does not move when new
    items shift the columns. It is an order-independent sum of mixed (item, weight) terms, so a
    changed weight, an added or a removed item changes it (collisions: about 1 in 2^64).
    """
    with np.errstate(over="ignore"):
        item_hash = pd.util.hash_array(np.asarray(data.item_ids, dtype=object))
        weights = data.weights.tocsr()
        bits = weights.data.astype(np.float32).view(np.uint32).astype(np.uint64)
        terms = _mix(item_hash[weights.indices] ^ _mix(bits))
        purchased = data.purchased.tocsr()
        bought = _mix(item_hash[purchased.indices] + _MIX[1])
        return _row_sums(weights, terms) + _row_sums(purchased, bought) * _MIX[2]


def catalogue_signature(
    trained_items: np.ndarray,
    item_ids: np.ndarray,
    available: np.ndarray,
    categories: np.ndarray | None,
    texts: np.ndarray | None = None,
) -> str:
    """What of today's catalogue a kept model's lists depend on, as a hash.

    For each item the model was trained on: whether it is still in the catalogue and available,
    which of those items share a category (the diversity cap), and its text (reasons quote the
    title of an item the customer bought). Items the model never saw are left out; they score 0
    (see the module docstring).
    """
    position = _positions(item_ids, trained_items)
    present = position >= 0
    at = np.where(present, position, 0)
    usable = present & np.asarray(available, dtype=bool)[at]
    groups = (
        pd.factorize(np.where(present, np.asarray(categories)[at], -1))[0]
        if categories is not None
        else np.zeros(len(trained_items), dtype=np.int64)
    )
    digest = hashlib.sha256()
    for part in (present, usable, groups.astype(np.int64)):
        digest.update(np.ascontiguousarray(part).tobytes())
    if texts is not None:
        kept_texts = np.where(present, np.asarray(texts, dtype=object)[at], None)
        digest.update(pd.util.hash_array(kept_texts.astype(object)).tobytes())
    return digest.hexdigest()


def config_hash(settings: dict) -> str:
    """A stable hash of the settings a kept model was selected and fitted with."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class KeptModel:
    """A fitted ALS champion's item side and the facts needed to reuse it on a later night."""

    model_run_id: str
    champion: str
    trained_as_of: date
    config_hash: str
    catalogue_signature: str
    params: dict
    item_ids: np.ndarray
    factors: np.ndarray
    item_support: np.ndarray
    idf: np.ndarray | None = None
    average_length: float | None = None
    pool: np.ndarray | None = None
    summary: dict = field(default_factory=dict)

    @classmethod
    def from_champion(cls, model: ALSRecommender, item_ids: np.ndarray, **facts) -> KeptModel:
        pool = model.pool_items_
        return cls(
            params=model.params() | {"random_state": model.random_state},
            item_ids=np.asarray(item_ids, dtype=object),
            factors=np.asarray(model.model_.item_factors, dtype=np.float32),
            item_support=np.asarray(model.item_support_, dtype=np.int64),
            idf=model.bm25_idf_,
            average_length=model.bm25_average_length_,
            pool=None if pool is None else np.asarray(item_ids, dtype=object)[pool],
            **facts,
        )

    def retrain_reason(self, as_of: date, settings_hash: str, every_days: int) -> str | None:
        """Why tonight must select and fit a new champion, or None when this one is reusable."""
        age = (as_of - self.trained_as_of).days
        if settings_hash != self.config_hash:
            return "the recommendation settings changed"
        if age < 0:
            return f"as_of {as_of} is before the kept model's {self.trained_as_of}"
        if age >= every_days:
            return f"the kept model is {age} days old (refit every {every_days})"
        return None

    def champion_for(self, item_ids: np.ndarray) -> ALSRecommender:
        """The kept model on today's item columns (zeros for items it never saw)."""
        position = _positions(self.item_ids, item_ids)

        def on_today(values: np.ndarray) -> np.ndarray:
            out = np.zeros((len(position), *values.shape[1:]), dtype=values.dtype)
            out[position >= 0] = values[position[position >= 0]]
            return out

        model = ALSRecommender.from_items(
            on_today(self.factors),
            gram=item_gram(self.factors),
            idf=None if self.idf is None else on_today(self.idf),
            average_length=self.average_length,
            item_support=on_today(self.item_support),
            **self.params,
        )
        if self.pool is not None:
            columns = _positions(item_ids, self.pool)
            model.fixed_pool = np.sort(columns[columns >= 0])
        return model

    def unseen_items(self, item_ids: np.ndarray) -> int:
        """How many of today's items the kept model never saw."""
        return int((_positions(self.item_ids, item_ids) < 0).sum())


def _positions(index_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where each of ``wanted`` sits in ``index_ids`` (-1: absent)."""
    return pd.Index(np.asarray(index_ids, dtype=object)).get_indexer(
        np.asarray(wanted, dtype=object)
    )


def save_state(
    con: duckdb.DuckDBPyConnection,
    user_ids: np.ndarray,
    fingerprints: np.ndarray,
    kept: KeptModel | None = None,
    *,
    refit: bool,
) -> None:
    """Keep tonight's history fingerprints and, on a refit night, the new model: ``kept``, or
    none when the champion cannot be kept. Call inside the transaction that writes the lists."""
    cur = con.cursor()
    cur.register(
        "_fingerprint_rows",
        pa.table({"customer_id": pa.array(user_ids, pa.string()), "fingerprint": fingerprints}),
    )
    cur.execute(f"create or replace table {CUSTOMERS_TABLE} as select * from _fingerprint_rows")
    cur.unregister("_fingerprint_rows")
    if not refit:
        return
    if kept is not None:
        save_model(con, kept)
    else:
        for table in (MODEL_TABLE, ITEMS_TABLE):
            cur.execute(f"drop table if exists {table}")


def save_model(con: duckdb.DuckDBPyConnection, kept: KeptModel) -> None:
    """Replace the kept model (call inside the transaction that publishes its lists)."""
    cur = con.cursor()
    items = pa.table(
        {
            "item_id": pa.array(kept.item_ids.astype(str), pa.string()),
            "position": np.arange(len(kept.item_ids), dtype=np.int64),
            "factors": pa.FixedSizeListArray.from_arrays(
                pa.array(kept.factors.ravel(), pa.float32()), kept.factors.shape[1]
            ),
            "support": kept.item_support,
            "idf": pa.array(kept.idf, pa.float64())
            if kept.idf is not None
            else pa.nulls(len(kept.item_ids), pa.float64()),
            "in_pool": np.isin(kept.item_ids, kept.pool)
            if kept.pool is not None
            else np.zeros(len(kept.item_ids), dtype=bool),
        }
    )
    facts = pa.table(
        {
            "model_run_id": [kept.model_run_id],
            "champion": [kept.champion],
            "trained_as_of": pa.array([kept.trained_as_of], pa.date32()),
            "config_hash": [kept.config_hash],
            "catalogue_signature": [kept.catalogue_signature],
            "params": [json.dumps(kept.params, sort_keys=True)],
            "average_length": pa.array([kept.average_length], pa.float64()),
            "has_pool": [kept.pool is not None],
            "summary": [json.dumps(kept.summary, sort_keys=True, default=str)],
        }
    )
    cur.register("_kept_items", items)
    cur.register("_kept_facts", facts)
    cur.execute(f"create or replace table {ITEMS_TABLE} as select * from _kept_items")
    cur.execute(f"create or replace table {MODEL_TABLE} as select * from _kept_facts")
    cur.unregister("_kept_items")
    cur.unregister("_kept_facts")


def load_model(con: duckdb.DuckDBPyConnection) -> KeptModel | None:
    """The kept model, or None when this database has none."""
    cur = con.cursor()
    exists = cur.execute(
        "select count(*) from information_schema.tables where table_name in ($a, $b)",
        {"a": MODEL_TABLE, "b": ITEMS_TABLE},
    ).fetchall()[0][0]
    if exists < 2:
        return None
    facts = cur.sql(f"select * from {MODEL_TABLE}").to_arrow_table().to_pylist()
    if len(facts) != 1:
        return None
    (row,) = facts
    items = cur.sql(f"select * from {ITEMS_TABLE} order by position").to_arrow_table()
    width = items.schema.field("factors").type.list_size
    factors = items.column("factors").combine_chunks().flatten().to_numpy()
    item_ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
    idf = items.column("idf")
    in_pool = items.column("in_pool").to_numpy()
    return KeptModel(
        model_run_id=row["model_run_id"],
        champion=row["champion"],
        trained_as_of=row["trained_as_of"],
        config_hash=row["config_hash"],
        catalogue_signature=row["catalogue_signature"],
        params=json.loads(row["params"]),
        item_ids=item_ids,
        factors=factors.reshape(-1, width).astype(np.float32),
        item_support=items.column("support").to_numpy().astype(np.int64),
        idf=None if idf.null_count else idf.to_numpy().astype(np.float64),
        average_length=row["average_length"],
        pool=item_ids[in_pool] if row["has_pool"] else None,
        summary=json.loads(row["summary"]),
    )


def changed_customers(
    con: duckdb.DuckDBPyConnection,
    user_ids: np.ndarray,
    fingerprints: np.ndarray,
    n: int,
    new_items: bool,
) -> np.ndarray:
    """Which customers' kept lists cannot be reused (see the module docstring), as a mask.

    ``fingerprints`` are tonight's ``row_fingerprints`` of ``user_ids``; ``new_items`` says
    whether the catalogue holds items the kept model never saw.
    """
    cur = con.cursor()
    cur.register(
        "_fingerprints",
        pa.table(
            {
                "u": np.arange(len(user_ids)),
                "customer_id": pa.array(user_ids, pa.string()),
                "fingerprint": fingerprints,
            }
        ),
    )
    rows = cur.execute(
        f"""
        with listed as (
            select customer_id, count(*) as n_rows, min(score) as lowest
            from customer_recommendations group by customer_id
        )
        select f.u
        from _fingerprints f
        left join {CUSTOMERS_TABLE} c using (customer_id)
        left join listed l using (customer_id)
        where c.fingerprint is distinct from f.fingerprint
           or l.customer_id is null
           -- a new item scores 0: it can enter a list that was short or reached 0
           or ($new_items and (l.n_rows < $n or l.lowest <= 0))
        """,
        {"n": n, "new_items": new_items},
    ).fetchnumpy()["u"]
    cur.unregister("_fingerprints")
    changed = np.zeros(len(user_ids), dtype=bool)
    changed[np.asarray(rows, dtype=np.int64)] = True
    return changed
