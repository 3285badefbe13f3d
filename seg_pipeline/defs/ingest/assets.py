"""Ingest: land the event and item files in the working DuckDB database."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from seg_pipeline.defs.engine import SqlEngine
from seg_pipeline.defs.resources import PipelineSettings
from seg_pipeline.lib.ingest import IngestError, ingest_events, ingest_items
from seg_pipeline.lib.ingest.impressions import ingest_impressions, no_impressions
from seg_pipeline.lib.privacy import ensure_privacy_tables, read_id_list, replace_opt_outs
from seg_pipeline.lib.spark.ingest import TABLE_PREFIX, ingest_events_spark
from seg_pipeline.lib.synthetic import generate_shop, write_shop


class IngestConfig(dg.Config):
    """Tunables of the ingest step."""

    max_bad_share: float = Field(
        default=0.5, description="Fail instead of publishing when more rows than this are bad."
    )
    demo_customers: int = Field(default=3000, description="Customers in the synthetic shop.")
    demo_seed: int = Field(default=42, description="Seed of the synthetic shop.")


def ensure_demo_shop(
    directory: Path, *, n_customers: int = 3000, seed: int = 42
) -> dict[str, Path]:
    """Write the synthetic shop into ``directory`` unless it is already there."""
    paths = {"events": directory / "events.csv", "items": directory / "items.csv"}
    if not all(p.exists() for p in paths.values()):
        written = write_shop(generate_shop(n_customers=n_customers, seed=seed), directory)
        paths = {"events": written["events"], "items": written["items"]}
    return paths


# Read on the driver and copied to Spark on the Spark engine: the catalogue and the impressions.
SMALL_INGEST_TABLES = ["raw_items", "raw_impressions", "quarantined_impressions"]


def _read_events(context, config, settings, engine, con, events, key):
    """The events into ``raw_events`` and ``quarantined_events`` of the run's engine."""
    if not engine.is_spark:
        return ingest_events(
            con,
            events,
            fmt=settings.events_format,
            as_of=settings.as_of_date(),
            run_id=context.run_id,
            max_bad_share=config.max_bad_share,
            pseudonym_key=key,
        )
    # Spark reads, types and classifies them into its working schema; the items' descriptions
    # (Online Retail) come back for the catalogue, which the driver writes.
    is_table = events.startswith(TABLE_PREFIX)
    spark_ingest = ingest_events_spark(
        engine.session(),
        events if is_table else str(Path(events).resolve()),
        schema=engine.work_schema,
        fmt=settings.events_format,
        as_of=settings.as_of_date(),
        run_id=context.run_id,
        max_bad_share=config.max_bad_share,
        pseudonym_key=key,
        erased_hashes=[
            r[0] for r in con.execute("select customer_hash from erased_customers").fetchall()
        ],
    )
    con.execute(
        "create or replace table _event_item_text (item_id varchar, title varchar, price double)"
    )
    if spark_ingest.item_text:
        con.executemany("insert into _event_item_text values (?, ?, ?)", spark_ingest.item_text)
    return spark_ingest.result


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "raw_events",
            deps=["customer_erasures"],
            description="Valid input events, typed, with source file and line.",
            group_name="ingest",
        ),
        dg.AssetSpec(
            "quarantined_events",
            deps=["customer_erasures"],
            description="Rejected input rows with a reason code.",
            group_name="ingest",
        ),
        dg.AssetSpec(
            "raw_items",
            deps=["customer_erasures"],
            description="The item catalogue as given, or derived from events.",
            group_name="ingest",
        ),
        dg.AssetSpec(
            "raw_impressions",
            deps=["customer_erasures"],
            description="Shown recommendations from --impressions (empty without it), typed.",
            group_name="ingest",
        ),
        dg.AssetSpec(
            "quarantined_impressions",
            deps=["customer_erasures"],
            description="Rejected impression rows with a reason code.",
            group_name="ingest",
        ),
        dg.AssetSpec(
            "ingest_manifest",
            deps=["customer_erasures"],
            description="as_of date and row counts of the last ingest.",
            group_name="ingest",
        ),
    ],
    can_subset=False,
)
def ingested_events(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    settings: PipelineSettings,
    duckdb: DuckDBResource,
    engine: SqlEngine,
):
    """Read the events (or the embedded synthetic shop) and quarantine every unusable row."""
    events, items = settings.events_path, settings.items_path
    if events is None:
        demo = ensure_demo_shop(
            Path(settings.demo_dir), n_customers=config.demo_customers, seed=config.demo_seed
        )
        events, items = str(demo["events"]), str(demo["items"])
        context.log.info(f"no events path given: using the synthetic shop in {settings.demo_dir}")
    settings.work_path.parent.mkdir(parents=True, exist_ok=True)
    key = settings.key()
    with duckdb.get_connection() as con:
        ensure_privacy_tables(con)
        if settings.optout_path:
            if not Path(settings.optout_path).is_file():
                raise dg.Failure(f"opt-out file '{settings.optout_path}' does not exist")
            replace_opt_outs(con, read_id_list(settings.optout_path), key)
        n_opted_out = con.execute("select count(*) from opted_out_customers").fetchall()[0][0]
        try:
            result = _read_events(context, config, settings, engine, con, events, key)
            n_items = ingest_items(con, items, run_id=context.run_id)
            shown = (
                ingest_impressions(
                    con,
                    settings.impressions_path,
                    run_id=context.run_id,
                    max_bad_share=config.max_bad_share,
                    pseudonym_key=key,
                )
                if settings.impressions_path
                else no_impressions(con, run_id=context.run_id)
            )
        except IngestError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        if engine.is_spark:
            # The events stay in Spark; the driver keeps the small tables its steps read.
            engine.collect(con, ["ingest_manifest", "quarantined_events"], settings.work_path)
            engine.share(con, SMALL_INGEST_TABLES, settings.work_path)
    common = {"as_of": str(result.as_of), "rows_read": result.rows_read}
    yield dg.MaterializeResult(
        asset_key="raw_events",
        metadata={
            **common,
            "dagster/row_count": result.rows_used,
            "rows_used": result.rows_used,
            "rows_quarantined": result.rows_quarantined,
            "rows_erased": result.rows_erased,
            "opted_out_customers": n_opted_out,
            "anonymous_rows": result.anonymous_rows,
            "customers": result.n_customers,
            "items": result.n_items,
            "source_files": ", ".join(result.files),
            "files_read_this_run": len(result.files_read),
            "ingest_mode": "full"
            if len(result.files_read) == len(result.files)
            else "incremental (new files only)",
        },
    )
    yield dg.MaterializeResult(
        asset_key="quarantined_events",
        metadata={
            **common,
            "dagster/row_count": result.rows_quarantined,
            "reasons": dg.MetadataValue.json(result.reasons),
        },
    )
    yield dg.MaterializeResult(asset_key="raw_items", metadata={"dagster/row_count": n_items})
    yield dg.MaterializeResult(
        asset_key="raw_impressions",
        metadata={
            "dagster/row_count": shown.rows_used,
            "rows_read": shown.rows_read,
            "rows_used": shown.rows_used,
            "rows_quarantined": shown.rows_quarantined,
            "rows_erased": shown.rows_erased,
            "source": settings.impressions_path or "none (no --impressions)",
        },
    )
    yield dg.MaterializeResult(
        asset_key="quarantined_impressions",
        metadata={
            "dagster/row_count": shown.rows_quarantined,
            "reasons": dg.MetadataValue.json(shown.reasons),
        },
    )
    yield dg.MaterializeResult(
        asset_key="ingest_manifest", metadata={**common, "dagster/row_count": 1}
    )
