"""How the sandbox's template process is started: under bubblewrap, or (opt-in) rlimits only.

Under **bubblewrap** the template gets empty network, PID, IPC and UTS namespaces, a cleared
environment and a read-only root that holds nothing but the Python interpreter, its
environment (the venv), the system's shared libraries, ``/dev/{null,zero,full,random,urandom}``
and the worker program itself (copied in from a memfd). No ``/etc``, no ``/home``, no node
directory. When the node runs as root, bwrap runs privileged and the worker drops to the
sandbox uid (``sandbox_uid``, default 65534) before it reads anything; otherwise bwrap makes an
unprivileged user namespace and the runs keep the node's uid, in namespaces that cannot see it.

**rlimits-only** is for hosts where bubblewrap cannot run (no user namespaces). The template is
a plain child process that switches to the sandbox uid; it has the host's filesystem (as that
uid) and, unless the kernel lets it make namespaces, its network. The owner must enable it by
name (``sandbox = "rlimits-only"``), and the node says so in its log and to scientists.

In both modes, when the node runs as root, scientist code runs as ``sandbox_uid``, which must be
able to read the Python environment: the template imports numpy, pandas and pyarrow as root,
but whatever a run imports later it imports as that uid. A checkout or venv under a directory
others cannot enter (``/root`` is 0700) breaks every run in rlimits-only mode, where the
sandbox sees the host's directories as they are; under bubblewrap the directories above the
environment are recreated, but the environment's own directories and files must still be
readable. :func:`check_available` checks it (:func:`environment_problem`) and refuses code
jobs with the path and the fix.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rds_kernel.errors import PermissionDenied

__all__ = [
    "SCRATCH",
    "Mode",
    "Runtime",
    "SandboxConfig",
    "bwrap_argv",
    "check_available",
    "environment_problem",
    "runtime",
    "runtime_paths",
    "scratch_dir",
    "unavailable",
]

Mode = Literal["bwrap", "rlimits-only", "off"]

WORKER_PATH = "/sandbox/worker.py"
# Where each run mounts its own small tmpfs (and HOME and TMPDIR point): /tmp, unless the
# Python environment itself lives under /tmp (a checkout there), which the tmpfs would hide.
SCRATCH = ("/tmp", "/var/tmp", "/run/scratch")  # noqa: S108 - paths inside the sandbox
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
SYSTEM_LIBRARIES = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32")
SYSTEM_PREFIXES = ("/", "/usr", "/usr/local")
TOP_LEVEL_LINKS = ("/lib", "/lib64", "/lib32", "/libx32")


def unavailable(message: str) -> PermissionDenied:
    """The error for "this node cannot run code jobs", saying why and how to fix it."""
    return PermissionDenied(message, {"reason": "sandbox_unavailable"})


@dataclass(frozen=True)
class SandboxConfig:
    """How to start sandboxes on this node.

    ``hidden`` are paths that must never be visible inside the sandbox (the node directory):
    starting a sandbox whose runtime paths would include one of them is refused.
    """

    mode: Mode = "bwrap"
    uid: int = 65534
    gid: int = 65534
    python: str = sys.executable
    hidden: tuple[Path, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Runtime:
    """What the sandbox must see to run the interpreter: nothing more.

    ``dirs`` are bound read-only; ``files`` (the interpreter, when it lives in a directory
    that is not bound, like /usr/bin) too; ``links`` are the symlinks from the environment's
    ``python`` to it, recreated as they are.
    """

    dirs: tuple[str, ...]
    files: tuple[str, ...]
    links: tuple[tuple[str, str], ...]

    @property
    def paths(self) -> list[str]:
        return [*self.dirs, *self.files, *(link for link, _target in self.links)]


def runtime(python: str = sys.executable) -> Runtime:
    """The interpreter, its environment and the shared libraries; never /usr/bin or /etc.

    A prefix that is a system directory (``/usr``, ``/usr/local``) contributes only its
    ``lib`` directories; a venv or a pyenv/conda prefix is bound whole. Nested directories
    are dropped (binding ``/usr/lib`` covers ``/usr/lib/x86_64-linux-gnu``).
    """
    candidates: set[str] = set()
    for prefix in {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}:
        prefix = os.path.abspath(prefix)
        if prefix in SYSTEM_PREFIXES:
            candidates.update(os.path.join(prefix, sub) for sub in ("lib", "lib64", "lib32"))
        else:
            candidates.add(prefix)
    candidates.update(SYSTEM_LIBRARIES)
    candidates.update(p for p in TOP_LEVEL_LINKS if not os.path.islink(p))
    found = sorted({p for p in candidates if os.path.isdir(p)})
    dirs = [p for p in found if not any(_inside(p, other) for other in found if other != p)]
    links, interpreter = _symlink_chain(os.path.abspath(python))
    outside = [(link, t) for link, t in links if not any(_inside(link, d) for d in dirs)]
    files = [] if any(_inside(interpreter, d) for d in dirs) else [interpreter]
    return Runtime(tuple(dirs), tuple(files), tuple(outside))


def runtime_paths(python: str = sys.executable) -> list[str]:
    """Every path the sandbox sees of the host (see :func:`runtime`)."""
    return runtime(python).paths


def _symlink_chain(path: str) -> tuple[list[tuple[str, str]], str]:
    """The symlinks from ``path`` to the file it names, and that file."""
    links: list[tuple[str, str]] = []
    for _ in range(40):
        if not os.path.islink(path):
            return links, path
        target = os.readlink(path)
        links.append((path, target))
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    raise unavailable(f"{path}: too many levels of symbolic links to the Python interpreter")


def _inside(path: str, parent: str) -> bool:
    return parent == "/" or path.startswith(parent.rstrip("/") + "/")


def _ancestors(paths: Iterable[str]) -> list[str]:
    out: set[str] = set()
    for p in paths:
        parent = os.path.dirname(p)
        while parent not in ("/", ""):
            out.add(parent)
            parent = os.path.dirname(parent)
    return sorted(out)


def scratch_dir(paths: Sequence[str]) -> str:
    """The first of :data:`SCRATCH` that holds none of the runtime ``paths``."""
    for candidate in SCRATCH:
        if not any(_inside(p, candidate) for p in paths):
            return candidate
    raise unavailable("the Python environment is inside every scratch directory; move it")


def check_hidden(config: SandboxConfig, paths: Sequence[str]) -> None:
    """Refuse to start when a runtime path would expose a hidden path (the node directory)."""
    for hidden in config.hidden:
        target = str(hidden.resolve())
        for p in paths:
            real = os.path.realpath(p)
            if _inside(target, real) or target == real:
                raise unavailable(
                    f"the node directory {target} is inside {p}, which the sandbox must see "
                    "(the Python environment or system libraries); move the node directory "
                    "elsewhere before enabling code jobs"
                )


def bwrap_argv(
    config: SandboxConfig,
    worker_fd: int,
    command: Sequence[str],
    env: dict[str, str],
) -> list[str]:
    """The bubblewrap command line that runs ``command`` in a fresh, minimal sandbox."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise unavailable(_NO_BWRAP)
    needed = runtime(config.python)
    paths = needed.paths
    check_hidden(config, paths)
    argv = [
        bwrap,
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--cap-drop",
        "ALL",
    ]
    if os.geteuid() == 0:
        # privileged bwrap: the worker needs these two to drop to the sandbox uid, then has none
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    scratch = scratch_dir(paths)
    for directory in _ancestors([*paths, *DEVICES, WORKER_PATH, f"{scratch}/x", "/proc/x"]):
        argv += ["--perms", "0755", "--dir", directory]
    for p in [*needed.dirs, *needed.files]:
        argv += ["--ro-bind", p, p]
    for link, target in needed.links:
        argv += ["--symlink", target, link]
    for link in TOP_LEVEL_LINKS:
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
    for device in DEVICES:
        if os.path.exists(device):
            argv += ["--dev-bind", device, device]
    argv += ["--proc", "/proc", "--perms", "0755", "--dir", scratch]
    argv += ["--ro-bind-data", str(worker_fd), WORKER_PATH, "--remount-ro", "/", "--chdir", "/"]
    return [*argv, *command]


