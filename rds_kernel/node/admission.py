"""Admission of DP work: its own threads, a per-user limit, and abandoning work nobody awaits.

Releases and previews are CPU work (calibration, OpenDP's mechanisms). They run on a pool of
``release_workers`` threads of their own, so ``/healthz``, metadata and budget reads (which
run on the server's other threads) always answer, however much DP work is queued. One user may
have at most ``max_requests_per_user`` of them in flight, waiting or running; one more is a
``TooManyRequests`` (HTTP 429 with ``Retry-After``) and runs nothing.

A release whose work estimate is at least ``HEAVY_WORK`` runs its mechanism on threads of lower
CPU priority (nice 10), so that one scientist's heavy queries slow down others' small ones as
little as possible.

A request the node refuses (a 4xx) keeps its slot ``REFUSAL_HOLD`` seconds after the answer,
so that a flood of refused requests runs one refusal at a time at most four times a second.

A client that goes away while its work waits in the queue has the work abandoned: the
``abandoned`` event handed to the work is set, and the DP layer checks it right before the
mechanism runs. Work that has started the mechanism goes on and is charged (a release that ran
is always charged); its slot is held until it ends, so disconnecting frees nothing early.

>>> import asyncio
>>> gate = Admission(workers=1, per_user=1)
>>> async def main() -> int:
...     async def connected() -> bool:
...         return False
...     return await gate.run("alice", lambda abandoned: 41 + 1, connected)
>>> asyncio.run(main())
42
>>> gate.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from rds_kernel.errors import RdsError, TooManyRequests

__all__ = ["HEAVY_WORK", "Abandoned", "Admission"]

T = TypeVar("T")

RETRY_AFTER = 1  # seconds: DP work usually takes well under that
_POLL = 0.2  # seconds between checks that the client is still there
REFUSAL_HOLD = 0.25  # seconds a refused request keeps its slot after the answer
HEAVY_WORK = 2_000  # work units (about 0.2 s here) from which a release runs at low priority
HEAVY_NICE = 10  # Linux nice value of the threads that run heavy releases


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (on Linux a thread has a nice value of its own)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICE)


class Abandoned(RdsError):
    """The client went away before its work reached the mechanism: nothing ran or was charged."""

    code = "abandoned"
    status = 499


class Admission:
    """The DP work pool of one node, with a limit on each user's requests in flight."""

    def __init__(self, *, workers: int, per_user: int) -> None:
        self.per_user = per_user
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="rds-release")
        self._heavy = ThreadPoolExecutor(
            workers, thread_name_prefix="rds-heavy", initializer=_lower_priority
        )
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._heavy.shutdown(wait=True, cancel_futures=True)

    def heavy(self, work: Callable[[], T]) -> T:
        """Run CPU-heavy work on a thread of lower priority and wait for it (from the pool).

        One scientist's heavy release then takes only the CPU that lighter work of others
        leaves: on a busy node the small queries go first, and the heavy one still finishes.
        """
        return self._heavy.submit(work).result()

    def in_flight(self, user: str) -> int:
        with self._lock:
            return self._in_flight[user]

    @contextmanager
    def slot(self, user: str) -> Iterator[None]:
        """Hold one of ``user``'s slots, or raise ``TooManyRequests``."""
        with self._lock:
            if self._in_flight[user] >= self.per_user:
                raise TooManyRequests(
                    f"you already have {self._in_flight[user]} release(s) or preview(s) running "
                    f"on this node, its limit per scientist; wait for them to finish and retry "
                    f"in {RETRY_AFTER} s. Nothing was run or charged",
                    {"retry_after": RETRY_AFTER, "limit": self.per_user},
                )
            self._in_flight[user] += 1
        try:
            yield
        finally:
            self._free(user)

    def _free(self, user: str) -> None:
        with self._lock:
            self._in_flight[user] -= 1
            if not self._in_flight[user]:
                del self._in_flight[user]

    def _hold(self, user: str, seconds: float) -> None:
        """Keep one more of ``user``'s slots busy for ``seconds`` (from the event loop)."""
        with self._lock:
            self._in_flight[user] += 1
        asyncio.get_running_loop().call_later(seconds, self._free, user)

    async def run(
        self,
        user: str,
        work: Callable[[threading.Event], T],
        disconnected: Callable[[], Awaitable[bool]],
    ) -> T:
        """Run ``work(abandoned)`` on the pool in one of ``user``'s slots; await its result.

        ``disconnected()`` is polled while the work waits or runs; once it says the client has
        gone, ``abandoned`` is set (the work stops before its mechanism if it has not reached
        it) and the slot is still held until the work ends.
        """
        with self.slot(user):
            abandoned = threading.Event()
            future = asyncio.wrap_future(self._executor.submit(work, abandoned))
            while True:
                done, _pending = await asyncio.wait({future}, timeout=_POLL)
                if done:
                    break
                if not abandoned.is_set() and await disconnected():
                    abandoned.set()
        try:
            return future.result()
        except RdsError as exc:
            # A refusal is answered at once but keeps the slot a moment: refusals are cheap
            # to send and not free to make, and one scientist must not flood the node with them.
            if 400 <= exc.status < 500 and not isinstance(exc, TooManyRequests):
                self._hold(user, REFUSAL_HOLD)
            raise
