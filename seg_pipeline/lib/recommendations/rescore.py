"""A rescore night between refits: the kept ALS model re-scores only the customers whose
history changed (see ``nightly`` for the kinds of night)."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from seg_pipeline.lib.recommendations import audiences as aud
from seg_pipeline.lib.recommendations import feedback as fb
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
from seg_pipeline.lib.recommendations.interactions import (
    InteractionMatrix,
    load_interactions,
)
from seg_pipeline.lib.recommendations.kept_model import (
    KeptModel,
    catalogue_signature,
    changed_customers,
    row_fingerprints,
)
from seg_pipeline.lib.recommendations.lists import Lists
from seg_pipeline.lib.recommendations.new_items import tonights_new_items
from seg_pipeline.lib.recommendations.nightly import (
    NightSettings,
    available_items,
    score_lists,
    tonight_as_of,
)
from seg_pipeline.lib.timing import PhaseTimer


@dataclass
class RescoreNight:
    """A rescore night's outcome: the re-scored customers' lists and whom they cover."""

    kept: KeptModel
    champion: ALSRecommender
    full: InteractionMatrix
    fingerprints: np.ndarray
    rescored: np.ndarray  # mask over full's customers
    scope: str
    lists: Lists

    @property
    def counts(self) -> dict:
        return {
            "customers_rescored": int(self.rescored.sum()),
            "customers_kept": int(self.full.shape[0] - self.rescored.sum()),
            "items_unseen_by_model": self.kept.unseen_items(self.full.item_ids),
        }

    def audience_ranking(self) -> tuple[object, dict[str, str]]:
        """The kept model with every customer folded in (tonight's lists re-score only the
        changed ones, but an audience ranks everyone against each other), and the modes the
        last refit chose on validation."""
        model = self.kept.champion_for(self.full.item_ids)
        model.fold_in(self.full.weights)
        modes = {k: self.kept.summary.get(f"{k}_audience_mode", "model") for k in aud.KINDS}
        return model, modes

    @property
    def kept_customers(self) -> np.ndarray:
        """Ids of the customers whose previous list stays as it is."""
        return self.full.user_ids[~self.rescored]


def rescore_night(
    con: duckdb.DuckDBPyConnection,
    settings: NightSettings,
    kept: KeptModel,
    *,
    phases: PhaseTimer | None = None,
) -> RescoreNight:
    """Re-score the customers whose history changed (and those with no purchase, whose
    popularity lists follow today's shop) with the kept model.

    Everyone is re-scored when ``rescore_all`` is set or an item the model knows changed its
    availability, category or text (the catalogue signature).
    """
    phases = phases or PhaseTimer()
    tonight = tonight_as_of(con)
    full = load_interactions(con, weights=settings.weights)
    available = available_items(con)
    blocked = np.flatnonzero(~available)
    signature = catalogue_signature(
        kept.item_ids, full.item_ids, available, full.item_categories, full.item_text
    )
    fingerprints = row_fingerprints(full)
    phases.lap("full data")
    cold = np.diff(full.purchased.indptr) == 0
    new_items = tonights_new_items(con, full, tonight, settings.new_items)
    if settings.rescore_all or signature != kept.catalogue_signature:
        rescore = np.ones(full.shape[0], dtype=bool)
        scope = (
            "every customer (rescore_all)"
            if settings.rescore_all
            else "every customer: the kept items' availability, categories or text changed"
        )
    else:
        unseen = kept.unseen_items(full.item_ids)
        changed = changed_customers(con, full.user_ids, fingerprints, settings.n, unseen > 0)
        shown = fb.shown_recently(con, full.user_ids, tonight, settings.feedback.window_days)
        # A kept list keeps its new-item slot until the customer changes or the next refit:
        # re-scoring every customer a new item could reach would redraw lists nothing changed.
        rescore = changed | cold | shown
        scope = (
            "customers whose history changed, customers with no purchase, and customers "
            "shown recommendations lately"
        )
    rows = np.flatnonzero(rescore)
    champion = kept.champion_for(full.item_ids)
    subset = full.take_users(rows)
    champion.fold_in(subset.weights)
    phases.lap("fold in")
    strength = float(kept.summary.get("diversity_strength", 0.0))
    demoted = fb.demoted_pairs(con, full.user_ids, full.item_ids, tonight, settings.feedback)
    lists = score_lists(
        champion, subset, full, settings, blocked, strength, demoted[rows], new_items
    )
    lists.users = rows[lists.users]
    phases.lap("lists and reasons")
    return RescoreNight(
        kept=kept,
        champion=champion,
        full=full,
        fingerprints=fingerprints,
        rescored=rescore,
        scope=scope,
        lists=lists,
    )
