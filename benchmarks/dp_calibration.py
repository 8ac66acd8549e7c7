"""Prepare and execute latency of the DP layer, against OpenDP's Context, on 1M Parquet rows.

Prints median/min over repeats of:
  (a) OpenDP ``Context`` default path: ``query.resolve()`` (binary search for the scale);
  (b) ``rds_kernel.dp.prepare``: compile on the schema, analytic calibration, verification;
  (c) ``rds_kernel.dp.execute`` on ``pl.scan_parquet`` of a synthetic 1M-row file;
and the 95% accuracy of the mean each path would release (same query, same epsilon).

Run:  .venv/bin/python benchmarks/dp_calibration.py [--rows 1000000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rds_kernel.dp import execute, prepare
from rds_kernel.dp._opendp import dp
from rds_kernel.schema import Schema
from rds_kernel.spec import Query, count, mean, validate

SCHEMA = Schema.from_dict(
    {
        "name": "people",
        "columns": {
            "age": {"type": "int", "bounds": [18, 90]},
            "income": {"type": "float", "bounds": [0.0, 500000.0]},
            "sex": {"type": "category", "categories": ["F", "M"]},
        },
    }
)


def timed(f: Callable[[], Any], repeat: int) -> str:
    f()  # warm up (OpenDP loads its polars plugin on first use)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return f"median {statistics.median(times) * 1e3:7.1f} ms   min {min(times) * 1e3:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.rows
    frame = pl.DataFrame(
        {
            "age": rng.integers(18, 91, n),
            "income": rng.lognormal(10.5, 0.6, n),
            "sex": rng.choice(["F", "M"], n),
        }
    )
    epsilon = 1.0
    spec = Query("people").agg(count(), mean("income")).spec(epsilon=epsilon)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        frame.write_parquet(path)
        context = dp.Context.compositor(
            data=pl.scan_parquet(path),
            privacy_unit=dp.unit_of(contributions=1),
            privacy_loss=dp.loss_of(epsilon=5.0),
            margins=[dp.polars.Margin(by=[], max_length=2**32 - 1)],
        )
        # the same, if the owner declared the exact row count as max_length
        exact = dp.Context.compositor(
            data=pl.scan_parquet(path),
            privacy_unit=dp.unit_of(contributions=1),
            privacy_loss=dp.loss_of(epsilon=5.0),
            margins=[dp.polars.Margin(by=[], max_length=n)],
        )

        def context_query(ctx: Any = context) -> Any:
            return ctx.query(epsilon=epsilon).select(
                dp.len(signed=True),
                pl.col("income").fill_nan(0.0).fill_null(0.0).dp.mean((0.0, 500000.0)),
            )

        print(f"count + mean(income), epsilon={epsilon}, {n:,} rows, 2**32-1 max_length")
        print("(a) Context resolve  ", timed(lambda: context_query().resolve(), args.repeat))
        prepared = prepare(validate(spec, SCHEMA), SCHEMA)
        print(
            "(b) dp.prepare       ",
            timed(lambda: prepare(validate(spec, SCHEMA), SCHEMA), args.repeat),
        )
        print(
            "(c) dp.execute       ",
            timed(lambda: execute(prepared, pl.scan_parquet(path)), args.repeat),
        )
        print(f"    cost {prepared.cost}")
        unknown = (
            Query("people")
            .group_by("sex", keys="unknown")
            .agg(count(), mean("income"))
            .spec(epsilon=epsilon, delta=1e-6)
        )
        print(
            "    dp.prepare, unknown-key group-by (threshold search) ",
            timed(lambda: prepare(validate(unknown, SCHEMA), SCHEMA), args.repeat),
        )

        def mean_accuracy(ctx: Any) -> float:
            table = context_query(ctx).summarize(alpha=0.05)
            return float(table.filter(pl.col("aggregate") == "Sum")["accuracy"][0]) / n

        result = execute(prepared, pl.scan_parquet(path))
        print(
            f"95% accuracy of the mean (≈ sum ± / n): Context ±{mean_accuracy(context):,.2f}, "
            f"Context with max_length = n ±{mean_accuracy(exact):,.2f}, "
            f"ours ±{result.accuracy['mean_income']:,.2f}"
        )
        print(f"true mean {frame['income'].mean():,.2f}, released {result.rows[0][1]:,.2f}")


if __name__ == "__main__":
    main()
