"""Wall time per phase of an asset, reported in its metadata: where a nightly run spends time."""

from __future__ import annotations

import time


class PhaseTimer:
    """``lap(name)`` records the seconds since the previous lap (or since creation).

    ``cores`` is the process's CPU time over the phase divided by its wall time: about 2 on two
    cores when the phase keeps both busy, 1 when one sits idle (what to overlap next).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cores: dict[str, float] = {}
        self._last = time.perf_counter()
        self._last_cpu = time.process_time()

    def lap(self, phase: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds[phase] = round(now - self._last, 2)
        self.cores[phase] = round((cpu - self._last_cpu) / max(now - self._last, 1e-9), 2)
        self._last, self._last_cpu = now, cpu

    def report(self, log, asset: str) -> dict[str, dict[str, float]]:
        """Log the seconds and cores busy by phase (``bench/scale.py`` reads these lines) and
        return them as asset metadata."""
        log.info(f"{asset}: seconds by phase {self.seconds}")
        log.info(f"{asset}: cores busy by phase {self.cores}")
        return {"seconds_by_phase": self.seconds, "cores_busy_by_phase": self.cores}
