"""Node settings: one pydantic-settings model, read from ``node.toml`` and ``RDS_NODE_*``.

:class:`NodeSettings` declares every setting once: its type, default, range and help text (the
field's description). ``rds node init`` writes them all to ``node.toml`` with the help as
comments (:func:`write_settings`); :func:`load_settings` reads them back. Where a value comes
from, highest precedence first:

1. keyword overrides to :func:`load_settings` (``rds node serve --host/--port``);
2. ``RDS_NODE_<NAME>`` environment variables (``RDS_NODE_PORT=9000``), any case;
3. ``node.toml`` in the node directory;
4. the defaults declared here.

``node.toml`` is strict: an unknown key is refused with the list of known ones, a value of the
wrong TOML type (``port = "80"``) is refused, and a removed setting (:data:`REMOVED`) loads with
a warning. Environment variables are text and are parsed (``RDS_NODE_PORT=9000`` is 9000);
``RDS_NODE_*`` names that are not settings (``RDS_NODE_DIR``, the CLI's node directory) are
ignored. Every problem is a :class:`~rds_kernel.errors.ConfigError` naming where the bad value
came from. A test fails when a setting is missing from the README.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import stat
import textwrap
import tomllib
from functools import cache
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rds_kernel.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "NODE_FILE",
    "REMOVED",
    "SETTINGS",
    "NodeSettings",
    "check_private_directory",
    "load_settings",
    "make_private_directory",
    "setting_sources",
    "write_settings",
]

NODE_FILE = "node.toml"
ENV_PREFIX = "RDS_NODE_"
log = logging.getLogger("rds_kernel.node")

# A reviewed job's private run holds its worker for job_start_seconds + job_wall_seconds + this
# (a run's slot allowance, 0.4 s, and 0.6 s to store its output; see rds_kernel.node.jobs.steps).
PRIVATE_RUN_EXTRA_SECONDS = 1

# Settings that no longer exist: an old node.toml (`rds node init` writes every setting) still
# loads, and the owner is told why the value is ignored.
REMOVED = {
    "job_parallel": "DP code jobs now run one run at a time on a fixed timetable (runs that run "
    "at the same time can influence each other); delete the line",
}

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class NodeSettings(BaseSettings):
    """The settings of one node directory, after validation (see the module's docstring)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    directory: Path = Field(
        description="The node directory (where node.toml is; not itself a setting).", exclude=True
    )
    name: str = Field(
        "owner-node",
        description="The node's name, shown to scientists: 1-64 letters, digits, '_', '.' or '-'.",
    )
    host: str = Field("127.0.0.1", description="Address `rds node serve` listens on.")
    port: int = Field(
        8765, ge=0, le=65535, description="Port `rds node serve` listens on (0 picks a free one)."
    )
    database_url: str = Field(
        "sqlite:///node.db",
        description="SQLAlchemy URL of the ledger database; a relative SQLite path is inside the "
        "node directory. PostgreSQL: postgresql+psycopg://user@host:5432/dbname.",
    )
    mock_rows: int = Field(1000, gt=0, description="Rows of generated mock data per dataset.")
    max_request_bytes: int = Field(
        256 * 1024,
        gt=0,
        description="Largest request body the node reads; larger requests get HTTP 400.",
    )
    # Admission of DP work (rds_kernel.node.admission).
    release_workers: int = Field(
        4,  # more than max_requests_per_user: one scientist never holds every thread
        gt=0,
        description="Releases and previews computed at the same time, on threads of their own: "
        "/healthz, metadata and budget reads never wait for them.",
    )
    max_requests_per_user: int = Field(
        1,
        gt=0,
        description="Releases and previews one user may have in flight (waiting or running); one "
        "more gets HTTP 429 with Retry-After.",
    )
    max_query_work: int = Field(
        30_000,
        gt=0,
        description="Largest work estimate of one query, in noisy values drawn (groups x noisy "
        "aggregates, about 0.1 ms each); a larger query is refused before anything runs.",
    )
    release_padding: float = Field(
        1.0,
        ge=0,
        allow_inf_nan=False,
        description="Multiplies the time a filtered or grouped release is padded to (its cost "
        "bound from public facts, so its time says nothing about the data); raise it on a slower "
        "host when the log says releases outlast their padding; 0 turns padding off.",
    )
    prepared_cache_mb: int = Field(
        64,
        gt=0,
        description="Memory kept for prepared (calibrated) queries, in MiB; the least recently "
        "used go first.",
    )
    # Code jobs (rds_kernel.node.jobs.service); documented in the README's "Code jobs".
    sandbox: Literal["bwrap", "rlimits-only", "off"] = Field(
        "bwrap",
        description="Where scientist code runs: bwrap (bubblewrap: no network, minimal read-only "
        "files), rlimits-only (no bubblewrap: a separate uid and rlimits only; weaker, opt-in) or "
        "off (no code jobs).",
    )
    sandbox_uid: int = Field(
        65534,
        gt=0,
        description="Unprivileged uid (and gid) scientist code runs as when the node runs as root.",
    )
    job_cpu_seconds: int = Field(10, gt=0, description="CPU seconds one sandboxed run may use.")
    job_wall_seconds: int = Field(
        30,
        gt=0,
        description="Wall-clock seconds before a run is killed; the most a DP job may ask for as "
        "run_seconds.",
    )
    job_memory_mb: int = Field(
        2048, gt=0, description="Address space of one run, in MiB (RLIMIT_AS)."
    )
    job_processes: int = Field(32, gt=0, description="Processes and threads one run may have.")
    job_start_seconds: int = Field(
        2,  # rds_kernel.dp.aggregate.DEFAULT_START_SECONDS (not imported: it needs OpenDP)
        gt=0,
        description="Seconds from taking up a DP code job to its first run (sandbox start-up, "
        "reading and partitioning the data); its runs then follow a fixed timetable, one at a "
        "time.",
    )
    job_workers: int = Field(2, gt=0, description="Jobs the node runs at the same time.")
    job_running_per_user: int = Field(
        1,  # below job_workers: one scientist's long jobs never hold every worker
        gt=0,
        description="Jobs of one scientist the node runs at the same time; the others wait in "
        "the queue, and a freed worker goes to the scientist who has waited longest.",
    )
    job_max_seconds: int = Field(
        600,
        gt=0,
        description="Longest time one job may hold a worker: a DP job's timetable, a reviewed "
        "job's private run (job_start_seconds + job_wall_seconds + 1). A longer DP job is refused "
        "at submission.",
    )
    job_stale_seconds: int = Field(
        30,
        ge=2,
        description="A running job whose node process wrote no heartbeat for this long (the "
        "process died) is settled as interrupted; heartbeats come every sixth of it.",
    )
    job_max_partitions: int = Field(1000, gt=0, description="Largest k a DP code job may ask for.")
    job_max_output_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest result of one run; a larger one counts as failed (and fails output "
        "checks).",
    )
    job_min_cell_count: int = Field(
        10,
        gt=0,
        description="Reviewed outputs with an integer between 0 and this value cannot be released.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_word(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-'")
        return value

    @model_validator(mode="after")
    def _private_run_fits(self) -> NodeSettings:
        """Job settings that must agree with each other."""
        private = self.job_start_seconds + self.job_wall_seconds + PRIVATE_RUN_EXTRA_SECONDS
        if private > self.job_max_seconds:
            raise ValueError(
                "a reviewed job's private run holds a worker for job_start_seconds + "
                f"job_wall_seconds + {PRIVATE_RUN_EXTRA_SECONDS} = {private} s, more than "
                f"job_max_seconds ({self.job_max_seconds}); raise job_max_seconds or lower "
                "job_wall_seconds"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL with a relative SQLite path made relative to the node directory."""
        prefix = "sqlite:///"
        url = self.database_url
        if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
            return prefix + str((self.directory / url[len(prefix) :]).resolve())
        return url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then ``RDS_NODE_*``, then ``node.toml`` of ``directory``."""
        return init_settings, env_settings, _NodeFile(settings_cls, init_settings)


SETTINGS: dict[str, FieldInfo] = {
    name: field for name, field in NodeSettings.model_fields.items() if name != "directory"
}
"""Every setting, in the order ``node.toml`` lists them: its default and help (description)."""


class _Written(NodeSettings):
    """The settings as given to :func:`write_settings` (no environment, no file): what is
    written must be valid on its own."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class _NodeFile(PydanticBaseSettingsSource):
    """``node.toml`` of the node directory given to :class:`NodeSettings` as ``directory``."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._init = init

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        directory = getattr(self._init, "init_kwargs", {}).get("directory")
        return {} if directory is None else _read_node_file(Path(directory) / NODE_FILE)


def _read_node_file(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    values = {}
    for key, value in raw.items():
        if key in REMOVED:
            log.warning("%s: the setting %s is ignored: %s", path, key, REMOVED[key])
        else:
            values[key] = value
    _check_types(values, str(path))
    return values


@cache
def _strict(name: str) -> TypeAdapter[Any]:
    annotation: Any = SETTINGS[name].annotation
    return TypeAdapter(annotation)


def _check_types(values: dict[str, Any], where: str) -> None:
    """Refuse unknown keys and values of the wrong type (no "80" for 80, no true for 1)."""
    for key, value in values.items():
        if key not in SETTINGS:
            raise ConfigError(f"{where}: {_unknown(key)}")
        try:
            _strict(key).validate_python(value, strict=True)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {key} {_problem(exc.errors()[0])}") from None


def _unknown(key: str) -> str:
    return f"unknown setting {key!r}; known settings are {sorted(SETTINGS)}"


def _problem(error: Any) -> str:
    """A pydantic error as the end of a sentence: "must be greater than 0"."""
    if error["type"] == "extra_forbidden":
        return _unknown(str(error["loc"][0]))
    message = str(error["msg"]).removeprefix("Value error, ")
    return message.replace("Input should be", "must be", 1)


def _env_names() -> dict[str, str]:
    """The setting each ``RDS_NODE_*`` variable in the environment sets, by variable name."""
    found = {}
    for variable in os.environ:
        name = variable.lower().removeprefix(ENV_PREFIX.lower())
        if variable.upper().startswith(ENV_PREFIX) and name in SETTINGS:
            found[name] = variable
    return found


def _config_error(
    exc: ValidationError, path: Path, overrides: dict[str, Any], env: dict[str, str]
) -> ConfigError:
    """The first problem of ``exc``, saying where the value came from."""
    error = exc.errors()[0]
    key = str(error["loc"][0]) if error["loc"] else ""
    if key in overrides:
        where = f"{path} (overridden on the command line)"
    elif key in env:
        where = f"${env[key]} (overrides {path})"
    elif not key and env:
        where = f"{path} with {', '.join(sorted(env.values()))}"
    else:
        where = str(path)
    return ConfigError(f"{where}: {key + ' ' if key else ''}{_problem(error)}")


def load_settings(directory: str | Path, **overrides: Any) -> NodeSettings:
    """The settings of a node directory created by ``rds node init``.

    ``overrides`` (``rds node serve --port``) win over ``RDS_NODE_*``, which win over the file.
    """
    d = Path(directory)
    path = d / NODE_FILE
    if not path.is_file():
        raise ConfigError(
            f"{d} is not a node directory (no {NODE_FILE}); run `rds --dir {shlex.quote(str(d))} "
            "node init`"
        )
    _check_types(overrides, f"{path} (overridden on the command line)")
    try:
        return NodeSettings(directory=d.resolve(), **overrides)
    except ValidationError as exc:
        raise _config_error(exc, path, overrides, _env_names()) from None


def setting_sources(directory: str | Path) -> dict[str, str]:
    """Where each setting of a node directory comes from: ``$RDS_NODE_X``, the file or default."""
    path = Path(directory) / NODE_FILE
    try:
        in_file = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        in_file = {}  # load_settings says what is wrong with it
    env = _env_names()
    return {
        name: f"${env[name]}" if name in env else str(path) if name in in_file else "default"
        for name in SETTINGS
    }


def write_settings(directory: str | Path, **values: Any) -> NodeSettings:
    """Create ``node.toml`` with the given settings (others keep their defaults), each under its
    help text; return the settings as :func:`load_settings` reads them (environment included)."""
    d = Path(directory)
    path = d / NODE_FILE
    _check_types(values, str(path))
    try:
        checked = _Written(directory=d.resolve(), **values)
    except ValidationError as exc:
        raise _config_error(exc, path, {}, {}) from None
    doc = tomlkit.document()
    doc.add(tomlkit.comment('Settings of this rds owner node (the README\'s "Node settings").'))
    doc.add(
        tomlkit.comment("An environment variable RDS_NODE_<NAME> overrides the setting <name>.")
    )
    for name, field in SETTINGS.items():
        doc.add(tomlkit.nl())
        for line in textwrap.wrap(field.description or "", width=98):
            doc.add(tomlkit.comment(line))
        doc.add(name, getattr(checked, name))
    # 0600 from the start (never world-readable for a moment): the URL may hold a password
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(tomlkit.dumps(doc))
    os.chmod(path, 0o600)
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
        raise ConfigError(
            f"the node directory {d} is open to other users (mode {mode:o}): it holds private "
            f"data, the ledger and unreleased outputs. Run `chmod 700 {d}` and start again"
        )
