"""Read event and item files into DuckDB: every row ends up either in ``raw_events`` or in
``quarantined_events`` with a reason, so ``rows read = rows used + rows quarantined`` always holds.

``sources`` finds and lands the files, ``formats`` types the two layouts, ``classification`` gives
each bad row its reason, ``incremental`` decides whether only new daily files need reading,
``events`` runs the whole ingest and ``items`` builds the catalogue.
"""

from seg_pipeline.lib.ingest.classification import REASONS
from seg_pipeline.lib.ingest.events import ingest_events
from seg_pipeline.lib.ingest.formats import FORMATS
from seg_pipeline.lib.ingest.items import ingest_items
from seg_pipeline.lib.ingest.results import IngestError, IngestResult
from seg_pipeline.lib.ingest.sources import resolve_sources

__all__ = [
    "FORMATS",
    "REASONS",
    "IngestError",
    "IngestResult",
    "ingest_events",
    "ingest_items",
    "resolve_sources",
]
