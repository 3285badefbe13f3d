"""What a person wants to read at the end of a run: counts, choices, warnings and where to look.

Read from the work database after the run, so the summary shows what was written, not what a
step meant to write.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb


def _one(con: duckdb.DuckDBPyConnection, query: str, params: dict | None = None):
    try:
        rows = con.execute(query, params or {}).fetchall()
    except duckdb.CatalogException:  # a table this run never got to write
        return None
    return rows[0] if rows else None


def _figure(value) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.3f}")
    )


def summary_lines(
    work_db: Path, published: Path, run_id: str, published_where: str | None = None
) -> list[str]:
    """The summary of run ``run_id``, one line per fact; ``published_where`` names where the
    tables were published when it is not the DuckDB file ``published`` (the Spark engine)."""
    con = duckdb.connect(str(work_db), read_only=True)
    try:
        lines = []
        ingest = _one(con, "select rows_read, rows_used, rows_quarantined from ingest_manifest")
        if ingest:
            reasons = con.execute(
                "select reason, count(*) from quarantined_events group by all order by 2 desc, 1"
            ).fetchall()
            by_reason = ", ".join(f"{r} {n:,}" for r, n in reasons)
            lines.append(
                f"rows: {ingest[0]:,} read = {ingest[1]:,} used + {ingest[2]:,} quarantined"
                + (f" ({by_reason})" if by_reason else "")
            )
        customers = _one(
            con,
            # customer_360 has a row per known customer: no second scan of the events.
            "select (select count(*) from customer_rfm), (select count(*) from customer_360)",
        )
        if customers:
            lines.append(
                f"customers: {customers[0]:,} with a purchase (RFM and segments) of "
                f"{customers[1]:,} with any event"
            )
        seg = _one(
            con,
            "select method, param, n_segments, forecast_eta2, rfm_segment_eta2, rfm_cell_eta2, "
            "note, decision, segment_kept_day, rfm_segment_kept_day, segment_kept_week, "
            "rfm_segment_kept_week from segmentation_runs where run_id = "
            "(select any_value(run_id) from customer_segments)",
        )
        if seg:
            lines.append(
                f"segments: {seg[2]} ({seg[0]} {seg[1]}); next-period spend explained (η²): "
                f"segments {_figure(seg[3])}, named RFM segments {_figure(seg[4])}, "
                f"125 RFM cells {_figure(seg[5])}"
            )
            if seg[7]:
                lines.append(f"  {seg[7]}" if seg[0] == "assigned" else f"  refitted: {seg[7]}")
            kept = [
                f"{lag} over {lag} {ours:.1%} (named RFM segments {rfm:.1%})"
                for lag, ours, rfm in (("day", seg[8], seg[9]), ("week", seg[10], seg[11]))
                if ours is not None
            ]
            if kept:
                lines.append(
                    f"  customers without a purchase who kept their segment: {'; '.join(kept)}"
                )
            if seg[6]:
                lines.append(f"  warning: {seg[6]}")
        recs = _one(
            con,
            "select night, champion, note from recommendation_runs where run_id = $r",
            {"r": run_id},
        )
        if recs:
            night, champion, note = recs
            quality = _one(
                con,
                "select max(ndcg) filter (where is_champion), max(ndcg) filter (where "
                "is_baseline) from recommendation_metrics where segment = 'all' and as_of = "
                "(select max(as_of) from recommendation_metrics)",
            )
            figures = (
                f"; NDCG@10 {_figure(quality[0])} against popularity {_figure(quality[1])}"
                if quality and quality[0] is not None and night != "popularity"
                else ""
            )
            kind = {"refit": "chosen and refitted tonight", "rescore": "kept model, re-scored"}
            lines.append(f"recommendations: {champion} ({kind.get(night, night)}){figures}")
            if note:
                lines.append(f"  warning: {note}")
            lines += _audience_lines(con)
        report = published.with_name(published.stem + "_segment_report.html")
        if report.exists():
            lines.append(f"segment report: {report}")
        lines.append(published_where or f"tables: {published} (open read-only with DuckDB)")
        return lines
    finally:
        con.close()


def next_steps(tracking_uri: str) -> list[str]:
    """The commands that open the UI and the experiments."""
    return [
        "Dagster UI: dagster dev, then http://localhost:3000 (the nightly schedule runs from then)",
        f"MLflow: mlflow ui --backend-store-uri {tracking_uri}",
    ]


def _audience_lines(con) -> list[str]:
    """How many audiences were published and, from the last refit's validation window, how
    their hit rate compares with the baseline of past category buyers."""
    counts = _one(
        con,
        "select (select count(distinct item_id) from item_audiences), "
        "(select count(distinct category) from category_audiences), "
        "(select max(rank) from item_audiences)",
    )
    if not counts or not counts[0]:
        return []
    rows = con.execute(
        """
        select kind, model, hit_rate, baseline_hit_rate from audience_metrics a
        where as_of = (select max(as_of) from audience_metrics)
          and mode = (select mode from audience_metrics b where b.kind = a.kind
                      and b.as_of = a.as_of order by hit_rate desc,
                      case mode when 'baseline' then 0 when 'blend' then 1 else 2 end limit 1)
        order by kind desc
        """
    ).fetchall()
    figures = "; ".join(
        f"{kind} audiences by {model}: caught {_figure(ours)} of next buyers on validation "
        f"(baseline {_figure(base)})"
        for kind, model, ours, base in rows
    )
    line = (
        f"audiences: {counts[0]} items and {counts[1]} categories, up to {counts[2]} customers each"
    )
    return [line] + ([f"  {figures}"] if figures else [])
