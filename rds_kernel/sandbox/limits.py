"""What one sandboxed run may use: CPU, wall-clock, memory, files, processes, output."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Limits"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Hard limits of one run (one partition, or one reviewed run).

    ``cpu_seconds``, ``memory_bytes`` (address space), ``file_bytes`` (largest file written),
    ``open_files`` and ``processes`` (threads count) are rlimits of the run's process;
    ``wall_seconds`` is enforced by killing the run's whole PID namespace (a DP run: that long
    after its planned start in the job's timetable, see ``Session.run_timetable``).
    ``tmp_bytes`` is the size of the run's private ``/tmp``. The node keeps at most
    ``result_bytes`` of the result and ``log_bytes`` of stdout and stderr together; a larger
    result counts as a failure.
    """

    cpu_seconds: int = 10
    wall_seconds: float = 30.0
    memory_bytes: int = 2048 * MiB
    file_bytes: int = 16 * MiB
    open_files: int = 64
    processes: int = 32
    tmp_bytes: int = 16 * MiB
    result_bytes: int = 1 * MiB
    log_bytes: int = 64 * 1024

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
