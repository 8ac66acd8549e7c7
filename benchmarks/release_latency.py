"""Release latency and throughput of a count + mean query on a 1M-row Parquet dataset.

Prints p50/p95 of:
  (a) OpenDP's Context, default path (binary search for the noise scale), in-process;
  (b) our DP layer in-process: validate + compile + analytic calibration + execute
      (b1 a new spec every time, b2 a repeated spec served from the node's prepared cache);
  (c) end to end over HTTP against `rds node serve` in its own process, with the ledger
      (c1 repeated spec, c2 a new spec every time);
and releases per second of small queries from 4 concurrent clients.

Run:  .venv/bin/python benchmarks/release_latency.py [--rows 1000000] [--repeat 30]
Targets (issue 2): (c) p50 <= 25 ms and >= 15x faster than (a); >= 150 releases/s.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rds_kernel.demo.patients import generate_patients, patients_schema  # noqa: E402
from rds_kernel.dp import execute, prepare  # noqa: E402
from rds_kernel.node.datasets import PRIVATE_COMPRESSION  # noqa: E402
from rds_kernel.node.runtime import tune_allocator  # noqa: E402
from rds_kernel.node.service import NodeService  # noqa: E402
from rds_kernel.node.settings import make_private_directory, write_settings  # noqa: E402
from rds_kernel.spec import Query, count, mean, validate  # noqa: E402

DATA = ROOT / "benchmarks" / ".data"


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p50 = statistics.median(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"p50 {p50:8.2f} ms   p95 {p95:8.2f} ms   (n={len(ms)})"


def timed(fn: Callable[[int], object], repeat: int, warmup: int = 2) -> list[float]:
    for i in range(warmup):
        fn(-1 - i)
    out = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def query(i: int) -> Query:
    return Query("patients").agg(count(), mean("bmi", bounds=(15.0, 50.0), fill_null=27.0))


def epsilon_for(i: int, vary: bool) -> float:
    # A distinct epsilon gives a distinct spec, so no cache can help.
    return 0.5 + (i + 10) * 1e-6 if vary else 0.5


def bench_opendp_context(path: Path, repeat: int) -> list[float]:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    ctx = dp.Context.compositor(
        data=pl.scan_parquet(path),
        privacy_unit=dp.unit_of(contributions=1),
        privacy_loss=dp.loss_of(epsilon=1e9),
        margins=[dp.polars.Margin(by=[], max_length=2**31 - 1)],
    )

    def run(_i: int) -> None:
        q = ctx.query(epsilon=0.5).select(
            dp.len(signed=True),
            pl.col("bmi").fill_null(27.0).fill_nan(27.0).dp.mean((15.0, 50.0)),
        )
        q.release().collect()

    return timed(run, repeat)


def bench_dp_layer(path: Path, repeat: int, vary: bool) -> list[float]:
    schema = patients_schema().with_name("patients")
    cache: dict[str, object] = {}

    def run(i: int) -> None:
        spec = query(i).spec(epsilon_for(i, vary))
        prepared = cache.get(spec.hash()) if not vary else None
        if prepared is None:
            prepared = prepare(validate(spec, schema), schema)
            cache[spec.hash()] = prepared
        execute(prepared, pl.scan_parquet(path))  # type: ignore[arg-type]

    return timed(run, repeat)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(path: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    node_dir = make_private_directory(workdir / "node")  # `rds node serve` refuses an open one
    # one scientist with 4 clients in flight: lift the per-user limit for the throughput figure
    settings = write_settings(node_dir, name="bench", max_requests_per_user=8)
    svc = NodeService(settings)
    svc.store.create_all()
    schema_file = workdir / "patients.schema.toml"
    schema_file.write_text((ROOT / "rds_kernel" / "demo" / "patients.schema.toml").read_text())
    svc.datasets.add("patients", path, schema_file, mock_rows=100)
    # the demo hospital's own size, for the small-dataset throughput figure
    small = workdir / "small.parquet"
    generate_patients("hospital_a").write_parquet(small)
    svc.datasets.add("small", small, schema_file, mock_rows=100)
    _u, token = svc.store.add_user("bench", "scientist", actor="bench")
    svc.store.set_budget("bench", 1e6, 0.0, actor="bench")
    svc.close()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rds_kernel.cli.main",
            "--dir",
            str(node_dir),
            "node",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise SystemExit("the node did not start")
    return proc, url, token


def bench_http(url: str, token: str, repeat: int, vary: bool) -> list[float]:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"

    def run(i: int) -> None:
        body = {
            "request_id": uuid.uuid4().hex,
            "spec": query(i).spec(epsilon_for(i + (10_000 if vary else 0), vary)).to_dict(),
        }
        r = s.post(url + "/v1/queries", json=body, timeout=60)
        r.raise_for_status()

    return timed(run, repeat)


def bench_throughput(
    url: str, token: str, clients: int, per_client: int, dataset: str = "patients"
) -> float:
    spec = Query(dataset).agg(count()).spec(0.01).to_dict()
    errors: list[BaseException] = []

    def worker() -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        try:
            for _ in range(per_client):
                r = s.post(
                    url + "/v1/queries",
                    json={"request_id": uuid.uuid4().hex, "spec": spec},
                    timeout=60,
                )
                r.raise_for_status()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise SystemExit(f"throughput run failed: {errors[0]!r}")
    return clients * per_client / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    tune_allocator()  # as `rds node serve` does, so in-process figures compare with (c)

    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"patients_{args.rows}.lz4.parquet"
    if not path.exists():
        # stored as the node stores private data, so (a), (b) and (c) read the same bytes
        generate_patients("hospital_a", n=args.rows).write_parquet(
            path, compression=PRIVATE_COMPRESSION
        )
    print(
        f"dataset: {args.rows:,} rows, {path.stat().st_size / 1e6:.1f} MB parquet; "
        f"{os.cpu_count()} cores"
    )

    a = bench_opendp_context(path, max(5, args.repeat // 3))
    print(f"(a)  OpenDP Context default path    {percentiles(a)}")
    b1 = bench_dp_layer(path, args.repeat, vary=True)
    print(f"(b1) our DP layer, new spec each     {percentiles(b1)}")
    b2 = bench_dp_layer(path, args.repeat, vary=False)
    print(f"(b2) our DP layer, repeated spec     {percentiles(b2)}")
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, token = start_node(path, Path(tmp))
        try:
            c1 = bench_http(url, token, args.repeat, vary=False)
            print(f"(c1) HTTP + ledger, repeated spec    {percentiles(c1)}")
            c2 = bench_http(url, token, args.repeat, vary=True)
            print(f"(c2) HTTP + ledger, new spec each    {percentiles(c2)}")
            rate = bench_throughput(url, token, clients=4, per_client=100)
            print(
                f"throughput: {rate:.0f} releases/s (count on {args.rows:,} rows, "
                "4 concurrent clients, 400 releases)"
            )
            rate = bench_throughput(url, token, clients=4, per_client=100, dataset="small")
            print(
                f"throughput: {rate:.0f} releases/s (count on the 12,000-row demo dataset, "
                "4 concurrent clients, 400 releases)"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    speedup = statistics.median(a) / statistics.median(c2)
    print(f"speed-up of (c2) over (a): {speedup:.1f}x (target >= 15x; c p50 target <= 25 ms)")


if __name__ == "__main__":
    main()
