"""What an ingest reports: its counts, or an input problem in one readable line."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


class IngestError(ValueError):
    """An input problem the user must fix; its message is one readable line."""


@dataclass
class IngestResult:
    """Counts of one ingest; ``rows_read == rows_used + rows_quarantined + rows_erased``."""

    files: list[str]
    rows_read: int
    rows_used: int
    rows_quarantined: int
    as_of: date
    rows_erased: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    anonymous_rows: int = 0
    n_customers: int = 0
    n_items: int = 0
    files_read: list[str] = field(default_factory=list)  # this run (incremental: new ones)


def ingest_result(con, files, files_read, as_of, rows_used, rows_quarantined, rows_erased, reasons):
    """The ingest's counts, with the customers and items now in ``raw_events``."""
    anonymous, n_customers, n_items = con.execute(
        "select count(*) filter (where customer_id is null), count(distinct customer_id), "
        "count(distinct item_id) from raw_events"
    ).fetchall()[0]
    return IngestResult(
        files=files,
        rows_read=rows_used + rows_quarantined + rows_erased,
        rows_used=rows_used,
        rows_quarantined=rows_quarantined,
        as_of=as_of,
        rows_erased=rows_erased,
        reasons=reasons,
        anonymous_rows=anonymous,
        n_customers=n_customers,
        n_items=n_items,
        files_read=files_read,
    )


def refuse_too_many_bad(
    counts: dict[str, int], rows_quarantined: int, rows_read: int, max_bad_share: float
) -> None:
    """Stop before anything is written when more than ``max_bad_share`` of the rows are bad,
    naming the three commonest reasons (``counts``: rows per reason)."""
    if rows_quarantined > max_bad_share * rows_read:
        top = ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        raise IngestError(
            f"{rows_quarantined} of {rows_read} rows ({rows_quarantined / rows_read:.0%}) are bad, "
            f"above the {max_bad_share:.0%} limit; nothing was published ({top})"
        )
