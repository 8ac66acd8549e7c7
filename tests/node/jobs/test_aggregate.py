"""Sample-and-aggregate's DP layer and the node's partitioning, without the sandbox.

The noise check draws 2000 releases of a fixed input and compares each output's sample standard
deviation with sqrt(2) * its scale. For Laplace noise the sample variance has a relative
standard error of sqrt((kurtosis - 1) / n) = sqrt(5 / 2000) = 5%, so 6 standard errors allow
30% on the variance, i.e. 14-16% on the standard deviation; the mean is held to 6 of its
standard errors.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path

import polars as pl
import pytest

from rds_kernel.dp.aggregate import (
    DEFAULT_START_SECONDS,
    SampleAggregate,
    clamp_outputs,
    parse_output,
    prepare_aggregate,
    release_aggregate,
)
from rds_kernel.errors import SpecError
from rds_kernel.node.jobs.run import partition
from rds_kernel.node.settings import load_settings

DRAWS = 2000


@pytest.mark.parametrize(
    ("bounds", "k", "epsilon"),
    [([[0, 1]], 50, 1.0), ([[18, 95]], 20, 0.5), ([[0, 1], [0, 10], [-1, 1]], 50, 2.0)],
)
def test_the_noise_matches_the_sensitivity(
    bounds: list[list[float]], k: int, epsilon: float
) -> None:
    """Output j gets scale d (upper_j - lower_j) / (k epsilon): epsilon split evenly over the d
    outputs, each with sensitivity (upper_j - lower_j) / k; the cost is OpenDP's map."""
    job = SampleAggregate.from_dict({"bounds": bounds, "epsilon": epsilon, "partitions": k})
    prepared = prepare_aggregate(job)
    d = job.outputs
    expected = [d * (hi - lo) / (k * epsilon) for lo, hi in job.bounds]
    assert prepared.scales == pytest.approx(expected, rel=1e-9)
    assert epsilon * (1 - 1e-9) <= prepared.cost[0] <= epsilon
    assert prepared.cost[1] == 0.0
    centre = [(lo + hi) / 2 for lo, hi in job.bounds]
    draws = [release_aggregate(prepared, [centre] * k) for _ in range(DRAWS)]
    for j, c in enumerate(centre):
        values = [draw[j] for draw in draws]
        expected_sd = math.sqrt(2) * prepared.scales[j]
        assert statistics.fmean(values) == pytest.approx(c, abs=6 * expected_sd / math.sqrt(DRAWS))
        assert 0.84 * expected_sd <= statistics.stdev(values) <= 1.14 * expected_sd


def test_one_partition_moves_the_mean_by_at_most_the_sensitivity() -> None:
    """Clamping bounds what any one run can do: (upper - lower) / k."""
    job = SampleAggregate.from_dict({"bounds": [0, 1], "epsilon": 1.0, "partitions": 10})
    honest = clamp_outputs(job, [[0.5]] * 10)
    hostile = clamp_outputs(job, [[1e308]] + [[0.5]] * 9)
    shift = statistics.fmean(r[0] for r in hostile) - statistics.fmean(r[0] for r in honest)
    assert shift == pytest.approx(0.5 / 10)


def test_failed_or_malformed_outputs_become_the_default() -> None:
    job = SampleAggregate.from_dict(
        {"bounds": [[0, 1], [0, 1]], "epsilon": 1.0, "partitions": 3, "default": [0.1, 0.2]}
    )
    bad = [None, b"{", b"[1, 2, 3]", b'["a", 1]', b"[NaN, 1]", b"[true, 1]", b"0.5"]
    assert all(parse_output(raw, job) is None for raw in bad)
    assert parse_output(b"[0.5, 2]", job) == [0.5, 2.0]
    assert clamp_outputs(job, [None, [0.5, 2.0]]) == [[0.1, 0.2], [0.5, 1.0]]


def test_clamping_is_total() -> None:
    """Whatever stands for a run's output, clamping gives k rows of d numbers in the bounds:
    after the runs nothing may raise (a failure there would follow the data)."""
    job = SampleAggregate.from_dict({"bounds": [0, 1], "epsilon": 1.0, "partitions": 8})
    odd = [None, [math.nan], [math.inf], ["a"], 5, [True], [0.5, 0.5], [2.0]]
    assert clamp_outputs(job, odd) == [[0.5]] * 7 + [[1.0]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epsilon": 1.0, "partitions": 5}, "bounds are required"),
        ({"bounds": [1, 0], "epsilon": 1.0, "partitions": 5}, "below its upper bound"),
        ({"bounds": [0, 1], "epsilon": 0, "partitions": 5}, "between 1e-06 and 1000"),
        ({"bounds": [0, 1], "epsilon": 10**400, "partitions": 5}, "64 bits"),
        ({"bounds": [0, 1e300], "epsilon": 1.0, "partitions": 5}, "beyond ±1e\\+15"),
        ({"bounds": [0, 1], "epsilon": 1.0, "partitions": 0}, "between 1 and"),
        ({"bounds": [0, 1], "epsilon": 1.0, "partitions": 2.5}, "whole number"),
        ({"bounds": [0, 1], "epsilon": 1.0, "partitions": 5, "default": 3}, "outside its bounds"),
        ({"bounds": [0, float("inf")], "epsilon": 1.0, "partitions": 5}, "finite"),
        ({"bounds": [0, 1], "epsilon": 1.0, "partitions": 5, "run_seconds": 0}, "run_seconds"),
        ({"bounds": [0, 1], "epsilon": 1.0, "partitions": 5, "run_seconds": "1"}, "number"),
    ],
)
def test_bad_parameters_say_what_to_fix(params: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        SampleAggregate.from_dict(params)


def test_partitions_are_disjoint_and_cover_every_row() -> None:
    frame = pl.DataFrame({"row": range(1000)})
    parts = partition(frame, 7, None)
    assert len(parts) == 7
    rows = sorted(r for p in parts for r in p.get_column("row").to_list())
    assert rows == list(range(1000))
    assert all(p.height > 0 for p in parts)  # 1000 rows in 7 parts: none empty in practice


def test_with_an_identifier_all_rows_of_a_person_share_a_partition() -> None:
    """User-level privacy: one person can change only one partition's output."""
    frame = pl.DataFrame({"person": [i % 50 for i in range(1000)], "row": range(1000)})
    parts = partition(frame, 8, "person")
    owners = {}
    for i, part in enumerate(parts):
        for person in part.get_column("person").unique().to_list():
            assert owners.setdefault(person, i) == i
    assert len(owners) == 50
    assert sum(p.height for p in parts) == 1000


def test_more_partitions_than_rows_leaves_some_empty() -> None:
    parts = partition(pl.DataFrame({"x": [1, 2]}), 5, None)
    assert [p.columns for p in parts] == [["x"]] * 5
    assert sum(p.height for p in parts) == 2


def test_an_old_node_toml_with_job_parallel_still_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`rds node init` wrote every setting, job_parallel included; DP jobs now run one run at
    a time, so the setting is gone, and an old node.toml loads with a warning saying why."""
    (tmp_path / "node.toml").write_text("job_parallel = 2\n")
    with caplog.at_level(logging.WARNING, logger="rds_kernel.node"):
        settings = load_settings(tmp_path)
    assert "job_parallel" in caplog.text and "one run at a time" in caplog.text
    assert not hasattr(settings, "job_parallel")
    assert settings.job_start_seconds == DEFAULT_START_SECONDS  # the two defaults agree
