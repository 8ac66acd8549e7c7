"""The ``%rds`` line magic and the ``%%rds`` cell magic. They parse, call the session, render.

The work is done by :class:`rds_kernel.jupyter.session.Session` (connections, datasets,
meters) and :mod:`rds_kernel.jupyter.cell` (running a cell on mock data or on a node). Every
rds error becomes one line (:class:`rds_kernel.jupyter.failures.MagicError`); settings are
traitlets, e.g. ``%config RdsMagics.preview_rows = 10``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Integer

from rds_kernel.client import Node
from rds_kernel.client.connections import connections_path
from rds_kernel.errors import BadRequest, RdsError
from rds_kernel.jupyter import display
from rds_kernel.jupyter.cell import CellDataset, CellRun, Mode, bindable, bound, execute
from rds_kernel.jupyter.failures import MagicError
from rds_kernel.jupyter.session import Session

_F = TypeVar("_F", bound=Callable[..., Any])


# IPython's magic decorators are untyped (or typed as unions); these shims keep `rds` typed.
def _line_cell_magic(name: str) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], line_cell_magic(name))


def _magic_arguments() -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], magic_arguments())  # type: ignore[no-untyped-call]


def _argument(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], argument(*args, **kwargs))  # type: ignore[no-untyped-call]


def _parse(magic: Callable[..., Any], line: str) -> argparse.Namespace:
    return cast(argparse.Namespace, parse_argstring(magic, line))  # type: ignore[no-untyped-call]


COMMANDS = ("connect", "disconnect", "nodes", "datasets", "budget", "history")
FEDERATION = (
    "one cell on several nodes ({nodes}) needs federated queries, which rds_kernel "
    "does not support yet; run the cell once per node: --on {first}, then --on {second}"
)


@magics_class
class RdsMagics(Magics):
    """``%rds`` and ``%%rds``; one instance per shell, holding the kernel's :class:`Session`."""

    preview_rows = Integer(5, help="Rows of mock data shown per dataset by %rds datasets.").tag(
        config=True
    )
    history_limit = Integer(20, help="Releases per node shown by %rds history.").tag(config=True)
    save_connections = Bool(
        True,
        help="Remember connections (URL and token) in the per-user connections file (mode "
        "0600), so later notebooks and the JupyterLab sidebar can reuse them.",
    ).tag(config=True)

    def __init__(self, shell: Any = None, session: Session | None = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.session = session if session is not None else Session()

    @_line_cell_magic("rds")
    @_magic_arguments()
    @_argument(
        "command",
        nargs="*",
        help="connect [URL] | disconnect NAME | nodes | datasets [NAME] | budget [NAME] | "
        "history [NAME] (line magic only)",
    )
    @_argument("-n", "--name", help="connect: the name to give the node (default: its own)")
    @_argument(
        "--token-env",
        metavar="VAR",
        help="connect: read the token from environment variable VAR (else the saved "
        "connection, else a hidden prompt)",
    )
    @_argument("--token", help=argparse.SUPPRESS)
    @_argument("--forget", action="store_true", help="disconnect: also delete the saved token")
    @_argument(
        "--mock",
        action="store_true",
        help="cell: run locally on mock data with a simulated budget (free)",
    )
    @_argument(
        "--on",
        metavar="NODE",
        help="cell: the node to run on (with --mock: whose datasets to bind)",
    )
    @_argument(
        "-e",
        "--epsilon",
        type=float,
        help="cell: the epsilon of releases in the cell that do not give one",
    )
    @_argument(
        "--preview",
        action="store_true",
        help="cell: turn every release into a preview (cost and accuracy; spends nothing)",
    )
    def rds(self, line: str = "", cell: str | None = None) -> Any:
        """Connect to owner nodes, explore their datasets, and run cells on mock data or a node.

        Line magic, one command per line::

          %rds connect URL --name hospital_a [--token-env VAR]
              connect, and remember the node for later notebooks (URL and token in
              ~/.config/rds_kernel/connections.json or $RDS_CONFIG_DIR, mode 0600). The
              token comes from $VAR, else from the saved connection, else from a hidden
              prompt; it is never written in the notebook.
          %rds connect --name hospital_a      reconnect a saved node
          %rds disconnect NAME [--forget]     close it (--forget deletes the saved token)
          %rds nodes                          connected nodes, who you are there, ε left
          %rds datasets [NAME]                schema and first mock rows of each dataset
          %rds budget [NAME]                  the live budget meter (follows every release)
          %rds history [NAME]                 your releases and what each cost

        Cell magic: the same cell text runs three ways. Each dataset of the nodes is bound
        under its own name (``patients``) for the cell::

          %%rds --mock [--on NODE] [--epsilon E]
              locally, on the mock data, through the same DP layer, with a simulated
              budget that starts at your real one; free, and the node sees no query
          %%rds --on NODE --preview [--epsilon E]
              every release becomes a preview: its cost and ± accuracy are shown and it
              returns the mock answer; nothing is spent
          %%rds --on NODE [--epsilon E]
              releases on the node, charged to your budget there

        ``--epsilon E`` is the privacy loss of releases in the cell that do not give one.
        The cell's last expression is shown as usual. Errors from rds_kernel are shown as
        one line saying what to do; your own bugs keep their traceback. Example::

          %%rds --mock --epsilon 0.5
          q = patients.group_by("sex").agg(rds.count(), rds.mean("cvd", bounds=(0, 1)))
          q.release()

        Settings: ``%config RdsMagics`` (preview_rows, history_limit, save_connections).
        """
        __tracebackhide__ = True  # a bug in the cell shows the cell's frames, not ours
        args = _parse(self.rds, line)
        if args.token is not None:
            raise UsageError(
                "a token never goes into the notebook: put it in an environment variable and "
                "pass --token-env VAR, or leave both out to be asked in a hidden prompt"
            )
        try:
            if cell is None:
                return self._line(args)
            return self._cell(args, cell)
        except RdsError as exc:
            raise MagicError(exc, self.session.own_names()) from None

    # ------------------------------------------------------------------ line commands

    def _line(self, args: argparse.Namespace) -> Any:
        if args.mock or args.on or args.preview or args.epsilon is not None:
            raise UsageError("--mock, --on, --epsilon and --preview belong to the cell magic %%rds")
        if not args.command:
            raise UsageError(f"say what to do: %rds {' | '.join(COMMANDS)} (help: %rds?)")
        command, *rest = args.command
        if command not in COMMANDS:
            raise UsageError(
                f"unknown command {command!r}; the commands are {', '.join(COMMANDS)} (help: %rds?)"
            )
        if command != "connect" and (args.name or args.token_env):
            raise UsageError("--name and --token-env belong to %rds connect")
        if args.forget and command != "disconnect":
            raise UsageError("--forget belongs to %rds disconnect")
        if len(rest) > 1 or (command == "nodes" and rest) or (command == "disconnect" and not rest):
            usage = {"connect": "connect [URL] --name NAME", "disconnect": "disconnect NAME"}
            raise UsageError(f"usage: %rds {usage.get(command, command + ' [NAME]')}")
        name = rest[0] if rest else None
        if command == "connect":
            return self._connect(name, args.name, args.token_env)
        if command == "disconnect":
            assert name is not None
            forgotten = self.session.disconnect(name, forget=args.forget)
            print(f"disconnected {name}" + ("; its saved token is deleted" if forgotten else ""))
            return None
        if command == "nodes":
            return self._nodes()
        nodes = self.session.select(name)
        if command == "datasets":
            return self._datasets(nodes)
        if command == "budget":
            return self.session.meter(nodes)
        releases = {n.name: n.releases(limit=self.history_limit) for n in nodes}
        return display.history_frame(releases)

    def _connect(self, url: str | None, name: str | None, token_env: str | None) -> None:
        if url is None and name is None:
            raise UsageError("usage: %rds connect URL --name NAME (or --name NAME of a saved one)")
        node = self.session.connect(url, name, token_env=token_env, save=self.save_connections)
        user = node.info.get("user") or {}
        datasets = ", ".join(self.session.datasets(node, refresh=True)) or "none yet"
        saved = f"; saved in {connections_path()}" if self.save_connections else ""
        print(
            f"connected to {node.name} at {node.url} as {user.get('name')} "
            f"({user.get('role')}); datasets: {datasets}{saved}"
        )

    def _nodes(self) -> display.Table:
        rows = []
        for node in self.session.nodes.values():
            user = node.info.get("user") or {}
            try:
                b = node.budget.get()
                left = f"{b.epsilon_remaining:.4g} of {b.epsilon_total:.4g}"
                datasets = ", ".join(self.session.datasets(node))
            except RdsError as exc:
                left, datasets = "?", f"unreachable: {exc.message}"
            rows.append([node.name, node.url, str(user.get("name")), left, datasets])
        columns = ("node", "URL", "you are", "ε left", "datasets")
        note = "" if rows else "no node connected; run %rds connect URL --name NAME"
        return display.Table(columns, rows, note=note)

    def _datasets(self, nodes: list[Node]) -> display.DatasetsView:
        entries = []
        for node in nodes:
            for ds in self.session.datasets(node, refresh=True).values():
                entries.append((node.name, ds, ds.mock.head(self.preview_rows)))
        return display.DatasetsView(entries)

    # ------------------------------------------------------------------ the cell

    def _cell(self, args: argparse.Namespace, cell: str) -> Any:
        if args.command:
            raise UsageError("%%rds takes no command; write %%rds --mock or %%rds --on NODE")
        if args.name or args.token_env or args.forget:
            raise UsageError("--name, --token-env and --forget belong to the line magic %rds")
        if not args.mock and not args.on:
            raise UsageError(
                "say where the cell runs: %%rds --mock (on mock data, free) or "
                "%%rds --on NODE (on the node)"
            )
        if args.mock and args.preview:
            raise UsageError("--preview needs --on NODE instead of --mock (a mock run is free)")
        if args.epsilon is not None and not (math.isfinite(args.epsilon) and args.epsilon > 0):
            raise UsageError("--epsilon must be a positive number, e.g. --epsilon 0.5")
        mode: Mode = "mock" if args.mock else "preview" if args.preview else "remote"
        nodes = self.session.select(args.on)
        if mode != "mock" and len(nodes) > 1:
            names = [n.name for n in nodes]
            raise BadRequest(
                FEDERATION.format(nodes=", ".join(names), first=names[0], second=names[1])
            )
        from IPython.display import display as show

        run = CellRun(mode, args.epsilon, show=show)
        bindings: dict[str, CellDataset] = {}
        for node in nodes:
            for name, ds in self.session.datasets(node).items():
                if not bindable(name):
                    print(f"note: dataset {name!r} of {node.name} is not a Python name; not bound")
                elif name in bindings:
                    first = bindings[name].node.name
                    print(
                        f"note: {name} is {first}'s; {node.name} has a {name!r} too — pick it "
                        f"with --on {node.name}"
                    )
                else:
                    bindings[name] = CellDataset(ds, run)
        shell = self.shell
        assert shell is not None
        __tracebackhide__ = True
        try:
            with bound(shell.user_ns, bindings):
                return execute(shell, cell, shell.user_ns)
        finally:
            for text in run.summary(self.session.budgets):
                print(text)
