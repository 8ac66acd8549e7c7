"""Overhead of a DP code job (sample-and-aggregate) beyond the scientist's function's own work.

A k=50 job on the demo patients, through the node's job service with the real sandbox
(bubblewrap, one template per job forking an isolated run per partition), as a scientist's
submission runs it. Prints:

  (a) the function's own work: it runs on the same 50 partitions in this process, one after
      the other, with no sandbox (pandas frames built beforehand, not timed);
  (b) the whole job, end to end (validate, calibrate, read, partition, sandbox start, 50 runs,
      clamp, OpenDP noise, charge), p50 over --repeat jobs;
  (c) the overhead: (b) minus (a) divided by the runs in parallel (job_parallel);
  and where the time goes: sandbox start-up, the runs, the rest.

Run:  .venv/bin/python benchmarks/sample_aggregate.py [--rows 100000] [--partitions 50]
Target (issue 6): k = 50 on 2 cores with at most 3 s of overhead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rds_kernel.demo.patients import write_demo_dataset  # noqa: E402
from rds_kernel.node.jobs import JobService  # noqa: E402
from rds_kernel.node.jobs_run import partition  # noqa: E402
from rds_kernel.node.service import NodeService  # noqa: E402
from rds_kernel.node.settings import write_settings  # noqa: E402
from rds_kernel.sandbox import Limits, SandboxConfig, Session  # noqa: E402

SOURCE = '''
def systolic_slope(df):
    """Least-squares slope of systolic blood pressure on age: a typical small model fit."""
    x = df["age"].to_numpy(dtype=float)
    y = df["systolic_bp"].to_numpy(dtype=float)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())
'''


def own_work(parts: list, repeat: int = 3) -> float:
    namespace: dict[str, object] = {}
    exec(compile(SOURCE, "<bench>", "exec"), namespace)  # our own benchmark code, no sandbox
    f = namespace["systolic_slope"]
    frames = [p.to_pandas() for p in parts]
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for frame in frames:
            f(frame)  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        node_dir = Path(tmp) / "node"
        node_dir.mkdir(mode=0o700)
        settings = write_settings(node_dir, name="bench")
        service = NodeService(settings)
        service.store.create_all()
        data, schema = write_demo_dataset(Path(tmp) / "src", "hospital_a", n=args.rows)
        service.datasets.add("patients", data, schema, mock_rows=200)
        service.store.add_user("alice", "scientist", actor="bench")
        service.store.set_budget("alice", 1000.0, actor="bench")
        alice = service.store.get_user("alice")
        jobs = JobService(service, background=False)
        k = args.partitions
        parallel = settings.job_parallel

        parts = partition(service.datasets.get("patients").scan().collect(), k, None)
        own = own_work(parts)

        # the sandbox alone: start-up, and an empty function on the same partitions
        starts, empties = [], []
        from rds_kernel.node.jobs_run import arrow_stream

        inputs = [arrow_stream(p) for p in parts]
        for _ in range(args.repeat):
            t = time.perf_counter()
            empty = "def f(df):\n    return 0.0\n"
            with Session(SandboxConfig(), empty, entry="f", mode="dp", limits=Limits()) as session:
                starts.append(time.perf_counter() - t)
                t = time.perf_counter()
                results = session.run_all(inputs, parallel=parallel)
                empties.append(time.perf_counter() - t)
            assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]

        totals = []
        for i in range(args.repeat):
            t = time.perf_counter()
            job = jobs.submit(
                alice,
                {
                    "request_id": f"bench-{i}",
                    "kind": "dp",
                    "dataset": "patients",
                    "source": SOURCE,
                    "entry": "systolic_slope",
                    "params": {"bounds": [0.0, 2.0], "epsilon": 1.0, "partitions": k},
                },
            )
            totals.append(time.perf_counter() - t)
            assert job.status == "done", (job.status, job.owner_log)
        jobs.close()
        service.close()

    total = statistics.median(totals)
    overhead = total - own / parallel
    print(f"rows {args.rows}, k = {k}, {parallel} runs in parallel, {args.repeat} jobs")
    print(f"(a) the function's own work, 50 partitions in-process:  {own * 1000:8.1f} ms")
    print(f"(b) the whole DP job, end to end (p50):                  {total * 1000:8.1f} ms")
    print(f"(c) overhead = (b) - (a)/{parallel}:{' ' * 28}{overhead * 1000:8.1f} ms")
    print(
        f"    sandbox start-up (bwrap + python + pandas/pyarrow):  "
        f"{statistics.median(starts) * 1000:8.1f} ms"
    )
    print(
        f"    {k} runs of an empty function (fork + isolation):    "
        f"{statistics.median(empties) * 1000:8.1f} ms"
    )
    print(f"target: overhead <= 3000 ms -> {'met' if overhead <= 3.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
