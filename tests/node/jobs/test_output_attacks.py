"""Crafted run outputs: no output a run sends may make a job fail (a free, exact bit).

The attack: the scientist's function runs in the worker's interpreter and writes what it likes
to its result pipe (here: straight to the pipe, then it exits 0, the most general way; the
reported attack replaced ``json.dumps``). A 401-digit integer made ``math.isfinite`` raise
``OverflowError`` in the node, ``"[" * 200000`` made ``json.loads`` raise ``RecursionError``;
the job became ``failed``, nothing was charged, and ``failed`` vs ``done`` could follow any
condition on the private data (a smoker count was recovered exactly in 14 jobs for ε = 7e-6).
Now parsing is strict and total: such a run counts as failed (the default), and the job is
``done`` and charged. A reviewed job's output that cannot be parsed goes to the owner as a
failing check instead of leaving the job stuck in ``running``.

Noise: DP checks allow 6 standard deviations (sqrt(2) * scale) of the Laplace noise.
"""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rds_kernel.dp.aggregate import SampleAggregate, max_output_bytes, parse_output
from rds_kernel.node.jobs import checks as jobs_checks
from rds_kernel.node.jobs.service import JobService
from tests.node.jobs.helpers import dp, reviewed

# each payload, and the expression that builds it in the scientist's function
PAYLOADS = {"huge_integer": b"1" * 401, "deep_nesting": b"[" * 200_000}
BUILT = {"huge_integer": 'b"1" * 401', "deep_nesting": 'b"[" * 200_000'}


def writes(name: str) -> str:
    """A function that writes payload ``name`` to its result pipe (its only pipe past stderr)
    and exits 0 before the worker writes the real result."""
    return (
        "def f(df):\n"
        "    import os, stat\n"
        f"    payload = {BUILT[name]}\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        "                os.write(fd, payload)\n"
        "        except OSError:\n"
        "            pass\n"
        "    os._exit(0)\n"
    )


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_crafted_output_is_a_failed_run_and_the_job_is_done_and_charged(
    jobs: JobService, name: str
) -> None:
    """Every run sends the payload: every run counts as the default 0.25, so the release is
    0.25 plus noise, and the cost is charged like any other job's."""
    alice = jobs.node.store.get_user("alice")
    job = jobs.submit(alice, dp(writes(name), default=0.25, epsilon=1.5))
    assert job.status == "done", (job.error, job.owner_log)
    result = job.public()["result"]
    tolerance = 6 * math.sqrt(2) * result["summary"]["scale"][0]
    assert abs(result["value"] - 0.25) <= tolerance
    assert jobs.node.store.budget("alice").epsilon_spent == result["cost"]["epsilon"]


def test_a_reviewed_output_that_cannot_be_parsed_goes_to_review_as_a_failing_check(
    jobs: JobService,
) -> None:
    """It used to raise in the node and leave the job ``running`` forever."""
    alice = jobs.node.store.get_user("alice")
    job = jobs.submit(alice, reviewed(writes("deep_nesting")))
    assert job.status == "pending_review"
    assert job.public()["mock"]["ok"] is False  # the same on the mock data, shown as such
    job = jobs.approve(job.id, actor="owner")
    assert job.status == "output_review"
    assert job.output is None
    assert [c["ok"] for c in job.checks or []] == [False]
    assert job.public()["result"] is None


JOB = SampleAggregate.from_dict({"bounds": [[0, 1], [0, 1]], "epsilon": 1.0, "partitions": 2})
JSONISH = st.text(alphabet=string.digits + "[]{}.,-+eE \"':nullNaInfity", max_size=300)


@given(raw=st.one_of(st.binary(max_size=400), JSONISH.map(str.encode)))
@example(raw=PAYLOADS["huge_integer"])
@example(raw=PAYLOADS["deep_nesting"])
@example(raw=b"[" + b"9" * 60 + b", 1]")
@example(raw=b"[1e999, 1]")
@example(raw=b"[0.5, 0.25]")
@settings(max_examples=500, deadline=None)
def test_parse_output_never_raises_and_returns_finite_floats_or_none(raw: bytes) -> None:
    """Fuzzed: any bytes give None or exactly d finite floats, never an exception."""
    for job in (JOB, SampleAggregate.from_dict({"bounds": [0, 1], "epsilon": 1, "partitions": 2})):
        out = parse_output(raw, job)
        if out is not None:
            assert len(out) == job.outputs
            assert all(type(v) is float and math.isfinite(v) for v in out)
            assert len(raw) <= max_output_bytes(job.outputs)
    assert parse_output(b"[0.5, 0.25]", JOB) == [0.5, 0.25]


@given(raw=st.one_of(st.binary(max_size=400), JSONISH.map(str.encode)))
@example(raw=PAYLOADS["deep_nesting"])
@example(raw=b'{"type": "json", "value": ' + b"[" * 5000 + b"]" * 5000 + b"}")
@example(raw=b'{"type": "table", "columns": ["a"], "kinds": [1], "rows": [[1]]}')
@settings(max_examples=500, deadline=None)
def test_reviewed_outputs_are_parsed_and_checked_without_ever_raising(raw: bytes) -> None:
    """The reviewed path too: parsing, then the automatic checks, are total."""
    output = jobs_checks.parse_output(raw, 1 << 20)
    if output is not None:
        checks = jobs_checks.check_output(output, min_cell_count=10, max_bytes=1 << 20)
        assert checks and all(isinstance(c["ok"], bool) for c in checks)
    assert jobs_checks.parse_output(b"x" * 100, 10) is None  # over the size cap


def test_checks_on_an_output_nested_too_deep_to_walk_fail_instead_of_raising() -> None:
    """json.loads accepts nesting a little under the recursion limit; walking it for small
    counts needs more frames: that must be a failing check, not an exception."""
    deep: object = 1
    for _ in range(990):
        deep = [deep]
    checks = jobs_checks.check_output(
        {"type": "json", "value": deep}, min_cell_count=10, max_bytes=1 << 20
    )
    assert any(not c["ok"] for c in checks)
