"""Node settings, declared as data: name, default, help and check in one place.

A node directory holds ``node.toml``; every key in it must be one of :data:`SETTINGS`. A test
fails when a setting is missing from the README, so the documentation cannot drift.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rds_kernel.errors import BadRequest

__all__ = [
    "SETTINGS",
    "NodeSettings",
    "Setting",
    "check_private_directory",
    "load_settings",
    "make_private_directory",
    "write_settings",
]

NODE_FILE = "node.toml"
log = logging.getLogger("rds_kernel.node")


@dataclass(frozen=True)
class Setting:
    """One node setting: its name, type, default, help text and an optional check."""

    name: str
    type: type
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None


def _port(v: Any) -> str | None:
    return None if 0 <= v <= 65535 else "must be a TCP port between 0 and 65535"


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be positive"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _sandbox(v: Any) -> str | None:
    return None if v in ("bwrap", "rlimits-only", "off") else "must be bwrap, rlimits-only or off"


def _at_least_two(v: Any) -> str | None:
    return None if v >= 2 else "must be at least 2"


def _name(v: Any) -> str | None:
    ok = re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v)
    return None if ok else "must be 1-64 letters, digits, '_', '.' or '-'"


SETTINGS: tuple[Setting, ...] = (
    Setting("name", str, "owner-node", "The node's name, shown to scientists.", _name),
    Setting("host", str, "127.0.0.1", "Address `rds node serve` listens on."),
    Setting("port", int, 8765, "Port `rds node serve` listens on (0 picks a free one).", _port),
    Setting(
        "database_url",
        str,
        "sqlite:///node.db",
        "SQLAlchemy URL of the ledger database; a relative SQLite path is inside the node "
        "directory. PostgreSQL: postgresql+psycopg://user@host:5432/dbname.",
    ),
    Setting("mock_rows", int, 1000, "Rows of generated mock data per dataset.", _positive),
    Setting(
        "max_request_bytes",
        int,
        256 * 1024,
        "Largest request body the node reads; larger requests get HTTP 400.",
        _positive,
    ),
    # Admission of DP work (rds_kernel.node.admission).
    Setting(
        "release_workers",
        int,
        4,  # more than max_requests_per_user: one scientist never holds every thread
        "Releases and previews computed at the same time, on threads of their own: /healthz, "
        "metadata and budget reads never wait for them.",
        _positive,
    ),
    Setting(
        "max_requests_per_user",
        int,
        1,
        "Releases and previews one user may have in flight (waiting or running); one more "
        "gets HTTP 429 with Retry-After.",
        _positive,
    ),
    Setting(
        "max_query_work",
        int,
        30_000,
        "Largest work estimate of one query, in noisy values drawn (groups x noisy aggregates, "
        "about 0.1 ms each); a larger query is refused before anything runs.",
        _positive,
    ),
    Setting(
        "release_padding",
        float,
        1.0,
        "Multiplies the time a filtered or grouped release is padded to (its cost bound from "
        "public facts, so its time says nothing about the data); raise it on a slower host "
        "when the log says releases outlast their padding; 0 turns padding off.",
        _non_negative,
    ),
    Setting(
        "prepared_cache_mb",
        int,
        64,
        "Memory kept for prepared (calibrated) queries, in MiB; the least recently used go first.",
        _positive,
    ),
    # Code jobs (rds_kernel.node.jobs.service); documented in docs_snippets/jobs.md.
    Setting(
        "sandbox",
        str,
        "bwrap",
        "Where scientist code runs: bwrap (bubblewrap: no network, minimal read-only files), "
        "rlimits-only (no bubblewrap: a separate uid and rlimits only; weaker, opt-in) or off "
        "(no code jobs).",
        _sandbox,
    ),
    Setting(
        "sandbox_uid",
        int,
        65534,
        "Unprivileged uid (and gid) scientist code runs as when the node runs as root.",
        _positive,
    ),
    Setting("job_cpu_seconds", int, 10, "CPU seconds one sandboxed run may use.", _positive),
    Setting(
        "job_wall_seconds",
        int,
        30,
        "Wall-clock seconds before a run is killed; the most a DP job may ask for as run_seconds.",
        _positive,
    ),
    Setting("job_memory_mb", int, 2048, "Address space of one run, in MiB (RLIMIT_AS).", _positive),
    Setting("job_processes", int, 32, "Processes and threads one run may have.", _positive),
    Setting(
        "job_start_seconds",
        int,
        2,  # rds_kernel.dp.aggregate.DEFAULT_START_SECONDS (not imported: it needs OpenDP)
        "Seconds from taking up a DP code job to its first run (sandbox start-up, reading and "
        "partitioning the data); its runs then follow a fixed timetable, one at a time.",
        _positive,
    ),
    Setting("job_workers", int, 2, "Jobs the node runs at the same time.", _positive),
    Setting(
        "job_running_per_user",
        int,
        1,  # below job_workers: one scientist's long jobs never hold every worker
        "Jobs of one scientist the node runs at the same time; the others wait in the queue, "
        "and a freed worker goes to the scientist who has waited longest.",
        _positive,
    ),
    Setting(
        "job_max_seconds",
        int,
        600,
        "Longest time one job may hold a worker: a DP job's timetable, a reviewed job's "
        "private run (job_start_seconds + job_wall_seconds + 1). A longer DP job is refused "
        "at submission.",
        _positive,
    ),
    Setting(
        "job_stale_seconds",
        int,
        30,
        "A running job whose node process wrote no heartbeat for this long (the process "
        "died) is settled as interrupted; heartbeats come every sixth of it.",
        _at_least_two,
    ),
    Setting("job_max_partitions", int, 1000, "Largest k a DP code job may ask for.", _positive),
    Setting(
        "job_max_output_bytes",
        int,
        1024 * 1024,
        "Largest result of one run; a larger one counts as failed (and fails output checks).",
        _positive,
    ),
    Setting(
        "job_min_cell_count",
        int,
        10,
        "Reviewed outputs with an integer between 0 and this value cannot be released.",
        _positive,
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class NodeSettings:
    """The settings of one node directory, after validation."""

    directory: Path
    name: str
    host: str
    port: int
    database_url: str
    mock_rows: int
    max_request_bytes: int
    release_workers: int
    max_requests_per_user: int
    max_query_work: int
    release_padding: float
    prepared_cache_mb: int
    sandbox: str
    sandbox_uid: int
    job_cpu_seconds: int
    job_wall_seconds: int
    job_memory_mb: int
    job_processes: int
    job_start_seconds: int
    job_workers: int
    job_running_per_user: int
    job_max_seconds: int
    job_stale_seconds: int
    job_max_partitions: int
    job_max_output_bytes: int
    job_min_cell_count: int

    @property
    def resolved_database_url(self) -> str:
        """The database URL with a relative SQLite path made relative to the node directory."""
        prefix = "sqlite:///"
        url = self.database_url
        if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
            return prefix + str((self.directory / url[len(prefix) :]).resolve())
        return url


# Settings that no longer exist: an old node.toml (`rds node init` writes every setting) still
# loads, and the owner is told why the value is ignored.
REMOVED = {
    "job_parallel": "DP code jobs now run one run at a time on a fixed timetable (runs that run "
    "at the same time can influence each other); delete the line",
}


def _checked(values: dict[str, Any], source: str) -> dict[str, Any]:
    out = {s.name: s.default for s in SETTINGS}
    for key, value in values.items():
        if key in REMOVED:
            log.warning("%s: the setting %s is ignored: %s", source, key, REMOVED[key])
            continue
        setting = _BY_NAME.get(key)
        if setting is None:
            raise BadRequest(
                f"{source}: unknown setting {key!r}; known settings are {sorted(_BY_NAME)}"
            )
        if setting.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # TOML writes 2 for 2.0
        if isinstance(value, bool) or not isinstance(value, setting.type):
            raise BadRequest(f"{source}: {key} must be a {setting.type.__name__}")
        problem = setting.check(value) if setting.check else None
        if problem:
            raise BadRequest(f"{source}: {key} {problem}")
        out[key] = value
    _check_jobs(out, source)
    return out


# A reviewed job's private run holds its worker for job_start_seconds + job_wall_seconds + this
# (a run's slot allowance, 0.4 s, and 0.6 s to store its output; see rds_kernel.node.jobs.steps).
PRIVATE_RUN_EXTRA_SECONDS = 1


def _check_jobs(values: dict[str, Any], source: str) -> None:
    """Job settings that must agree with each other."""
    private = values["job_start_seconds"] + values["job_wall_seconds"] + PRIVATE_RUN_EXTRA_SECONDS
    if private > values["job_max_seconds"]:
        raise BadRequest(
            f"{source}: a reviewed job's private run holds a worker for job_start_seconds + "
            f"job_wall_seconds + {PRIVATE_RUN_EXTRA_SECONDS} = {private} s, more than "
            f"job_max_seconds ({values['job_max_seconds']}); raise job_max_seconds or lower "
            "job_wall_seconds"
        )


def load_settings(directory: str | Path) -> NodeSettings:
    """Read ``node.toml`` of a node directory created by ``rds node init``."""
    d = Path(directory)
    path = d / NODE_FILE
    if not path.is_file():
        raise BadRequest(f"{d} is not a node directory (no {NODE_FILE}); run `rds node init {d}`")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"{path}: not valid TOML ({exc})") from None
    return NodeSettings(directory=d.resolve(), **_checked(raw, str(path)))


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def write_settings(directory: str | Path, **values: Any) -> NodeSettings:
    """Create ``node.toml`` with the given settings (others keep their defaults)."""
    d = Path(directory)
    checked = _checked(values, str(d / NODE_FILE))
    lines = []
    for s in SETTINGS:
        lines.append(f"# {s.help}")
        lines.append(f"{s.name} = {_toml_value(checked[s.name])}")
    # 0600 from the start (never world-readable for a moment): the URL may hold a password
    fd = os.open(d / NODE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(d / NODE_FILE, 0o600)
    return load_settings(d)


def make_private_directory(directory: str | Path) -> Path:
    """Create the node directory (or take an existing one) readable by its owner only (0700).

    It holds the private datasets, the ledger and unreleased job outputs: under a usual umask
    a new directory would be 0755, and any local user — the sandbox's uid ``nobody`` included —
    could read them.
    """
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def check_private_directory(directory: str | Path) -> None:
    """Refuse a node directory that other users can enter, read or write, saying how to fix it."""
    d = Path(directory)
    mode = stat.S_IMODE(d.stat().st_mode)
    if mode & 0o077:
        raise BadRequest(
            f"the node directory {d} is open to other users (mode {mode:o}): it holds private "
            f"data, the ledger and unreleased outputs. Run `chmod 700 {d}` and start again"
        )
