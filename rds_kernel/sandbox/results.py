"""What comes back from a run: capped streams from its pipes, and how it ended."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CHUNK", "RunPipes", "RunResult", "Stream"]

CHUNK = 65536


@dataclass
class RunResult:
    """How one run ended. ``output`` is the raw result bytes (None if missing or too large)."""

    index: int
    output: bytes | None
    log: str
    status: dict[str, Any]
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when the run exited 0 within its limits and its result fits the cap."""
        return (
            self.problem is None
            and self.output is not None
            and self.status.get("exit_code") == 0
            and not self.status.get("timed_out")
        )

    def describe(self) -> str:
        """One line for the owner: how the run ended."""
        if self.problem:
            return self.problem
        if self.status.get("timed_out"):
            return "killed at the wall-clock limit"
        code = self.status.get("exit_code")
        if code == 0:
            return "ok" if self.output is not None else "result larger than the limit"
        if isinstance(code, int) and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (CPU time limit)" if name in ("SIGXCPU", "SIGKILL") else ""
            return f"killed by {name}{hint}"
        return f"exited with status {code}"


@dataclass
class Stream:
    """The node's end of one pipe from a run: keeps the first ``cap`` bytes, drains the rest."""

    fd: int
    cap: int
    data: bytearray = field(default_factory=bytearray)
    overflow: bool = False
    closed: bool = False

    def read(self, sel: selectors.BaseSelector) -> None:
        try:
            chunk = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self.close(sel)
            return
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.overflow = True
        if room > 0:
            self.data += chunk[:room]

    def close(self, sel: selectors.BaseSelector) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(self.fd)
        os.close(self.fd)


@dataclass
class RunPipes:
    """A run in flight: its three pipes and when the node stops waiting for it."""

    index: int
    deadline: float
    result: Stream
    log: Stream
    status: Stream

    def result_of(self) -> RunResult:
        """The run's outcome, once its supervisor's status pipe has closed."""
        try:
            status = json.loads(bytes(self.status.data)) if not self.status.overflow else {}
        except ValueError:
            status = {}
        if not isinstance(status, dict) or status.get("run") != self.index:
            return RunResult(self.index, None, "", {}, problem="the run's supervisor failed")
        log_text = self.log.data.decode(errors="replace")
        if self.log.overflow:
            log_text += "\n[rds sandbox] output beyond this point was dropped\n"
        output = None if self.result.overflow else bytes(self.result.data)
        return RunResult(self.index, output, log_text, status)
