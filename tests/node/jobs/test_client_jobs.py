"""The scientist's side of code jobs: ``rds.submit``, ``@rds.job``, the handle, and top-ups."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pandas as pd
import pytest
import requests

import rds_kernel as rds
from rds_kernel.client._jobs_code import function_source
from rds_kernel.errors import BadRequest, BudgetExceeded, PermissionDenied
from rds_kernel.node.api.app import create_app
from tests.node.nodes import TestNode, serve

THRESHOLD = 50  # a global: functions that use it cannot be sent


@pytest.fixture
def url(node: TestNode) -> Iterator[str]:
    with serve(create_app(service=node.service)) as base:
        yield base


@pytest.fixture
def alice(node: TestNode, url: str) -> Iterator[rds.Node]:
    with rds.connect(url, token=node.tokens["alice"]) as n:
        yield n


def share_with_cvd(df):  # type: ignore[no-untyped-def]
    return float(df["cvd"].mean())


@pytest.mark.server
def test_submit_a_dp_job_and_get_its_answer(alice: rds.Node) -> None:
    patients = alice.dataset("patients")
    job = rds.submit(
        share_with_cvd, dataset=patients, epsilon=1.5, bounds=(0, 1), partitions=4, run_seconds=0.25
    )
    value = job.result(timeout=60)
    info = job.refresh()["result"]
    assert isinstance(value, float)
    tolerance = 6 * math.sqrt(2) * info["summary"]["scale"][0]
    assert -tolerance <= value <= 1 + tolerance
    assert job.progress is None and job.status == "done"  # a DP job shows no progress
    assert alice.budget().epsilon_spent == info["cost"]["epsilon"]
    mock = job.run_on_mock()  # locally, on the mock data, with real noise; spends nothing
    assert isinstance(mock, float)
    assert alice.budget().epsilon_spent == info["cost"]["epsilon"]
    assert [j.id for j in rds.client.jobs(alice)] == [job.id]
    assert "done" in job._repr_html_()


@pytest.mark.server
def test_the_decorator_tries_on_mock_then_submits(alice: rds.Node) -> None:
    patients = alice.dataset("patients")

    @rds.job(
        dataset=patients, epsilon=1.0, bounds=[(18, 95), (0, 1)], partitions=5, run_seconds=0.25
    )
    def profile(df):  # type: ignore[no-untyped-def]
        return [df["age"].mean(), df["smoker"].mean()]

    assert profile(pd.DataFrame({"age": [20, 40], "smoker": [True, False]})) == [30.0, 0.5]
    assert len(profile.run_on_mock()) == 2
    values = profile.submit().result(timeout=60)
    assert isinstance(values, list) and len(values) == 2


def until(job: rds.Job, status: str) -> None:
    deadline = time.monotonic() + 60
    while job.status != status:
        assert time.monotonic() < deadline, f"job {job.id} never reached {status}"
        time.sleep(0.05)


@pytest.mark.server
def test_a_reviewed_job_shows_its_mock_run_and_waits_for_the_owner(
    alice: rds.Node, node: TestNode, url: str
) -> None:
    patients = alice.dataset("patients")

    def by_region(df):  # type: ignore[no-untyped-def]
        return df.groupby("region").size().rename("n").reset_index()

    job = rds.submit(by_region, dataset=patients, message="patients per region")
    until(job, "pending_review")
    with pytest.raises(rds.NodeUnavailable, match="still pending_review"):
        job.result(timeout=0.2)  # it waits for the owner
    assert job.mock is not None and job.mock["output"]["columns"] == ["region", "n"]
    owner = {"Authorization": f"Bearer {node.tokens['owner']}"}
    for stage in ("pending_review", "output_review"):  # the code, then the output
        until(job, stage)
        r = requests.post(f"{url}/v1/admin/jobs/{job.id}/approve", json={}, headers=owner)
        assert r.status_code == 200, r.text
    table = job.result(timeout=60)
    assert isinstance(table, pd.DataFrame) and table["n"].sum() == 3000

    denied = rds.submit(by_region, dataset=patients, message="again")
    until(denied, "pending_review")
    requests.post(f"{url}/v1/admin/jobs/{denied.id}/deny", json={"note": "no"}, headers=owner)
    with pytest.raises(PermissionDenied, match="denied"):
        denied.result(timeout=10)


@pytest.mark.server
def test_a_job_beyond_the_budget_is_refused_and_a_top_up_can_be_requested(
    alice: rds.Node,
) -> None:
    patients = alice.dataset("patients")
    with pytest.raises(BudgetExceeded, match="request_budget"):
        rds.submit(share_with_cvd, dataset=patients, epsilon=5, bounds=(0, 1), partitions=5)
    asked = rds.request_budget(alice, epsilon=3, reason="the full analysis plan needs 5")
    assert asked["status"] == "pending"
    assert [r["id"] for r in rds.client.budget_requests(alice)] == [asked["id"]]


def test_the_source_sent_is_the_function_alone() -> None:
    """Decorators are dropped, nested functions dedented; pd and np may be used freely."""

    def outer() -> object:
        @staticmethod
        def inner(df):  # type: ignore[no-untyped-def]
            return float(np.mean(pd.Series([1, 2])))  # noqa: F821 - np exists in the sandbox

        return inner

    source, entry = function_source(outer().__func__)  # type: ignore[attr-defined]
    assert entry == "inner"
    assert source.startswith("def inner(df):")
    assert "@staticmethod" not in source


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (lambda df: 1.0, "lambda"),
        (print, "defined with `def`"),
    ],
)
def test_what_cannot_be_sent_is_refused_here(function: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        function_source(function)  # type: ignore[arg-type]


def test_functions_that_use_outside_names_are_refused_here() -> None:
    limit = 3

    def uses_closure(df):  # type: ignore[no-untyped-def]
        return float(len(df) > limit)

    def uses_global(df):  # type: ignore[no-untyped-def]
        return float(len(df) > THRESHOLD)

    def uses_math(df):  # type: ignore[no-untyped-def]
        return math.sqrt(len(df))

    for f, name in [(uses_closure, "limit"), (uses_global, "THRESHOLD"), (uses_math, "math")]:
        with pytest.raises(BadRequest, match=f"defined outside it \\({name}\\)"):
            function_source(f)


def test_source_text_can_be_sent_as_it_is() -> None:
    text = "import math\n\ndef f(df):\n    return math.pi\n"
    assert function_source(text) == (text, "f")
    with pytest.raises(BadRequest, match="several functions"):
        function_source(text + "\ndef g(df):\n    return 1\n")
    assert function_source(text + "\ndef g(df):\n    return 1\n", "g")[1] == "g"


def test_a_dp_job_says_how_long_it_will_take_and_when_it_finishes() -> None:
    """Its timetable instead of progress: the draft's expected duration (with the default
    start-up of 2 s), and a running job's expected finish, as the node reports it."""
    from types import SimpleNamespace

    from rds_kernel.client._jobs import Job, JobDraft

    patients = SimpleNamespace(name="patients")
    draft = JobDraft(
        share_with_cvd, patients, epsilon=1.0, bounds=(0, 1), partitions=50, run_seconds=0.5
    )  # type: ignore[arg-type]
    assert draft.expected_seconds == pytest.approx(2 + 50 * (0.5 + 0.4))
    assert "lasts about 47 s" in repr(draft)
    assert "one at a time" in draft.preview and "no progress" in draft.preview
    assert "lasts about 47 s" in draft._repr_html_()

    raw = {
        "id": "0123456789abcdef",
        "kind": "dp",
        "dataset": "patients",
        "status": "running",
        "progress": None,
        "finishes_at": "2030-01-01T12:00:00+00:00",
        "params": {**draft.params, "timetable": {"seconds": 47.0}},
    }
    job = Job(SimpleNamespace(name="node"), raw)  # type: ignore[arg-type]
    assert "finishes at about" in repr(job) and "finishes at about" in job._repr_html_()
    assert "<progress" not in job._repr_html_()
    queued = Job(SimpleNamespace(name="node"), {**raw, "status": "queued", "finishes_at": None})  # type: ignore[arg-type]
    assert "lasts about 47 s once it starts" in repr(queued)
