"""Keep segment ids stable from one night to the next.

Today's clusters are matched to yesterday's segments by their centroids (Hungarian assignment on
the distance between centroids, measured in today's scaled feature space). A cluster within
``max_distance`` of a previous segment inherits its id and name; any other cluster gets a new id.
So a segment keeps its identity while it stays the same group of customers, even when K-Means
happens to number its clusters differently.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def match_segments(
    new_centroids: np.ndarray,
    previous_centroids: np.ndarray,
    previous_ids: list[str],
    *,
    max_distance: float = 1.0,
) -> list[str | None]:
    """The previous id each new centroid inherits, or None for a new segment.

    Both centroid arrays must be in the same (scaled) feature space.
    """
    if len(previous_ids) == 0 or len(new_centroids) == 0:
        return [None] * len(new_centroids)
    cost = np.linalg.norm(new_centroids[:, None, :] - previous_centroids[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    out: list[str | None] = [None] * len(new_centroids)
    for r, c in zip(rows, cols, strict=True):
        if cost[r, c] <= max_distance:
            out[r] = previous_ids[c]
    return out


def next_ids(taken: list[str], n: int) -> list[str]:
    """``n`` fresh ids of the form S<number> that are not in ``taken``."""
    used = {int(t[1:]) for t in taken if t.startswith("S") and t[1:].isdigit()}
    out, candidate = [], 1
    while len(out) < n:
        if candidate not in used:
            out.append(f"S{candidate}")
            used.add(candidate)
        candidate += 1
    return out


def unique_names(names: list[str], ids: list[str], inherited: list[str | None]) -> list[str]:
    """Inherited names win; a new segment whose derived name is taken gets its id appended."""
    taken = {n for n, i in zip(names, inherited, strict=True) if i}
    out = []
    for name, sid, inh in zip(names, ids, inherited, strict=True):
        if not inh and name in taken:
            name = f"{name} ({sid})"
        taken.add(name)
        out.append(name)
    return out


def inherit_identity(
    today_centroids: np.ndarray,
    derived_names: list[str],
    previous_centroids: np.ndarray | None,
    previous_ids: list[str],
    previous_names: list[str],
    *,
    max_distance: float = 1.0,
) -> tuple[list[str], list[str]]:
    """Each of today's segments' id and name: inherited from the matching segment of the previous
    run, or a fresh id with the name derived from its profile.

    ``today_centroids`` and ``previous_centroids`` must be in the same scaled space (the
    log-RFM identity space); ``derived_names`` are today's names from ``profile_segments``.
    """
    if previous_centroids is not None and len(previous_ids):
        inherited = match_segments(
            today_centroids, previous_centroids, previous_ids, max_distance=max_distance
        )
        prev_names = dict(zip(previous_ids, previous_names, strict=True))
    else:
        inherited, prev_names = [None] * len(derived_names), {}
    fresh = iter(next_ids([i for i in inherited if i] + list(prev_names), inherited.count(None)))
    ids = [i if i else next(fresh) for i in inherited]
    names = [prev_names.get(i, n) for i, n in zip(ids, derived_names, strict=True)]
    return ids, unique_names(names, ids, inherited)