_NO_BWRAP = (
    "bubblewrap (bwrap) is not installed, so this node cannot run code jobs safely; the owner "
    "can install it (`apt-get install bubblewrap`, or scripts/ensure-bubblewrap) or, knowing "
    'what it gives up, set sandbox = "rlimits-only" in node.toml'
)


@functools.cache
def _probe_bwrap(bwrap: str, python: str, uid: int, gid: int) -> str | None:
    """None if ``bwrap`` can start the interpreter in the sandbox here, else why not."""
    r, w = os.pipe()
    try:
        os.close(w)
        argv = bwrap_argv(
            SandboxConfig(python=python, uid=uid, gid=gid),
            r,
            [python, "-I", "-S", "-B", "-c", "pass"],
            {},
        )
        done = subprocess.run(  # noqa: S603 - our own fixed command line
            argv, pass_fds=(r,), capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not start ({type(exc).__name__}: {exc})"
    finally:
        os.close(r)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        return (
            f"bubblewrap cannot run here ({why[-1] if why else f'exit {done.returncode}'}); "
            "it needs unprivileged user namespaces or root. Fix the host, or knowing what it "
            'gives up, set sandbox = "rlimits-only" in node.toml'
        )
    return None


def check_available(config: SandboxConfig) -> None:
    """Raise ``PermissionDenied`` (saying how to fix it) unless sandboxes can start here."""
    if config.mode == "off":
        raise unavailable(
            'this node does not run code jobs (sandbox = "off" in node.toml); ask the owner'
        )
    if config.mode == "bwrap":
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise unavailable(_NO_BWRAP)
        problem = _probe_bwrap(bwrap, config.python, config.uid, config.gid)
        if problem is not None:
            raise unavailable(problem)
        _check_readable(config)
        return
    if os.geteuid() != 0:
        raise unavailable(
            "rlimits-only sandboxes need the node to run as root, so that scientist code can "
            "run as another user than the node's; install bubblewrap instead"
        )
    for hidden in config.hidden:
        mode = hidden.stat().st_mode
        if mode & 0o007:
            raise unavailable(
                f"in rlimits-only mode scientist code sees the host's files as uid "
                f"{config.uid}; {hidden} is readable by other users (mode {mode & 0o777:o}). "
                f"Run `chmod 700 {hidden}` first"
            )
    _check_readable(config)


# ---------------------------------------------------------------- can the sandbox uid read it?

_READABLE: set[tuple[str, int, int, tuple[str, ...], tuple[str, ...]]] = set()
_READABLE_LOCK = threading.Lock()
# Files an import reads (a package's data files are left out: stat-ing every file of a large
# venv takes a second or more, and an unreadable module is what breaks imports).
_MODULES = (".py", ".so", ".pth")


def _check_readable(config: SandboxConfig) -> None:
    """Refuse code jobs when ``config.uid`` cannot read the environment; a pass is cached."""
    trees = python_trees()
    key = (config.mode, config.uid, config.gid, tuple(trees), tuple(runtime(config.python).dirs))
    with _READABLE_LOCK:
        if key in _READABLE:
            return
    problem = environment_problem(config, trees)
    if problem is not None:
        raise unavailable(problem)
    with _READABLE_LOCK:
        _READABLE.add(key)


def python_trees() -> list[str]:
    """The directories Python imports from in the sandbox: the standard library (with its
    extension modules) and the environment's site-packages."""
    paths = sysconfig.get_paths()
    found = {
        os.path.abspath(paths[k])
        for k in ("stdlib", "platstdlib", "purelib", "platlib")
        if k in paths and os.path.isdir(paths[k])
    }
    return sorted(p for p in found if not any(_inside(p, other) for other in found if other != p))


def environment_problem(config: SandboxConfig, trees: Sequence[str] | None = None) -> str | None:
    """Why scientist code, run as ``config.uid``, could not import from the environment, or None.

    Only when the node runs as root (otherwise runs keep the node's own uid, which reads the
    environment it runs from). Every directory of ``trees`` (default :func:`python_trees`)
    must be readable and searchable by the uid, every module file (``.py``, ``.so``,
    ``.pth``) readable (``__pycache__`` is skipped: Python falls back to the source), and the
    directories on the way to them
    searchable — in rlimits-only mode all of them from ``/``; under bubblewrap those below the
    directory it binds (it recreates the ones above).
    """
    if os.geteuid() != 0:
        return None
    uid, gid = config.uid, config.gid
    trees = python_trees() if trees is None else list(trees)
    bound = runtime(config.python).dirs if config.mode == "bwrap" else ()
    passes: dict[str, None] = {}  # directories to pass through, in order
    unreadable: list[str] = []
    for tree in trees:
        top = max((d for d in bound if d == tree or _inside(tree, d)), key=len, default="/")
        for directory in _path_down(top, os.path.dirname(tree)):
            if not _allows(directory, uid, gid, 0o1):
                passes.setdefault(directory)
        unreadable += _unreadable_in(tree, uid, gid)
        if len(unreadable) > 100:
            break
    if not passes and not unreadable:
        return None
    blocked = [*passes, *unreadable]
    first = blocked[0]
    fixes = []
    if passes:
        fixes.append(f"`chmod o+x {' '.join(passes)}` (lets others pass through, not list them)")
    if unreadable:
        roots = [t for t in trees if any(p == t or _inside(p, t) for p in unreadable)]
        fixes.append(f"`chmod -R o+rX {' '.join(roots)}`")
    more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
    verb = "enter" if passes else "read"
    return (
        f"scientist code runs as uid {uid}, which cannot {verb} {first}{more}: "
        f"{_describe(first)}, on the way to the Python environment the sandbox imports from "
        f"({', '.join(trees)}); code jobs would fail. Run "
        + " and ".join(fixes)
        + ", or install the environment (the venv) in a directory others can read (e.g. "
        "under /opt)"
    )


def _path_down(top: str, bottom: str) -> list[str]:
    """``top`` and the directories below it down to ``bottom`` (which is inside it)."""
    out = [bottom]
    while out[-1] != top and out[-1] not in ("/", ""):
        out.append(os.path.dirname(out[-1]))
    return list(reversed(out))


def _allows(path: str, uid: int, gid: int, want: int, st: os.stat_result | None = None) -> bool:
    """Whether ``uid``/``gid`` (no supplementary groups) has the ``want`` bits (r=4, x=1)."""
    try:
        st = os.stat(path) if st is None else st
    except OSError:
        return True  # gone, or a dangling link: nothing to read there
    mode = st.st_mode
    if st.st_uid == uid:
        bits = mode >> 6
    elif st.st_gid == gid:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def _unreadable_in(tree: str, uid: int, gid: int, limit: int = 100) -> list[str]:
    """Directories of ``tree`` the uid cannot list and enter, files it cannot read."""
    found: list[str] = []
    stack = [tree]
    while stack and len(found) < limit:
        directory = stack.pop()
        if not _allows(directory, uid, gid, 0o5):
            found.append(directory)
            continue
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith(_MODULES) and not _allows(
                    entry.path, uid, gid, 0o4, entry.stat()
                ):
                    found.append(entry.path)
            except OSError:
                continue
    return found


def _describe(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "it cannot be read"
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
    return f"a {kind} with mode {stat.S_IMODE(st.st_mode):o}, owner uid {st.st_uid}"
