"""The node's job queue, fair across scientists, and the heartbeat that tells live jobs from dead.

**The queue.** ``job_workers`` threads run job steps (a DP job, a reviewed job's mock run or its
private run). One scientist has at most ``job_running_per_user`` steps running; their others
wait. When a worker frees, it takes the oldest waiting step of the scientist who has waited
longest — since one of their steps last started or ended, or since they began to wait — not
the oldest step overall: a scientist who sends twenty long jobs holds one worker, and another
scientist's job starts as soon as any worker frees (round-robin by scientist). How long one
step may hold a worker is capped too (``job_max_seconds``, checked at submission), and every
step that reads private data holds it for a time fixed before it read anything (a DP job's
timetable, a reviewed job's padded private run: see ``jobs_dp`` and ``jobs_steps``), so when a
waiting job starts never depends on another job's data.

**The heartbeat.** The process running a job writes the job's ``heartbeat_at`` every sixth of
``job_stale_seconds`` (:class:`Heartbeat`); the server sweeps every half of it
(``JobService.sweep``) and settles jobs whose heartbeat is older than ``job_stale_seconds``:
their process died (``kill -9``, a power cut). So a crash is settled within a minute of the
node coming back, not when the job would have been long over. A process never settles a job
it runs itself, whatever its heartbeat says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rds_kernel.node.store.jobs import JobStore

__all__ = ["Heartbeat", "JobQueue", "Ticker"]

log = logging.getLogger("rds_kernel.node.jobs.service")


class JobQueue:
    """Job steps waiting for a worker, and the workers (see the module docstring).

    ``run(job_id)`` does a step; it runs on one of ``workers`` threads, started on first use.
    :meth:`close` drops the steps still waiting (they stay queued in the database, and the
    next start of the node takes them up again) and waits for the running ones.
    """

    def __init__(
        self,
        workers: int,
        per_user: int,
        run: Callable[[str], None],
        *,
        name: str = "rds-job",
    ) -> None:
        self._workers = max(1, workers)
        self._per_user = max(1, per_user)
        self._run = run
        self._name = name
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[str]] = {}  # by scientist, oldest first
        self._waiting_ids: set[str] = set()
        self._since: dict[str, float] = {}  # since when each scientist has waited
        self._running: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False

    def put(self, user: str, job_id: str) -> None:
        """Queue ``job_id``'s next step for ``user``; a step already waiting is not queued twice.

        A job whose step is running may be queued again (its next step, once this one ends):
        each step claims its job first, so a step with nothing to do ends at once.
        """
        with self._cond:
            if self._closed or job_id in self._waiting_ids:
                return
            if not self._waiting.get(user):
                self._waiting[user] = deque()
                self._since[user] = time.monotonic()  # begins to wait
            self._waiting[user].append(job_id)
            self._waiting_ids.add(job_id)
            if len(self._threads) < self._workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify()

    def waiting(self) -> dict[str, list[str]]:
        """The waiting steps' jobs, by scientist (oldest first)."""
        with self._cond:
            return {user: list(ids) for user, ids in self._waiting.items() if ids}

    def close(self) -> None:
        """Drop the waiting steps; wait for the running ones (stop them first)."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._waiting_ids.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()

    def _next(self) -> str | None:
        """The scientist whose step goes next: of those under their limit, the one who waited
        longest (ties: whoever began to wait first)."""
        ready = [
            user
            for user, ids in self._waiting.items()
            if ids and self._running.get(user, 0) < self._per_user
        ]
        return min(ready, key=lambda user: self._since.get(user, 0.0), default=None)

    def _work(self) -> None:
        while True:
            with self._cond:
                user = self._next()
                while not self._closed and user is None:
                    self._cond.wait()
                    user = self._next()
                if self._closed or user is None:
                    return
                ids = self._waiting[user]
                job_id = ids.popleft()
                if not ids:
                    del self._waiting[user]
                self._waiting_ids.discard(job_id)
                self._running[user] = self._running.get(user, 0) + 1
                self._since[user] = time.monotonic()
            try:
                self._run(job_id)
            except Exception:
                log.exception("job %s crashed", job_id)
            finally:
                with self._cond:
                    self._running[user] -= 1
                    if not self._running[user]:
                        del self._running[user]
                    if user in self._waiting or user in self._running:
                        self._since[user] = time.monotonic()
                    else:
                        self._since.pop(user, None)
                    self._cond.notify_all()


class Heartbeat:
    """Writes ``heartbeat_at`` of the jobs this process runs, every ``interval`` seconds.

    Owner-only: ``heartbeat_at`` is in no scientist's view, and ``updated_at`` (which a
    scientist sees) does not move with it.
    """

    def __init__(self, store: JobStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._jobs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ticker: Ticker | None = None
        self._closed = False

    @contextmanager
    def beating(self, job_id: str) -> Iterator[None]:
        """While the block runs, ``job_id`` is one of this process's jobs."""
        with self._lock:
            self._jobs[job_id] = self._jobs.get(job_id, 0) + 1
            if self._ticker is None and not self._closed:
                self._ticker = Ticker(self._interval, self._beat, name="rds-job-heartbeat")
        try:
            yield
        finally:
            with self._lock:
                self._jobs[job_id] -= 1
                if not self._jobs[job_id]:
                    del self._jobs[job_id]

    def running(self) -> set[str]:
        """The jobs this process runs now."""
        with self._lock:
            return set(self._jobs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.close()

    def _beat(self) -> None:
        self._store.beat(self.running())


class Ticker:
    """Calls ``tick`` every ``interval`` seconds on a daemon thread until :meth:`close`.

    A tick that raises is logged, and the next one comes on time.
    """

    def __init__(self, interval: float, tick: Callable[[], None], *, name: str) -> None:
        self._interval = interval
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tick()
            except Exception:
                log.exception("%s failed", self._thread.name)
