"""Code jobs from the scientist's side: send a pandas function to a node, follow it, get a result.

Two kinds (architecture §2):

* a **DP job** (give ``epsilon``, ``bounds`` and ``partitions``): the node runs the function on
  ``partitions`` disjoint random parts of the private rows, clamps each output to ``bounds``,
  averages and adds noise; the answer comes back without anyone's approval, and its exact cost
  is charged to your budget once (reserved when the job starts). The parts run one at a time on
  a fixed timetable, each for at most ``run_seconds`` (default 1 s), so a job lasts about
  ``partitions * (run_seconds + 0.4)`` seconds plus the node's start-up, shows no progress while
  it runs, and ends at the end of its timetable;
* a **reviewed job** (give a ``message`` for the owner): it runs on the mock data at once (you
  see that output), then on the private data once the owner approved the code, and its output
  reaches you once the owner approved it too.

::

    def mean_bmi(df):
        return float(df["bmi"].mean())

    job = node.jobs.submit(mean_bmi, dataset=patients, epsilon=0.5, bounds=(15, 50),
                           partitions=50)   # or rds.submit(mean_bmi, dataset=patients, ...)
    job                 # its status and, while it runs, when it will finish
    job.run_on_mock()   # the same thing, locally on the mock data; spends nothing
    job.result()        # waits; a float (or a list for a list of outputs)
    node.jobs.list()    # your jobs on the node, newest first; node.jobs.get(job.id) one of them

Only the function's **source text** travels (never pickled code), so the function must be
self-contained: import what it needs inside it. ``pd``/``pandas`` and ``np``/``numpy`` are
there already. Nothing the function prints or raises on the private data reaches you; the
node's owner can read it.
"""

from __future__ import annotations

import builtins
import datetime as dt
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rds_kernel.client._jobs_code import decode_output, function_source, run_on_mock
from rds_kernel.client._transport import RELEASE_RETRIES, check_answer, may_have_reached, path
from rds_kernel.errors import (
    BadRequest,
    NodeTimeout,
    NodeUnavailable,
    PermissionDenied,
    ProtocolError,
    RdsError,
    error_class,
)

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.client._dataset import RemoteDataset
    from rds_kernel.client._node import Node
    from rds_kernel.wire import JobView

__all__ = ["Job", "JobDraft", "NodeJobs", "job", "jobs", "submit"]

Bounds = tuple[float, float] | Sequence[tuple[float, float]]
FINAL = ("done", "released", "denied", "failed")


def _dp_params(
    epsilon: float,
    bounds: Bounds | None,
    partitions: int | None,
    default: Any,
    run_seconds: float | None = None,
) -> dict[str, Any]:
    from rds_kernel.dp.aggregate import SampleAggregate

    if bounds is None or partitions is None:
        raise BadRequest(
            "a DP job needs bounds=(lower, upper) for its output and partitions=k, "
            "e.g. bounds=(0, 1), partitions=50"
        )
    raw_bounds: Any = bounds
    scalar = not isinstance(raw_bounds[0], list | tuple)
    params: dict[str, Any] = {
        "bounds": [list(raw_bounds)] if scalar else [list(b) for b in raw_bounds],
        "epsilon": epsilon,
        "partitions": partitions,
        "scalar": scalar,
    }
    if default is not None:
        params["default"] = list(default) if isinstance(default, list | tuple) else [default]
    if run_seconds is not None:
        params["run_seconds"] = run_seconds
    return SampleAggregate.from_dict(params).to_dict()


