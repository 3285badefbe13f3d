import time

from seg_pipeline.lib.timing import PhaseTimer


def test_phase_timer_tells_a_busy_phase_from_a_waiting_one():
    # The busy phase spins until this process has used 0.3 s of CPU, however long other
    # processes keep it off the cores; the waiting phase sleeps. So the CPU each phase
    # records (cores × seconds) does not depend on the machine's load.
    phases = PhaseTimer()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    phases.lap("busy")
    time.sleep(0.3)
    phases.lap("waiting")
    assert phases.seconds["busy"] >= 0.3 and phases.seconds["waiting"] >= 0.3
    cpu = {phase: phases.cores[phase] * phases.seconds[phase] for phase in phases.seconds}
    assert cpu["busy"] >= 0.28 and cpu["waiting"] < 0.1


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
