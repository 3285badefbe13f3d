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
