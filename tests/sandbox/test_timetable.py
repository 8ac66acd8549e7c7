"""DP runs follow a fixed timetable: no run can move another run's start, or the job's end.

Predictable transactions (Haeberlen, Pierce, Narayan, "Differential Privacy Under Fire", USENIX
Security 2011). Each function here returns ``time.monotonic()`` as it starts: the sandbox has no
time namespace, so that is the node's own clock, and the test can compare it with the timetable.

Timing margins: a run starts (fork, namespaces, reading its input, compiling) 15-30 ms after it
is dispatched on an idle 2-core machine; the checks allow 300 ms, ten times that, for a loaded
machine. What they rule out is a shift by a whole run (the sleeping run's 2 s).
"""

from __future__ import annotations

import json
import threading
import time

from rds_kernel.sandbox import Limits, SandboxConfig, Session
from tests.sandbox.helpers import arrow

# run 0 (one row) sleeps far past its limit; the others return when they started
STARTS = (
    "def f(df):\n"
    "    import time\n"
    "    started = time.monotonic()\n"
    "    if len(df) == 1:\n"
    "        time.sleep(100)\n"
    "    return started\n"
)
LATE = 0.3  # seconds: how late a run may start on a loaded machine (see the module docstring)


def inputs(sizes: list[int]) -> list[bytes]:
    return [arrow({"x": [float(i) for i in range(n)]}) for n in sizes]


def test_a_run_that_takes_its_whole_slot_does_not_delay_the_next(config: SandboxConfig) -> None:
    """Run 0 sleeps until it is killed; runs 1-3 still start at their times, and the call
    returns at the end of the timetable, not when the last run ended."""
    slot, run_seconds = 0.6, 0.2
    limits = Limits(cpu_seconds=5, wall_seconds=run_seconds)
    with Session(config, STARTS, entry="f", mode="dp", limits=limits) as session:
        start = time.monotonic() + 0.2
        results = session.run_timetable(inputs([1, 2, 3, 4]), start=start, slot=slot, tolerance=0.1)
        ended = time.monotonic()
    assert results[0].status["timed_out"], results[0].describe()
    for i, r in enumerate(results[1:], start=1):
        assert r.ok, (r.describe(), r.log)
        started = json.loads(r.output or b"")
        assert start + i * slot <= started <= start + i * slot + LATE, (i, started - start)
    assert start + 4 * slot <= ended <= start + 4 * slot + LATE + 1.0  # + closing the sandbox


def test_a_run_is_killed_at_its_planned_time(config: SandboxConfig) -> None:
    """The kill time is fixed by the timetable (the node's clock): run_seconds after the run's
    planned start, so a slow start shortens the run instead of moving its end."""
    limits = Limits(cpu_seconds=5, wall_seconds=0.3)
    source = "def f(df):\n    import time\n    time.sleep(100)\n"
    with Session(config, source, entry="f", mode="dp", limits=limits) as session:
        start = time.monotonic() + 0.2
        [r] = session.run_timetable(inputs([1]), start=start, slot=0.8, tolerance=0.1)
    assert r.status["timed_out"]
    assert r.status["wall_seconds"] <= 0.3 + LATE


def test_a_run_still_going_at_the_end_of_its_slot_is_given_up(config: SandboxConfig) -> None:
    """If a run outlives its slot (here its limit is longer than the slot), the node does not
    wait for it: it counts as failed and the next run starts on time."""
    limits = Limits(cpu_seconds=5, wall_seconds=5.0)
    with Session(config, STARTS, entry="f", mode="dp", limits=limits) as session:
        start = time.monotonic() + 0.2
        results = session.run_timetable(inputs([1, 2]), start=start, slot=0.5, tolerance=0.1)
    assert results[0].problem == "had not ended by the end of its slot"
    assert results[1].ok, (results[1].describe(), results[1].log)
    assert start + 0.5 <= json.loads(results[1].output or b"") <= start + 0.5 + LATE


def test_runs_whose_start_has_passed_are_not_started(config: SandboxConfig) -> None:
    """A node that is late (here: a timetable that began in the past) skips those runs."""
    limits = Limits(cpu_seconds=5, wall_seconds=0.2)
    with Session(config, STARTS, entry="f", mode="dp", limits=limits) as session:
        start = time.monotonic() - 1.0  # runs 0 and 1 were due 1.0 and 0.5 s ago
        results = session.run_timetable(inputs([2, 2, 2, 2]), start=start, slot=0.5, tolerance=0.1)
    assert [r.ok for r in results] == [False, False, True, True]
    assert results[0].problem is not None and "late for its slot" in results[0].problem


def test_killing_the_sandbox_ends_the_timetable_at_once(config: SandboxConfig) -> None:
    """What the node does at shutdown: run_timetable returns at once, the rest failed."""
    limits = Limits(cpu_seconds=5, wall_seconds=2.0)
    source = "def f(df):\n    import time\n    time.sleep(100)\n"
    with Session(config, source, entry="f", mode="dp", limits=limits) as session:
        threading.Timer(0.8, session.kill).start()
        started = time.monotonic()
        results = session.run_timetable(
            inputs([1, 1, 1]), start=started + 0.2, slot=2.5, tolerance=0.1
        )
    assert time.monotonic() - started < 3.0  # the timetable would take 7.7 s
    assert all(not r.ok for r in results)
