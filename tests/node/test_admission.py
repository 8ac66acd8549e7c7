"""One scientist cannot take the node down: DP work has its own threads and a per-user limit,
heavy queries are refused before they run, and work nobody awaits is dropped before it runs.

The attack these pin (issue 10): 40 releases of one scientist grouping by 10,000 public keys
with 32 means took every thread of the shared pool; /healthz and another scientist's release
timed out for over 15 minutes, and the work went on after the clients had disconnected.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import rds_kernel.node.api.app as app_module
import rds_kernel.node.service as service_module
from rds_kernel.errors import TooManyRequests
from rds_kernel.node.admission import Admission
from rds_kernel.node.api.app import create_app
from rds_kernel.node.api.serving import GuardedH11Protocol
from rds_kernel.spec import Query, col, count, mean
from tests.node.nodes import TestNode, build_node, serve

pytestmark = pytest.mark.server


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestNode]:
    n = build_node(
        tmp_path / "node", alice_epsilon=50.0, release_workers=3, max_requests_per_user=2
    )
    yield n
    n.service.close()


class Gate:
    """Stands in for the mechanism: blocks until opened, counts who got through."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered: list[Any] = []

    def __call__(self, *args: Any) -> Any:
        self.entered.append(args)
        assert self.opened.wait(30), "the test never opened the gate"
        return Answer()


class Answer:
    def to_dict(self) -> dict[str, Any]:
        return {"columns": ["n"], "rows": [[1.0]]}


def spec(epsilon: float = 0.25) -> dict[str, Any]:
    return Query("patients").agg(count()).spec(epsilon).to_dict()


def post(url: str, token: str, body: dict[str, Any], path: str = "/v1/queries", **kw: Any) -> Any:
    return requests.post(url + path, json=body, headers={"Authorization": f"Bearer {token}"}, **kw)


