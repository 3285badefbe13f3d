"""Turn cluster labels into segments a marketer can read: stable ids, names and descriptions.

Names come from where a segment's typical customer sits in the whole population (percentiles of
its median recency, frequency and spend), never from the arbitrary cluster number, so the same
kind of customers gets the same name on any data set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _percentile_of(population: np.ndarray, value: float) -> float:
    """Mid-rank percentile of ``value`` in the population (0-1).

    Ties count half, so a value shared by many customers (one order, say) sits in the middle of
    its tie group rather than at its top.
    """
    population = np.sort(population)
    below = np.searchsorted(population, value, side="left")
    at_or_below = np.searchsorted(population, value, side="right")
    return float((below + at_or_below) / 2 / len(population))


def _name(recency_pct: float, value_pct: float, median_frequency: float) -> str:
    # recency_pct is the share of customers who bought *more* recently than this segment's median.
    timing = "active" if recency_pct <= 0.35 else "cooling" if recency_pct <= 0.65 else "lapsed"
    value = "high" if value_pct >= 0.67 else "mid" if value_pct >= 0.34 else "low"
    one_time = median_frequency <= 1
    names = {
        ("active", "high"): "Active big spenders",
        ("active", "mid"): "Active regulars",
        ("active", "low"): "New one-time buyers" if one_time else "Active light buyers",
        ("cooling", "high"): "Big spenders cooling off",
        ("cooling", "mid"): "Regulars cooling off",
        ("cooling", "low"): "Occasional one-time buyers" if one_time else "Occasional light buyers",
        ("lapsed", "high"): "Lapsed big spenders",
        ("lapsed", "mid"): "Lapsed regulars",
        ("lapsed", "low"): "Lapsed one-time buyers" if one_time else "Lapsed light buyers",
    }
    return names[(timing, value)]


def _describe(row: pd.Series, total: int, basis: str) -> str:
    spend = f"{row['median_monetary']:,.0f} net {'spend' if basis == 'revenue' else 'units'}"
    return (
        f"{row['n_customers']:,} customers ({row['share']:.0%} of {total:,}). The typical one last "
        f"bought {row['median_recency_days']:.0f} days ago, has placed "
        f"{row['median_frequency']:.0f} order{'s' if row['median_frequency'] != 1 else ''} "
        f"and has {spend}; they buy more recently than {1 - row['recency_pct']:.0%} of customers "
        f"and spend more than {row['monetary_pct']:.0%}."
    )


def profile_segments(
    rfm: pd.DataFrame, labels: np.ndarray, *, basis: str = "revenue"
) -> pd.DataFrame:
    """Summarise each cluster and give it an id, a name and a description.

    Parameters
    ----------
    rfm : DataFrame
        One row per customer with ``recency_days``, ``frequency`` and ``monetary``.
    labels : ndarray of int
        Cluster label per row of ``rfm``.
    basis : {"revenue", "units"}
        What ``monetary`` measures, for the description.

    Returns
    -------
    DataFrame
        One row per cluster, ordered by median spend (highest first), with ``label``,
        ``segment_id`` (``S1`` = highest median spend), ``segment_name`` (unique) and statistics.
    """
    frame = rfm[["recency_days", "frequency", "monetary"]].copy()
    frame["label"] = labels
    grouped = frame.groupby("label")
    stats = grouped.agg(
        n_customers=("recency_days", "size"),
        mean_recency_days=("recency_days", "mean"),
        mean_frequency=("frequency", "mean"),
        mean_monetary=("monetary", "mean"),
        median_recency_days=("recency_days", "median"),
        median_frequency=("frequency", "median"),
        median_monetary=("monetary", "median"),
    ).reset_index()
    total = int(stats["n_customers"].sum())
    stats["share"] = stats["n_customers"] / total
    rec, freq, mon = (
        frame[c].to_numpy(dtype=float) for c in ("recency_days", "frequency", "monetary")
    )
    stats["recency_pct"] = [_percentile_of(rec, v) for v in stats["median_recency_days"]]
    stats["frequency_pct"] = [_percentile_of(freq, v) for v in stats["median_frequency"]]
    stats["monetary_pct"] = [_percentile_of(mon, v) for v in stats["median_monetary"]]
    value_pct = (stats["frequency_pct"] + 2 * stats["monetary_pct"]) / 3
    stats["segment_name"] = [
        _name(r, v, f)
        for r, v, f in zip(stats["recency_pct"], value_pct, stats["median_frequency"], strict=True)
    ]
    stats = stats.sort_values(
        ["median_monetary", "mean_monetary", "label"], ascending=[False, False, True]
    ).reset_index(drop=True)
    stats["segment_id"] = [f"S{i + 1}" for i in range(len(stats))]
    stats["segment_name"] = _deduplicate(stats["segment_name"].tolist())
    stats["description"] = [_describe(row, total, basis) for _, row in stats.iterrows()]
    return stats


def _deduplicate(names: list[str]) -> list[str]:
    """Make names unique; rows come ordered by spend, so the qualifiers read high → low."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if counts[name] == 1:
            out.append(name)
            continue
        seen[name] = seen.get(name, 0) + 1
        n = counts[name]
        qualifier = (
            ("higher spend" if seen[name] == 1 else "lower spend")
            if n == 2
            else f"tier {seen[name]}"
        )
        out.append(f"{name} ({qualifier})")
    return out
