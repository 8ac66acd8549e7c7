"""A node that lives in a ``requests`` adapter: canned JSON per route, every request recorded.

Mounted on a ``requests.Session`` passed to ``rds.connect``, it exercises the whole client
(transport, errors, retries, result building) without a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

URL = "http://node.test:8765"
TOKEN = "tok-SECRET-0123456789abcdef"

SCHEMA: dict[str, Any] = {
    "name": "patients",
    "description": "Synthetic patients",
    "columns": {
        "age": {"type": "int", "bounds": [18, 95], "nullable": False},
        "sex": {"type": "category", "categories": ["F", "M"], "nullable": False},
        "cvd": {"type": "int", "bounds": [0, 1], "nullable": False},
    },
}

NODE_INFO = {
    "name": "hospital_a",
    "version": "0.1.0",
    "opendp_version": "0.16.0",
    "polars_version": "1.36.1",
    "spec_version": 1,
    "user": {"name": "alice", "role": "scientist"},
}

BUDGET = {
    "user": "alice",
    "epsilon_total": 5.0,
    "epsilon_spent": 1.0,
    "epsilon_remaining": 4.0,
    "delta_total": 1e-5,
    "delta_spent": 0.0,
    "delta_remaining": 1e-5,
    "per_dataset": {
        "patients": {
            "epsilon_total": 2.0,
            "epsilon_spent": 1.0,
            "epsilon_remaining": 1.0,
            "delta_total": 0.0,
            "delta_spent": 0.0,
            "delta_remaining": 0.0,
        }
    },
}

SUMMARY = [
    {
        "aggregate": "count",
        "statistic": "count",
        "mechanism": "geometric",
        "scale": 4.0,
        "accuracy": 12.0,
        "threshold": None,
    },
    {
        "aggregate": "mean_cvd",
        "statistic": "mean",
        "mechanism": "geometric",
        "scale": 8.0,
        "accuracy": 0.05,
        "threshold": None,
    },
]

PREVIEW = {
    "dataset": "patients",
    "requested": {"epsilon": 0.5, "delta": 0.0},
    "cost": {"epsilon": 0.5, "delta": 0.0},
    "summary": SUMMARY,
    "budget": BUDGET,
}


def release_answer(request_id: str, *, replayed: bool = False) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "dataset": "patients",
        "node": "hospital_a",
        "spec": {"version": 1, "dataset": "patients", "epsilon": 0.5, "aggregates": []},
        "result": {
            "columns": ["sex", "count", "mean_cvd"],
            "rows": [["F", 1203, 0.21], ["M", 1187, 0.27]],
            "accuracy": {"count": 12.0, "mean_cvd": 0.05},
        },
        "cost": {"epsilon": 0.5, "delta": 0.0},
        "summary": SUMMARY,
        "replayed": replayed,
        "budget": BUDGET,
        "created_at": "2025-01-02T03:04:05+00:00",
    }


@dataclass
class Reply:
    """One canned answer: a status and a JSON body (or raw bytes)."""

    status: int = 200
    body: Any = None
    content: bytes | None = None
    headers: dict[str, str] | None = None


Answer = Reply | Exception


class FakeNode(BaseAdapter):
    """Answers from ``routes[(method, path)]``: a list of replies used in turn (the last
    repeats). An exception in the list is raised, as ``requests`` would on a network failure.
    """

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str], list[Answer]] = {
            ("GET", "/v1/node"): [Reply(body=NODE_INFO)],
            ("GET", "/v1/datasets/patients"): [Reply(body={"name": "patients", "schema": SCHEMA})],
            ("GET", "/v1/budget"): [Reply(body=BUDGET)],
        }
        self.seen: list[requests.PreparedRequest] = []
        self.timeouts: list[Any] = []

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self.routes[(method, path)] = list(answers)

    def calls(self, method: str, path: str) -> list[requests.PreparedRequest]:
        return [r for r in self.seen if (r.method, urlsplit(r.url or "").path) == (method, path)]

    def bodies(self, method: str, path: str) -> list[Any]:
        return [json.loads(r.body or b"null") for r in self.calls(method, path)]

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, timeout: Any = None, **_: Any
    ) -> requests.Response:
        self.seen.append(request)
        self.timeouts.append(timeout)
        path = urlsplit(request.url or "").path
        queue = self.routes.get((request.method or "", path))
        if not queue:
            answer: Answer = Reply(
                404, {"error": {"code": "not_found", "message": "no route", "detail": {}}}
            )
        else:
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        response = requests.Response()
        response.status_code = answer.status
        if answer.content is not None:
            response._content = answer.content
            response.headers = CaseInsensitiveDict({"Content-Type": "application/octet-stream"})
        else:
            response._content = json.dumps(answer.body).encode()
            response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.headers.update(answer.headers or {})
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def session_with(fake: FakeNode) -> requests.Session:
    session = requests.Session()
    session.mount(URL, fake)
    return session
