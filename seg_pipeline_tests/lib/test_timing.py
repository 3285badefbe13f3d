import time

from seg_pipeline.lib.timing import PhaseTimer


def test_phase_timer_tells_a_busy_phase_from_a_waiting_one():
    phases = PhaseTimer()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
    phases.lap("busy")
    time.sleep(0.3)
    phases.lap("waiting")
    assert phases.seconds["busy"] >= 0.3 and phases.seconds["waiting"] >= 0.3
    assert phases.cores["busy"] > 0.5 > phases.cores["waiting"]


def test_phase_report_logs_the_lines_the_benchmark_reads_and_returns_the_metadata():
    import logging
    import re

    phases = PhaseTimer()
    phases.lap("load")
    records = []
    log = logging.getLogger("test_phase_report")
    log.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r)})())
    log.setLevel(logging.INFO)
    metadata = phases.report(log, "an_asset")
    assert metadata == {"seconds_by_phase": phases.seconds, "cores_busy_by_phase": phases.cores}
    text = "\n".join(r.getMessage() for r in records)
    # bench/scale.py finds the phases with these patterns.
    assert re.findall(r"(\w+): seconds by phase (\{.*\})", text) == [
        ("an_asset", str(phases.seconds))
    ]
    assert re.findall(r"(\w+): cores busy by phase (\{.*\})", text) == [
        ("an_asset", str(phases.cores))
    ]
