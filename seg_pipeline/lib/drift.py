"""Drift between the last two run dates, shared by the warning checks."""

from __future__ import annotations


def relative_drop(rows: list[tuple], limit: float, metric: str) -> tuple[bool, dict]:
    """Compare the newest value with the one before it (``rows`` newest first, (date, value)).

    Returns whether the drop is within ``limit`` (a share, 0.2 = 20%) and metadata to show.
    With fewer than two dates there is nothing to compare, which passes.
    """
    if len(rows) < 2:
        return True, {"note": "no earlier run date to compare"}
    (_, now), (_, before) = rows[:2]
    drop = 1 - now / before if before and before > 0 else 0.0
    return drop <= limit, {
        f"{metric}_now": float(now),
        f"{metric}_before": float(before),
        "relative_drop": float(drop),
    }