def expected_seconds(params: dict[str, Any]) -> float | None:
    """How long a DP job with these parameters lasts: the node's timetable, else an estimate.

    A submitted job has the node's own timetable (``params["timetable"]``); before that the
    estimate assumes the default start-up (a node's owner may give jobs more).
    """
    plan = params.get("timetable")
    if isinstance(plan, dict) and isinstance(plan.get("seconds"), int | float):
        return float(plan["seconds"])
    if "partitions" not in params:
        return None
    from rds_kernel.dp.aggregate import SampleAggregate, timetable

    return timetable(SampleAggregate.from_dict(params)).seconds


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class JobDraft:
    """A function with its job settings, not sent yet: :meth:`run_on_mock` and :meth:`submit`.

    Made by :func:`job` (as a decorator); calling it calls the function itself.
    """

    def __init__(self, function: Callable[..., Any], dataset: RemoteDataset, **settings: Any):
        self.function = function
        self.dataset = dataset
        self.settings = settings
        self.source, self.entry = function_source(function)
        self.kind, self.params = _kind(settings)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<JobDraft {self.entry} ({self.kind}) on {self.dataset.name!r}{self._lasts()}>"

    def _repr_html_(self) -> str:
        import html

        return f"<p>{html.escape(self.preview)}</p>"

    def _lasts(self) -> str:
        seconds = self.expected_seconds
        return "" if seconds is None else f": lasts about {_duration(seconds)}"

    @property
    def expected_seconds(self) -> float | None:
        """A DP job's duration on the node (its timetable, with the default start-up)."""
        return expected_seconds(self.params) if self.kind == "dp" else None

    @property
    def preview(self) -> str:
        """What sending it would do: the cost, and for a DP job how long it would take."""
        if self.kind != "dp":
            return (
                f"reviewed job {self.entry} on {self.dataset.name!r}: runs on the mock data at "
                "once; on the private data once the owner approved the code, and its output "
                "reaches you once the owner approved it too"
            )
        p = self.params
        return (
            f"DP job {self.entry} on {self.dataset.name!r}: ε={p['epsilon']:g}, "
            f"{p['partitions']} partitions run one at a time, each for at most "
            f"{p['run_seconds']:g} s; lasts about {_duration(self.expected_seconds or 0)} "
            "whatever the function does (no progress is shown while it runs)"
        )

    def run_on_mock(self) -> Any:
        """Run it here, on the dataset's mock data, as the node would (DP noise included)."""
        return run_on_mock(self.function, self.dataset, self.kind, self.params)

    def submit(self, request_id: str | None = None) -> Job:
        """Send it to the node; see :func:`submit`."""
        return self.dataset.node.jobs.send(self, request_id)