def in_background(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_one_scientist_saturating_their_limit_leaves_the_node_answering(
    node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice holds her two slots with releases that do not finish: her third is a 429 with
    Retry-After that ran nothing, while /healthz, metadata, budget reads and bob's release
    all answer at once."""
    gate = Gate()
    monkeypatch.setattr(service_module, "execute", gate)
    alice, bob = node.tokens["alice"], node.tokens["bob"]
    with serve(create_app(service=node.service)) as url:
        held = [
            in_background(lambda rid=rid: post(url, alice, {"request_id": rid, "spec": spec()}))
            for rid in ("a1", "a2")
        ]
        wait_until(lambda: len(gate.entered) == 2)

        third = post(url, alice, {"request_id": "a3", "spec": spec()}, timeout=10)
        assert third.status_code == 429
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"]["code"] == "too_many_requests"
        assert "Nothing was run or charged" in third.json()["error"]["message"]
        assert len(gate.entered) == 2

        started = time.monotonic()
        assert requests.get(url + "/healthz", timeout=5).status_code == 200
        h = {"Authorization": f"Bearer {bob}"}
        assert requests.get(url + "/v1/datasets", headers=h, timeout=5).status_code == 200
        assert requests.get(url + "/v1/budget", headers=h, timeout=5).status_code == 200
        assert time.monotonic() - started < 3.0  # generous: each is a few ms when idle

        bobs, bob_out = in_background(
            lambda: post(url, bob, {"request_id": "b1", "spec": spec()}, timeout=20)
        )
        wait_until(lambda: len(gate.entered) == 3)  # bob got a thread of his own
        gate.opened.set()
        for thread, _out in [*held, (bobs, bob_out)]:
            thread.join(20)
        assert [out[0].status_code for _t, out in held] == [200, 200]
        assert bob_out[0].status_code == 200
    spent = node.service.store.budget("alice").epsilon_spent
    assert spent == pytest.approx(0.5)  # the two that ran; the refused third cost nothing


def test_work_nobody_awaits_is_dropped_before_the_mechanism(
    node: TestNode, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With every DP thread busy, a release whose client gave up while it waited in the queue
    never reaches the mechanism and is not charged; work already in the mechanism goes on and
    is charged."""
    busy = build_node(tmp_path / "busy", release_workers=1, max_requests_per_user=2)
    gate = Gate()
    monkeypatch.setattr(service_module, "execute", gate)
    alice = busy.tokens["alice"]
    try:
        with serve(create_app(service=busy.service)) as url:
            first, first_out = in_background(
                lambda: post(url, alice, {"request_id": "first", "spec": spec()}, timeout=20)
            )
            wait_until(lambda: len(gate.entered) == 1)
            with pytest.raises(requests.exceptions.ReadTimeout):
                post(url, alice, {"request_id": "gone", "spec": spec()}, timeout=0.5)
            time.sleep(0.5)  # the node notices the disconnect within its 0.2 s poll
            gate.opened.set()
            first.join(20)
            assert first_out[0].status_code == 200
            wait_until(lambda: busy.service.admission.in_flight("alice") == 0)
        assert len(gate.entered) == 1
        user = busy.service.store.get_user("alice")
        assert busy.service.store.find_release(user, "gone") is None
        assert busy.service.store.budget("alice").epsilon_spent == pytest.approx(0.25)
    finally:
        busy.service.close()


def test_a_query_too_heavy_for_the_node_is_refused_before_it_runs(
    node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 public keys × 32 means took 28 s per release; the work estimate (public facts
    only) refuses it at preview and at release, before anything touches the data."""
    ran: list[Any] = []
    monkeypatch.setattr(service_module, "execute", lambda *a: ran.append(a))
    keys = {"age": list(range(1000)), "sex": ["F", "M"]}  # 2,000 groups × 33 noisy values
    heavy = (
        Query("patients")
        .group_by("age", "sex", keys=keys)
        .agg(*(mean("age", bounds=(0, 100 + i), alias=f"m{i}") for i in range(32)))
        .spec(0.5)
        .to_dict()
    )
    alice = node.tokens["alice"]
    with serve(create_app(service=node.service)) as url:
        for path, body in (
            ("/v1/queries/preview", heavy),
            ("/v1/queries", {"request_id": "heavy", "spec": heavy}),
        ):
            r = post(url, alice, body, path=path, timeout=30)
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert "too big for the node" in error["message"]
            assert error["detail"]["work"] > error["detail"]["limit"] == 30_000
    assert ran == []
    assert node.service.store.budget("alice").epsilon_spent == 0


def test_admission_limits_each_user_alone() -> None:
    """The limit counts waiting and running work per user; one user's slots leave others'."""
    gate = Admission(workers=2, per_user=1)
    with gate.slot("alice"):
        with pytest.raises(TooManyRequests) as refused, gate.slot("alice"):
            pass
        assert refused.value.status == 429
        with gate.slot("bob"):
            assert gate.in_flight("alice") == gate.in_flight("bob") == 1
    assert gate.in_flight("alice") == 0
    gate.close()


def test_a_disconnect_sets_abandoned_and_the_slot_is_held_until_the_work_ends() -> None:
    """Disconnecting frees nothing early: the slot is held while the work still runs."""
    gate = Admission(workers=1, per_user=1)
    seen: list[bool] = []
    release = threading.Event()

    def work(abandoned: threading.Event) -> str:
        assert release.wait(10)
        seen.append(abandoned.is_set())
        return uuid.uuid4().hex

    async def main() -> None:
        async def gone() -> bool:
            return True

        task = asyncio.create_task(gate.run("alice", work, gone))
        await asyncio.sleep(0.5)
        assert gate.in_flight("alice") == 1
        release.set()
        await task

    asyncio.run(main())
    assert seen == [True] and gate.in_flight("alice") == 0
    gate.close()


def _slow_client(host: str, port: int, first: bytes, then: bytes, every: float) -> float:
    """Send ``first``, then one byte of ``then`` every ``every`` s; seconds until the node hangs
    up (or 30 if it never does)."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(first)
        for byte in then:
            time.sleep(every)
            try:
                sock.sendall(bytes([byte]))
                sock.settimeout(0.01)
                if sock.recv(65536) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
            if time.monotonic() - started > 30:
                break
    return time.monotonic() - started


def test_slow_headers_and_slow_bodies_are_cut_off(
    node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client trickling its headers (slowloris) was held for ever; now the node hangs up
    once the headers are late, and a body that stops arriving gets a 408."""
    monkeypatch.setattr(GuardedH11Protocol, "header_seconds", 1.0)
    monkeypatch.setattr(app_module, "BODY_SECONDS", 1.0)
    with serve(create_app(service=node.service)) as url:
        host, port = url.removeprefix("http://").split(":")
        held = _slow_client(host, int(port), b"GET /healthz HTTP/1.1\r\n", b"X" * 100, 0.3)
        assert held < 5, f"a slow-header client was held {held:.1f} s"

        body_start = (
            b"POST /v1/queries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\nAuthorization: Bearer "
            + node.tokens["alice"].encode()
            + b"\r\n\r\n{"
        )
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(body_start)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert requests.get(url + "/healthz", timeout=5).status_code == 200


def test_a_500_keeps_the_clients_connection(
    node: TestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette answered a crash and then re-raised it, and uvicorn then dropped the
    connection: every 500 reset the client's keep-alive. Now it is answered once, cleanly."""

    def boom() -> Any:
        raise RuntimeError("private value 4242")

    monkeypatch.setattr(node.service, "list_datasets", boom)
    with serve(create_app(service=node.service)) as url:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {node.tokens['alice']}"
        ports = []
        for path in ("/v1/datasets", "/v1/budget", "/v1/datasets", "/v1/budget"):
            r = session.get(url + path, timeout=5, stream=True)
            ports.append(r.raw._connection.sock.getsockname()[1])
            r.content  # noqa: B018 - read the body so the connection goes back to the pool
            assert r.status_code == (500 if path == "/v1/datasets" else 200)
            if r.status_code == 500:
                assert r.json()["error"]["code"] == "internal_error"
                assert "4242" not in r.text
        assert len(set(ports)) == 1, "the connection was dropped after a 500"


def _timed_release(service: Any, user: Any, spec_: dict[str, Any]) -> float:
    started = time.perf_counter()
    service.release(user, uuid.uuid4().hex, spec_)
    return time.perf_counter() - started


def test_a_releases_time_says_nothing_about_the_groups_or_rows_it_found(
    node: TestNode, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown-key group-by took about 6 µs per group present in the data, so a release at
    ε = 1e-6 that released nothing still told how many rows matched its filter; a filter that
    Parquet's statistics rule out skipped the scan. Filtered and grouped releases now answer at
    a deadline from public facts: the same time whatever the data holds. (Tolerance: the two
    medians of 5 may differ by scheduling jitter, far below the deadline of ~0.14 s here.)"""
    service = node.service
    alice = service.store.get_user("alice")
    key = col("systolic_bp") * 1000 + col("age")

    def spec_(low: int) -> dict[str, Any]:
        q = Query("patients").with_columns(k=key).filter(col("age") >= low)
        q = q.group_by("k", keys="unknown").agg(count(), count("bmi", alias="n_bmi"))
        return q.spec(1e-6, delta=1e-12).to_dict()

    many, none = spec_(18), spec_(200)
    prepared = service._prepared_query(many)[2]
    padding = prepared.padding(service.datasets.get("patients").rows_bound)
    assert padding is not None and padding > 0.05
    for s in (many, none):
        _timed_release(service, alice, s)  # prepared once
    times = {
        name: statistics.median(_timed_release(service, alice, s) for _ in range(5))
        for name, s in (("many groups", many), ("no rows", none))
    }
    assert all(t >= padding for t in times.values()), (times, padding)
    assert abs(times["many groups"] - times["no rows"]) < padding / 4, (times, padding)
    assert not any("beyond its padding" in r.message for r in caplog.records)


def test_plain_releases_are_not_padded_and_overruns_are_logged(
    node: TestNode, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A release that reads every row whatever the data (no filter, group-by or truncation)
    has nothing to hide in its time; a padded release that outlasts its deadline is logged
    with the release_padding to set."""
    plain = Query("patients").agg(count()).spec(0.5)
    assert node.service._prepared_query(plain.to_dict())[2].padding(4096) is None
    tight = build_node(tmp_path / "tight", release_padding=1e-6)
    try:
        alice = tight.service.store.get_user("alice")
        spec_ = Query("patients").group_by("sex").agg(count()).spec(0.5).to_dict()
        with caplog.at_level("WARNING", logger="rds_kernel.node"):
            tight.service.release(alice, "r1", spec_)
        [warning] = [r for r in caplog.records if "beyond its padding" in r.message]
        assert "set release_padding = " in warning.getMessage()
    finally:
        tight.service.close()
