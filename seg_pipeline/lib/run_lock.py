"""One run per database at a time.

Two runs on the same database would share its work file step by step (one dropping the other's
tables mid-ingest). A run therefore holds an exclusive lock on ``<database>.lock`` beside the
published file for as long as it works; the lock file names the run that holds it, so a second
run can say whom it waits for. The lock is the operating system's (``flock``): a run that dies
releases it with its process, and no stale file can block the next night.

Within one process the lock is re-entrant: the CLI takes it before its own preparations and the
job's resources take it again for the run.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

_HELD: dict[Path, list] = {}  # lock path -> [open file, depth]
_GUARD = threading.Lock()


class RunInProgress(RuntimeError):
    """Another run holds the database; the message names it and says how to wait."""


def lock_path(published: Path) -> Path:
    published = Path(published).resolve()
    return published.with_name(f"{published.stem}.lock")


def holder(published: Path) -> dict | None:
    """What the lock file says about the run holding it (None when it says nothing)."""
    try:
        return json.loads(lock_path(published).read_text() or "null")
    except (OSError, ValueError):
        return None


def _describe(info: dict | None) -> str:
    if not info:
        return "another run"
    return f"run {info.get('run_id')} (process {info.get('pid')}, since {info.get('started')})"


@contextmanager
def database_lock(published: Path, run_id: str, *, wait_seconds: float = 0) -> Iterator[None]:
    """Hold ``published``'s run lock for the block.

    Waits up to ``wait_seconds`` for a run in progress, then raises ``RunInProgress`` naming it.
    """
    path = lock_path(published)
    with _GUARD:
        held = _HELD.get(path)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _GUARD:
                held[1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (kept open while the lock is held)
    deadline = time.monotonic() + max(wait_seconds, 0)
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                waited = f" after waiting {wait_seconds:g} s" if wait_seconds > 0 else ""
                raise RunInProgress(
                    f"{_describe(holder(published))} is working on {Path(published).name}"
                    f"{waited}; try again when it has finished, or wait for it with --wait "
                    "SECONDS (SEG_LOCK_WAIT_SECONDS)"
                ) from None
            time.sleep(0.2)
    handle.seek(0)
    handle.truncate()
    handle.write(
        json.dumps(
            {
                "run_id": run_id,
                "pid": os.getpid(),
                "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            }
        )
    )
    handle.flush()
    with _GUARD:
        _HELD[path] = [handle, 1]
    try:
        yield
    finally:
        with _GUARD:
            entry = _HELD[path]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[path]
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
