"""``rds demo`` as a real child process for tests: started, waited for, and always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rds_kernel.client import Connection, load_connections

READY = "Ctrl-C stops everything."
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


@dataclass
class Demo:
    """A running ``rds demo``: its process, what it printed so far, its saved connections."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def field(self, label: str) -> str:
        """The value printed after ``label`` (e.g. "demo directory"), up to the first space."""
        for line in self.stderr.splitlines():
            if line.strip().startswith(label):
                return line.strip()[len(label) :].split()[0]
        raise AssertionError(f"rds demo printed no {label!r}:\n{self.stderr}")

    @property
    def config_dir(self) -> Path:
        return Path(self.field("connections")).parent

    def connections(self) -> dict[str, Connection]:
        return load_connections(self.config_dir / "connections.json")

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send ``sig`` and wait for the exit code (killing it if it does not stop)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"rds demo ignored signal {sig}:\n{self.stderr}") from None
        return self.process.returncode


@contextmanager
def demo_process(work: Path, *args: str) -> Iterator[Demo]:
    """Run ``rds demo ARGS`` with its temporary files under ``work``; stop it on the way out."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "rds-demo.log"
    env = {**os.environ, "TMPDIR": str(work)}
    env.pop("RDS_CONFIG_DIR", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "rds_kernel.cli.main", "demo", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    demo = Demo(process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while READY not in demo.stderr:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"rds demo did not start:\n{demo.stderr}")
            time.sleep(0.1)
        yield demo
    finally:
        demo.stop()
