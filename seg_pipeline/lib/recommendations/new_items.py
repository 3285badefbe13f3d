"""New items get a chance: a slot for an item first seen in the last days, by its text.

A collaborative model cannot recommend an item nobody has bought yet, and a popularity list
ranks it last. So each list keeps one slot (the last, by default) for the new item (first seen in
the last ``days`` days, or in the catalogue but never in an event) whose title and description
read most like what the customer bought or looked at (TF-IDF cosine, as the content model), when
that similarity reaches ``min_similarity``. The reason names the history item it resembles and
says the item is new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from seg_pipeline.lib.recommendations.popularity import binary_matrix
from seg_pipeline.lib.recommendations.reasons import Reason, explain_by_similarity


@dataclass(frozen=True)
class NewItemSettings:
    """Which items count as new and when one takes a list's slot; ``days`` None: never."""

    days: int | None = 14
    min_similarity: float = 0.2
    neighbours: int = 20


def new_item_columns(
    con: duckdb.DuckDBPyConnection,
    item_ids: np.ndarray,
    as_of: date,
    days: int | None,
) -> np.ndarray:
    """Columns of the available items first seen within ``days`` of ``as_of`` (or never seen in
    an event), in ``item_ids`` order; none when the catalogue has no first-seen dates."""
    has_dates = con.execute(
        "select count(*) from information_schema.columns "
        "where table_name = 'item_catalog' and column_name = 'first_seen_at'"
    ).fetchall()[0][0]
    if days is None or not has_dates:
        return np.array([], dtype=np.int64)
    cur = con.cursor()
    cur.register("_new_ids", pa.table({"item_id": item_ids, "i": np.arange(len(item_ids))}))
    found = cur.execute(
        """
        select i.i from item_catalog c join _new_ids i using (item_id)
        where coalesce(c.available, true)
          and (c.first_seen_at is null or c.first_seen_at >= $since)
        order by 1
        """,
        {"since": as_of - timedelta(days=days)},
    ).fetchnumpy()["i"]
    cur.close()
    return np.asarray(found, dtype=np.int64)


def tonights_new_items(
    con: duckdb.DuckDBPyConnection, full, as_of: date, settings: NewItemSettings
) -> NewItems | None:
    """The new items that may take a list's last slot tonight, over the columns of ``full``
    (the night's ``InteractionMatrix``)."""
    columns = new_item_columns(con, full.item_ids, as_of, settings.days)
    return NewItems.build(full.item_text, columns, settings)


@dataclass
class NewItems:
    """The new items' content neighbours: ``similarity[t, j]`` is the TF-IDF cosine of new item
    ``t`` (a column of the matrix) and item ``j``, its ``neighbours`` best kept."""

    columns: np.ndarray
    similarity: sp.csr_matrix
    min_similarity: float

    @classmethod
    def build(cls, texts: np.ndarray, columns: np.ndarray, settings: NewItemSettings):
        """None when there is no new item or no text to compare."""
        docs = [str(t) if t is not None else "" for t in texts]
        if len(columns) == 0 or not any(d.strip() for d in docs):
            return None
        vectors = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), max_features=50_000)
        matrix = vectors.fit_transform(docs).astype(np.float32).tocsr()
        block = (matrix[columns] @ matrix.T).toarray()
        block[np.arange(len(columns)), columns] = 0  # an item does not explain itself
        block[:, columns] = 0  # nor does another new item, which nobody has bought
        k = min(settings.neighbours, block.shape[1])
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(block, top, axis=1)
        keep = values > 0
        rows = np.repeat(columns, k).reshape(top.shape)
        similarity = sp.csr_matrix(
            (values[keep], (rows[keep], top[keep])), shape=(len(docs), len(docs))
        )
        return cls(columns=columns, similarity=similarity, min_similarity=settings.min_similarity)

    def best(
        self,
        history: sp.csr_matrix,
        exclude: sp.csr_matrix | None = None,
        listed: np.ndarray | None = None,
        batch_size: int = 16_384,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each user's most similar new item (a column of the matrix) and its affinity, the
        TF-IDF cosine summed over the user's history; an item the user bought, may not get
        (``exclude``) or already has listed (``listed``, columns) scores 0. Computed in batches
        of users, so memory stays at ``batch_size`` × new items."""
        position = np.full(self.similarity.shape[0], -1, dtype=np.int64)
        position[self.columns] = np.arange(len(self.columns))
        targets = self.similarity[self.columns].T.tocsc()
        best = np.zeros(history.shape[0], dtype=np.int64)
        value = np.zeros(history.shape[0], dtype=np.float32)
        for start in range(0, history.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            affinity = (binary_matrix(history[rows]) @ targets).toarray()
            if exclude is not None:
                affinity[exclude[rows][:, self.columns].toarray() > 0] = 0
            if listed is not None:
                where = position[np.clip(listed[rows], 0, None)]
                hit = (listed[rows] >= 0) & (where >= 0)
                affinity[np.nonzero(hit)[0], where[hit]] = 0
            best[rows] = np.argmax(affinity, axis=1)
            value[rows] = affinity[np.arange(len(affinity)), best[rows]]
        return self.columns[best], value

    def place(
        self,
        items: np.ndarray,
        scores: np.ndarray,
        because: np.ndarray,
        reason: np.ndarray,
        history: sp.csr_matrix,
        exclude: sp.csr_matrix,
        *,
        categories: np.ndarray | None = None,
        max_per_category: int | None = None,
    ) -> int:
        """Put each customer's best new item in the last slot of their list (in place), unless
        it is bought, excluded, already listed, below ``min_similarity`` or over the category
        cap; returns how many lists got one."""
        if len(items) == 0:
            return 0
        chosen, affinity = self.best(history, exclude, items)
        rows = np.arange(len(items))
        ok = affinity >= self.min_similarity
        slot = np.maximum((items >= 0).sum(axis=1) - 1, 0)  # the last filled slot
        slot = np.where(items[rows, -1] < 0, (items >= 0).sum(axis=1), slot)  # or a free one
        slot = np.minimum(slot, items.shape[1] - 1)
        if max_per_category is not None and categories is not None:
            others = np.where(items >= 0, categories[np.clip(items, 0, None)], -2)
            others[rows, slot] = -2
            same = (others == categories[chosen][:, None]).sum(axis=1)
            ok &= (same < max_per_category) | (categories[chosen] < 0)
        rows = rows[ok]
        if len(rows) == 0:
            return 0
        items[rows, slot[ok]] = chosen[ok]
        scores[rows, slot[ok]] = affinity[ok]
        explained = explain_by_similarity(chosen[ok][:, None], history[rows], self.similarity)[0]
        because[rows, slot[ok]] = explained[:, 0]
        reason[rows, slot[ok]] = Reason.NEW
        return int(len(rows))
