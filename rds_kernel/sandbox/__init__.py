"""The sandbox: where scientist code runs, with no network and hard limits, never in the node.

:class:`Session` starts one sandbox per job (bubblewrap, see :mod:`.launch`) and runs the
scientist's function once per input in a fresh, isolated process (see ``_worker.py``) — for a
DP job one run at a time on a fixed timetable (:meth:`Session.run_timetable`);
:class:`Limits` bounds each run. The node only ever sends the function's *source text* and the
input as Arrow, and only ever reads back capped bytes it treats as hostile.
"""

from rds_kernel.sandbox.launch import SandboxConfig, check_available, runtime_paths
from rds_kernel.sandbox.limits import Limits
from rds_kernel.sandbox.results import RunResult
from rds_kernel.sandbox.session import Session

__all__ = ["Limits", "RunResult", "SandboxConfig", "Session", "check_available", "runtime_paths"]
