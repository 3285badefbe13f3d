"""seg_pipeline: nightly customer segmentation and recommendations on Dagster, dbt and DuckDB."""

__version__ = "0.1.0"
