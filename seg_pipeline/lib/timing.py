"""Wall time per phase of an asset, reported in its metadata: where a nightly run spends time."""

from __future__ import annotations

import time


class PhaseTimer:
    """``lap(name)`` records the seconds since the previous lap (or since creation)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 2)
        self._last = now
