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


def _describe(row: pd.Series, total: int, basis: str, horizon_days: int | None) -> str:
    rule = row.get("rule")
    prefix = f"Rule: {rule}. " if isinstance(rule, str) else ""
    unit = "spend" if basis == "revenue" else "units"
    spend = f"{row['median_monetary']:,.0f} net {unit}"
    text = prefix + (
        f"{row['n_customers']:,} customers ({row['share']:.0%} of {total:,}). The typical one last "
        f"bought {row['median_recency_days']:.0f} days ago, has placed "
        f"{row['median_frequency']:.0f} order{'s' if row['median_frequency'] != 1 else ''} "
        f"and has {spend}; they buy more recently than {1 - row['recency_pct']:.0%} of customers "
        f"and spend more than {row['monetary_pct']:.0%}."
    )
    if pd.notna(row.get("expected_spend")):
        period = f"the next {horizon_days} days" if horizon_days else "the next period"
        text += (
            f" Likely next: customers like these {row['buy_again_share']:.0%} bought again in "
            f"{period}, {row['expected_spend']:,.0f} net {unit} each on average."
        )
    return text


def profile_segments(
    rfm: pd.DataFrame,
    labels: np.ndarray,
    *,
    basis: str = "revenue",
    outcomes: pd.DataFrame | None = None,
    horizon_days: int | None = None,
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
    outcomes : DataFrame, optional
        Per label, what the segment's customers did next at the holdout cut:
        ``expected_spend`` and ``buy_again_share`` (over ``horizon_days``).

    Returns
    -------
    DataFrame
        One row per cluster, ordered by median spend (highest first), with ``label``,
        ``segment_id`` (``S1`` = highest median spend), ``segment_name`` (unique) and statistics.
    """
    stats = segment_statistics(rfm, labels)
    value_pct = (stats["frequency_pct"] + 2 * stats["monetary_pct"]) / 3
    stats["segment_name"] = [
        _name(r, v, f)
        for r, v, f in zip(stats["recency_pct"], value_pct, stats["median_frequency"], strict=True)
    ]
    stats = stats.sort_values(
        ["median_monetary", "mean_monetary", "label"], ascending=[False, False, True]
    ).reset_index(drop=True)
    stats["segment_id"] = [f"S{i + 1}" for i in range(len(stats))]
    stats["segment_name"] = _deduplicate(stats)
    if outcomes is not None and len(outcomes):
        stats = stats.join(outcomes[["expected_spend", "buy_again_share"]], on="label")
    else:
        stats["expected_spend"] = stats["buy_again_share"] = np.nan
    stats["description"] = descriptions(stats, basis, horizon_days)
    return stats


# What ``segment_statistics`` gives per segment (the Spark engine computes the same in SQL).
STATISTICS = (
    "n_customers",
    "mean_recency_days",
    "mean_frequency",
    "mean_monetary",
    "median_recency_days",
    "median_frequency",
    "median_monetary",
    "share",
    "recency_pct",
    "frequency_pct",
    "monetary_pct",
)


def segment_statistics(rfm: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Per label: size, share, mean and median recency, frequency and spend, and the
    population percentile (``_percentile_of``) of each median (``STATISTICS``)."""
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
    return stats


def descriptions(profiles: pd.DataFrame, basis: str, horizon_days: int | None) -> list[str]:
    """Each segment's description: its rule (when it has one), size, typical customer and what
    customers like them did next."""
    total = int(profiles["n_customers"].sum())
    return [_describe(row, total, basis, horizon_days) for _, row in profiles.iterrows()]


def restate_profiles(
    profiles: pd.DataFrame,
    statistics: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    basis: str,
    horizon_days: int | None,
) -> pd.DataFrame:
    """``profiles`` (decided on a sample: ids, names, rules) with the statistics and outcomes
    of the whole population (``statistics`` and ``outcomes`` indexed by segment_id), and their
    descriptions again. Segments nobody is in are left out."""
    out = profiles[profiles["segment_id"].isin(statistics.index)].copy()
    for column in (*STATISTICS, "expected_spend", "buy_again_share"):
        source = statistics if column in statistics else outcomes
        out[column] = out["segment_id"].map(source[column]).to_numpy() if len(source) else np.nan
    out["description"] = descriptions(out, basis, horizon_days)
    return out


# What can tell two segments of the same name apart: (percentile column, words for the first,
# for the others). Rows of one name are ordered on the column that separates them most.
_QUALIFIERS = {
    "recency_pct": ("most recent", "{n} by recency"),
    "frequency_pct": ("most orders", "{n} by orders"),
    "monetary_pct": ("top spend", "{n} by spend"),
}


def _deduplicate(stats: pd.DataFrame) -> list[str]:
    """Unique names: segments that share a name are told apart by the figure that separates
    them most, as a rank ("Active big spenders (top spend)", "... (2nd by spend)"), which never
    contradicts the name the way "big spenders (lower spend)" did."""
    names = stats["segment_name"].copy()
    for name, group in stats.groupby("segment_name"):
        if len(group) < 2:
            continue
        column = max(_QUALIFIERS, key=lambda c: np.ptp(group[c].to_numpy()))
        # Recency percentile counts customers who bought more recently: lower is more recent.
        ordered = group.sort_values(column, ascending=column == "recency_pct")
        first, others = _QUALIFIERS[column]
        for rank, index in enumerate(ordered.index):
            words = first if rank == 0 else others.format(n=_ordinal(rank + 1))
            names[index] = f"{name} ({words})"
    return names.tolist()


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