def _kind(settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    epsilon, message = settings.get("epsilon"), settings.get("message")
    if epsilon is not None and message is not None:
        raise BadRequest("give epsilon (a DP job) or message (a reviewed job), not both")
    if epsilon is not None:
        return "dp", _dp_params(
            epsilon,
            settings.get("bounds"),
            settings.get("partitions"),
            settings.get("default"),
            settings.get("run_seconds"),
        )
    if not isinstance(message, str) or not message.strip():
        raise BadRequest(
            "say what kind of job this is: epsilon=... (with bounds and partitions) for a DP "
            "answer, or message='...' for a job the owner reviews"
        )
    return "reviewed", {}


def job(
    *,
    dataset: RemoteDataset,
    epsilon: float | None = None,
    bounds: Bounds | None = None,
    partitions: int | None = None,
    default: Any = None,
    message: str | None = None,
    run_seconds: float | None = None,
) -> Callable[[Callable[..., Any]], JobDraft]:
    """Decorator: ``@rds.job(dataset=patients, epsilon=0.5, bounds=(0, 1), partitions=50)``.

    The decorated name is a :class:`JobDraft`; ``.run_on_mock()`` tries it, ``.submit()`` sends
    it, and showing it says how long it would take.
    """

    def wrap(function: Callable[..., Any]) -> JobDraft:
        return JobDraft(
            function,
            dataset,
            epsilon=epsilon,
            bounds=bounds,
            partitions=partitions,
            default=default,
            message=message,
            run_seconds=run_seconds,
        )

    return wrap


def submit(
    function: Callable[..., Any] | str,
    *,
    dataset: RemoteDataset,
    epsilon: float | None = None,
    bounds: Bounds | None = None,
    partitions: int | None = None,
    default: Any = None,
    message: str | None = None,
    entry: str | None = None,
    request_id: str | None = None,
    run_seconds: float | None = None,
) -> Job:
    """Send ``function`` to ``dataset``'s node: ``dataset.node.jobs.submit(function, ...)``.

    See :meth:`NodeJobs.submit` for the arguments.
    """
    return dataset.node.jobs.submit(
        function,
        dataset=dataset,
        epsilon=epsilon,
        bounds=bounds,
        partitions=partitions,
        default=default,
        message=message,
        entry=entry,
        request_id=request_id,
        run_seconds=run_seconds,
    )


def jobs(node: Node) -> list[Job]:
    """Your jobs on ``node``, newest first: ``node.jobs.list()``."""
    return node.jobs.list()


def _not_callable(*_args: Any) -> Any:
    raise BadRequest("this job was given as source text; run_on_mock needs the function")


class NodeJobs:
    """Your code jobs on one node: :meth:`submit` one, :meth:`list` them, :meth:`get` one."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def __repr__(self) -> str:
        return f"<your jobs on {self._node.name}: .submit(f, dataset=...), .list(), .get(id)>"

    def submit(
        self,
        function: Callable[..., Any] | str,
        *,
        dataset: RemoteDataset | str,
        epsilon: float | None = None,
        bounds: Bounds | None = None,
        partitions: int | None = None,
        default: Any = None,
        message: str | None = None,
        entry: str | None = None,
        request_id: str | None = None,
        run_seconds: float | None = None,
    ) -> Job:
        """Send ``function`` (``def f(df) -> float | list[float]``, or its source text).

        ``dataset`` is one of this node's datasets (a handle, or its name). With ``epsilon``,
        ``bounds`` (``(lower, upper)``, or one pair per number returned) and ``partitions``
        (k) it is a DP job; ``default`` (the midpoint of the bounds unless given) stands in
        for a partition whose run fails or takes longer than ``run_seconds`` (default 1; at
        most the node's ``job_wall_seconds``). The partitions run one at a time on a fixed
        timetable: the job lasts about ``k * (run_seconds + 0.4)`` s plus the node's
        start-up, whatever the function does. With ``message`` it is a reviewed job. A lost
        connection or a timeout is retried with the same ``request_id``, so the node stores
        (and charges) it once. Source text names its function with ``entry``.
        """
        handle = self._node.dataset(dataset) if isinstance(dataset, str) else dataset
        if handle.node is not self._node:
            raise BadRequest(
                f"dataset {handle.name!r} is {handle.node.name}'s, not {self._node.name}'s; "
                f"submit it with {handle.node.name}'s jobs, or pass the dataset's name"
            )
        settings: dict[str, Any] = {"epsilon": epsilon, "bounds": bounds}
        settings.update(partitions=partitions, default=default, message=message)
        settings.update(run_seconds=run_seconds)
        if isinstance(function, str):
            draft = JobDraft.__new__(JobDraft)
            draft.function, draft.dataset, draft.settings = _not_callable, handle, settings
            draft.source, draft.entry = function_source(function, entry)
            draft.kind, draft.params = _kind(settings)
        else:
            draft = JobDraft(function, handle, **settings)
        return self.send(draft, request_id)

    def send(self, draft: JobDraft, request_id: str | None = None) -> Job:
        """Send a :class:`JobDraft` (what ``draft.submit()`` does)."""
        from rds_kernel.wire import JobView

        if not draft.dataset.sends_jobs:
            raise BadRequest(
                f"this cell does not send jobs to {self._node.name}: run the function on "
                "the mock data with rds.job(...)(f).run_on_mock(), or send it from a %%rds --on "
                "cell without --preview"
            )
        request_id = request_id or uuid.uuid4().hex
        body = {
            "request_id": request_id,
            "kind": draft.kind,
            "dataset": draft.dataset.name,
            "source": draft.source,
            "entry": draft.entry,
            "params": draft.params or None,
            "message": draft.settings.get("message") or "",
        }
        transport = self._node._transport
        try:
            view = transport.post("/v1/jobs", body, JobView, retries=RELEASE_RETRIES)
        except NodeUnavailable as exc:  # keeps its kind: unreachable, timeout or protocol
            if not may_have_reached(exc):
                raise type(exc)(
                    f"{exc.message}. Nothing reached the node, so no job was stored",
                    {**exc.detail, "request_id": request_id},
                ) from None
            raise type(exc)(
                f"{exc.message}. The job may have been stored; submit it again with "
                f"request_id={request_id!r} to get it without running it twice",
                {**exc.detail, "request_id": request_id},
            ) from None
        return Job(self._node, view, function=draft.function, dataset=draft.dataset)

    def list(self, limit: int = 100) -> builtins.list[Job]:
        """Your jobs on the node, newest first."""
        from rds_kernel.wire import JobList

        answer = self._node._transport.get("/v1/jobs", JobList, {"limit": limit})
        return [Job(self._node, view) for view in answer.jobs]

    def get(self, job_id: str) -> Job:
        """Your job ``job_id`` as the node sees it now; ``NotFound`` if you have none such."""
        from rds_kernel.wire import JobView

        view = self._node._transport.get(path("v1", "jobs", job_id), JobView)
        return Job(self._node, view)


class Job:
    """A job on a node: its status (and, while a DP job runs, when it will finish), its result.

    :attr:`view` is the job as the node last showed it (asking nothing); :meth:`refresh` asks
    again. ``status``, ``progress``, ``finishes_at`` and ``mock`` ask the node each time.
    """

    def __init__(
        self,
        node: Node,
        view: JobView | Mapping[str, Any],
        *,
        function: Callable[..., Any] | None = None,
        dataset: RemoteDataset | None = None,
    ) -> None:
        self.node = node
        # a JobView (what the node answered), or its JSON (checked when .view is read)
        self._view: JobView | None = None if isinstance(view, Mapping) else view
        self._raw = dict(view) if isinstance(view, Mapping) else view.to_dict()
        self.id = str(self._raw["id"])
        self._function = function
        self._dataset = dataset

    @property
    def view(self) -> JobView:
        """The job as the node showed it last (when fetched or refreshed); asks nothing."""
        if self._view is None:
            from rds_kernel.wire import JobView

            self._view = check_answer(JobView, self._raw, f"GET /v1/jobs/{self.id}")
        return self._view

    def __repr__(self) -> str:
        return (
            f"<Job {self.id} ({self._raw.get('kind')}) on {self.node.name}/"
            f"{self._raw.get('dataset')}: {self._raw.get('status')}, {self._where(self._raw)}>"
        )

    def _repr_html_(self) -> str:
        import html

        raw = self._raw
        progress = self._progress(raw)
        if progress is not None:
            done, total = progress
            cell = f'<progress value="{done}" max="{max(total, 1)}"></progress> {done}/{total}'
        else:
            cell = html.escape(self._where(raw))
        cells = [self.id, raw.get("kind"), raw.get("dataset"), self.status_text]
        row = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        return (
            "<table><tr><th>job</th><th>kind</th><th>dataset</th><th>status</th>"
            f"<th>progress</th></tr><tr>{row}<td>{cell}</td></tr></table>"
        )

    @staticmethod
    def _progress(raw: dict[str, Any]) -> tuple[int, int] | None:
        progress = raw.get("progress")
        if not isinstance(progress, dict):
            return None
        return int(progress.get("done", 0)), int(progress.get("total", 0))

    @staticmethod
    def _where(raw: dict[str, Any]) -> str:
        """Progress (a reviewed job), or what a DP job's timetable says (it has no progress)."""
        progress = Job._progress(raw)
        if progress is not None:
            return f"{progress[0]}/{progress[1]}"
        finishes = raw.get("finishes_at")
        if isinstance(finishes, str):
            try:
                local = dt.datetime.fromisoformat(finishes).astimezone()
            except ValueError:
                return f"finishes at {finishes}"
            return f"finishes at about {local:%H:%M:%S}"
        seconds = expected_seconds(raw.get("params") or {})
        if seconds is None or raw.get("status") in FINAL:
            return "no progress shown"
        return f"lasts about {_duration(seconds)} once it starts"

    @property
    def status_text(self) -> str:
        return str(self._raw.get("status"))

    def refresh(self) -> dict[str, Any]:
        """The node's current view of the job (status, progress, result once released)."""
        from rds_kernel.wire import JobView

        self._view = self.node._transport.get(path("v1", "jobs", self.id), JobView)
        self._raw = self._view.to_dict()
        return dict(self._raw)

    @property
    def status(self) -> str:
        """``queued``/``running``/``done``/``failed`` (DP), or the reviewed job's stage."""
        return str(self.refresh().get("status"))

    @property
    def progress(self) -> tuple[int, int] | None:
        """(runs done, runs in all) of a reviewed job; None for a DP job, which shows none.

        A DP job's runs follow a fixed timetable and the job ends at its end: see
        :attr:`finishes_at` (showing progress would let the runs' durations out).
        """
        return self._progress(self.refresh())

    @property
    def finishes_at(self) -> dt.datetime | None:
        """When a running DP job will finish (the end of its timetable), else None."""
        raw = self.refresh().get("finishes_at")
        return dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None

    @property
    def mock(self) -> dict[str, Any] | None:
        """A reviewed job's run on the node's mock data: output, what it printed, its error."""
        mock = self.refresh().get("mock")
        return dict(mock) if isinstance(mock, dict) else None

    def result(
        self, timeout: float | None = None, *, poll: float = 0.5, progress: bool = False
    ) -> Any:
        """Wait for the job's released result and return it.

        A DP job gives a float (or a list of floats); ``refresh()["result"]`` has its cost and
        accuracy. A reviewed job gives a pandas DataFrame, bytes or the JSON value it returned.
        Raises the job's error if it failed, ``PermissionDenied`` if the owner denied it, and
        ``NodeTimeout`` (a ``NodeUnavailable``) if ``timeout`` seconds pass first.
        ``progress=True`` prints the status (and a DP job's expected finish) while waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            raw = self.refresh()
            if progress:
                print(
                    f"\rjob {self.id}: {raw.get('status')}, {self._where(raw)}",
                    end="",
                    file=sys.stderr,
                )
            if raw.get("status") in FINAL:
                if progress:
                    print(file=sys.stderr)
                return self._final(raw)
            if deadline is not None and time.monotonic() >= deadline:
                raise NodeTimeout(
                    f"job {self.id} is still {raw.get('status')} after {timeout:g} s; call "
                    ".result() again to keep waiting (the job keeps running)",
                    {"job": self.id},
                )
            time.sleep(poll)

    def _final(self, raw: dict[str, Any]) -> Any:
        status = raw.get("status")
        if status == "denied":
            note = raw.get("review_note")
            raise PermissionDenied(
                f"the owner denied job {self.id}"
                + (f": {note}" if note else "")
                + "; nothing of it was released",
                {"job": self.id},
            )
        if status == "failed":
            error = raw.get("error") or {}
            cls: type[RdsError] = error_class(str(error.get("code", "internal_error")))
            raise cls(str(error.get("message", f"job {self.id} failed")), {"job": self.id})
        result = raw.get("result")
        if not isinstance(result, dict) or (raw.get("kind") == "dp" and "value" not in result):
            raise ProtocolError(
                f"job {self.id} is {status} but the node's answer has no result (value); the "
                "node may run another version of rds_kernel than this client",
                {"job": self.id},
            )
        if raw.get("kind") == "dp":
            return result["value"]
        return decode_output(result)

    def run_on_mock(self) -> Any:
        """Run the same function here on the dataset's mock data (DP noise included). Free."""
        if self._function is None or self._dataset is None:
            raise BadRequest("this job handle has no function to run; use rds.job(...) first")
        params = self._raw.get("params") or {}
        return run_on_mock(self._function, self._dataset, str(self._raw.get("kind")), params)
