"""One scientist against the node: does everyone else still get answers, and does memory stay?

Part 1 replays the freeze of issue 10 against `rds node serve` in its own process: mallory
fires 40 heavy releases at once (the original one — 10,000 public keys × 32 means, now refused
by the work estimate — and one the node admits, just under `max_query_work`), and keeps
resubmitting each for `--seconds`, waiting the Retry-After of a 429 as the rds client does.
Meanwhile it measures /healthz and another scientist's small release, and compares them with
the same figures on an idle node. The flood's 40 client threads run on the same machine as the
node and take CPU from it, so the figures are pessimistic.

Part 2 (`--soak-minutes`, default 10; 0 skips it) previews and releases a stream of distinct
large queries and prints the node's resident memory (RSS) once a minute.

Run:  .venv/bin/python benchmarks/abuse.py [--seconds 30] [--soak-minutes 10]
Targets (issue 10): during the flood /healthz p99 < 100 ms, the other scientist's release p50
< 2x idle; RSS flat during the soak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rds_kernel.demo.patients import write_demo_dataset  # noqa: E402
from rds_kernel.node.service import NodeService  # noqa: E402
from rds_kernel.node.settings import make_private_directory, write_settings  # noqa: E402
from rds_kernel.spec import Query, count, mean  # noqa: E402

ONE_KEYS = {"age": list(range(18, 96)), "sex": ["F", "M"]}


def ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_node(workdir: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    node_dir = make_private_directory(workdir / "node")
    settings = write_settings(node_dir, name="abuse", port=0)
    svc = NodeService(settings)
    svc.store.create_all()
    data, schema = write_demo_dataset(workdir / "source", "hospital_a")
    svc.datasets.add("patients", data, schema, mock_rows=100)
    tokens = {}
    for name in ("mallory", "bob"):
        _u, tokens[name] = svc.add_user("bench", name, "scientist", epsilon=1e6)
    svc.close()
    port = _free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "rds_kernel.cli.main", "--dir", str(node_dir), "node", "serve"),
            *("--port", str(port), "--log-level", "warning"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return proc, url, tokens
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the node did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def small_release(session: requests.Session, url: str) -> float:
    spec = Query("patients").agg(count(), mean("age")).spec(0.01).to_dict()
    started = time.perf_counter()
    r = session.post(url + "/v1/queries", json={"request_id": uuid.uuid4().hex, "spec": spec})
    r.raise_for_status()
    return time.perf_counter() - started


def healthz(url: str) -> float:
    started = time.perf_counter()
    requests.get(url + "/healthz", timeout=30).raise_for_status()
    return time.perf_counter() - started


def heavy_specs() -> dict[str, dict[str, Any]]:
    # the original freeze: 10,000 public keys (1,000 ages x 2 sexes x 5 regions) x 32 means
    regions = ["city", "suburbs", "coast", "valley", "highlands"]
    freeze_keys = {"age": list(range(1000)), "sex": ["F", "M"], "region": regions}
    means = [mean("age", bounds=(0, 100 + i), alias=f"m{i}") for i in range(32)]
    freeze = Query("patients").group_by("age", "sex", "region", keys=freeze_keys)
    # 78 ages x 2 sexes x 5 regions x (32 means + a count): 25,740, under the default 30,000
    admitted = Query("patients").group_by(
        "age", "sex", "region", keys={**ONE_KEYS, "region": regions}
    )
    return {
        "freeze (10,000 keys x 32 means)": freeze.agg(*means).spec(1e-6).to_dict(),
        "admitted (780 keys x 32 means)": admitted.agg(*means).spec(1e-6).to_dict(),
    }


def measure(url: str, bob: requests.Session, seconds: float) -> tuple[list[float], list[float]]:
    health: list[float] = []
    releases: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        health.append(healthz(url))
        releases.append(small_release(bob, url))
        time.sleep(0.05)
    return health, releases


def flood(url: str, token: str, spec: dict[str, Any], stop: threading.Event) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    spec_json = json.dumps(spec)  # encoded once: the flood should load the node, not itself

    def one() -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        s.headers["Content-Type"] = "application/json"
        while not stop.is_set():
            body = f'{{"request_id": "{uuid.uuid4().hex}", "spec": {spec_json}}}'
            try:
                r = s.post(url + "/v1/queries", data=body, timeout=120)
                code = r.status_code
            except requests.RequestException:
                code = 0
            with lock:
                statuses[code] += 1
            if code == 429:  # as the rds client does: wait the Retry-After the node asks for
                time.sleep(float(r.headers.get("Retry-After", 1)))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(40)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(130)
    return statuses


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(url: str, token: str, pid: int, minutes: float) -> None:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    print(f"\nsoak: {minutes:g} min of distinct large previews and releases")
    started = time.monotonic()
    i = 0
    next_report = started
    while time.monotonic() - started < minutes * 60:
        if time.monotonic() >= next_report:
            done = (time.monotonic() - started) / 60
            print(f"  {done:5.1f} min   RSS {rss_mib(pid):7.1f} MiB   ({i} requests)", flush=True)
            next_report += 60
        spec = (
            Query("patients")
            .group_by("age", "sex", keys=ONE_KEYS)
            .agg(count(), *(mean("age", bounds=(0, 100 + i + j), alias=f"m{j}") for j in range(8)))
            .spec(0.001)
            .to_dict()
        )
        s.post(url + "/v1/queries/preview", json=spec, timeout=60).raise_for_status()
        if i % 5 == 0:
            body = {"request_id": uuid.uuid4().hex, "spec": spec}
            s.post(url + "/v1/queries", json=body, timeout=60).raise_for_status()
        i += 1
    print(f"  {minutes:5.1f} min   RSS {rss_mib(pid):7.1f} MiB   ({i} requests)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, tokens = start_node(Path(tmp))
        try:
            bob = requests.Session()
            bob.headers["Authorization"] = f"Bearer {tokens['bob']}"
            idle_h, idle_r = measure(url, bob, min(10.0, args.seconds))
            print(
                f"idle:   /healthz p50 {ms(idle_h, 0.5):6.1f} ms p99 {ms(idle_h, 0.99):6.1f} ms"
                f"   bob's release p50 {ms(idle_r, 0.5):6.1f} ms"
            )
            for label, spec in heavy_specs().items():
                stop = threading.Event()
                out: list[Counter[int]] = []
                flooder = threading.Thread(
                    target=lambda s=spec, o=out, e=stop: o.append(
                        flood(url, tokens["mallory"], s, e)
                    )
                )
                flooder.start()
                time.sleep(1.0)
                health, releases = measure(url, bob, args.seconds)
                stop.set()
                flooder.join(200)
                ratio = statistics.median(releases) / statistics.median(idle_r)
                print(
                    f"flood {label}: /healthz p50 {ms(health, 0.5):6.1f} ms "
                    f"p99 {ms(health, 0.99):6.1f} ms   bob's release p50 "
                    f"{ms(releases, 0.5):6.1f} ms ({ratio:.2f}x idle)   mallory's answers "
                    f"{dict(sorted(out[0].items()))}"
                )
            if args.soak_minutes > 0:
                soak(url, tokens["bob"], proc.pid, args.soak_minutes)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
