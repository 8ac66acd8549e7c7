"""The ``rds`` command: the data owner's tool (DESIGN §4).

Commands parse arguments, call the node's services and print. Messages go to stderr; a command
that creates a secret prints it alone on stdout, so ``TOKEN=$(rds user add ...)`` works. Every
failure is one line on stderr and a non-zero exit code (1 for a refused operation, 2 for usage).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rds_kernel.errors import BadRequest, RdsError

__all__ = ["main"]


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@contextmanager
def _node(directory: str) -> Iterator[Any]:
    """The node service of ``directory``, closed when the command is done."""
    # Imported here so `rds --help` stays fast.
    from rds_kernel.node.service import NodeService
    from rds_kernel.node.settings import load_settings

    svc = NodeService(load_settings(directory))
    try:
        yield svc
    finally:
        svc.close()


# ---------------------------------------------------------------- commands


def cmd_node_init(a: argparse.Namespace) -> int:
    from rds_kernel.node.settings import NODE_FILE, make_private_directory, write_settings
    from rds_kernel.node.store import Store

    d = Path(a.dir)
    if (d / NODE_FILE).exists():
        raise BadRequest(f"{d} is already a node directory ({NODE_FILE} exists)")
    make_private_directory(d)
    values: dict[str, Any] = {"name": a.name or d.resolve().name}
    for key in ("database_url", "host", "port"):
        if getattr(a, key) is not None:
            values[key] = getattr(a, key)
    settings = write_settings(d, **values)
    store = Store(settings.resolved_database_url)
    try:
        store.create_all()
        _user, token = store.add_user(a.owner, "owner", actor="cli")
    finally:
        store.close()
    _say(f"initialised node {settings.name!r} in {d} (database: {settings.database_url})")
    _say(f"owner account {a.owner!r} created; its token follows on stdout (shown once)")
    print(token)
    return 0


def cmd_node_serve(a: argparse.Namespace) -> int:
    import uvicorn

    from rds_kernel.node.api.app import create_app
    from rds_kernel.node.api.serving import server_config
    from rds_kernel.node.runtime import tune_allocator
    from rds_kernel.node.service import NodeService
    from rds_kernel.node.settings import check_private_directory, load_settings

    tune_allocator()
    settings = load_settings(a.dir)
    check_private_directory(settings.directory)
    service = NodeService(settings)
    service.store.create_all()
    host, port = a.host or settings.host, a.port if a.port is not None else settings.port
    _say(
        f"serving node {settings.name!r} with {len(service.datasets.names())} dataset(s) "
        f"on http://{host}:{port} (Ctrl-C stops it)"
    )
    app = create_app(service=service)
    uvicorn.Server(server_config(app, host=host, port=port, log_level=a.log_level)).run()
    return 0


def cmd_dataset_add(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        ds = svc.datasets.add(
            a.name,
            Path(a.file),
            Path(a.schema),
            mock_file=Path(a.mock) if a.mock else None,
            mock_rows=svc.settings.mock_rows,
            replace=a.replace,
        )
        svc.store.audit(
            "cli",
            "dataset.add",
            {
                "dataset": ds.name,
                "columns": ds.schema.names,
                "mock": "supplied" if a.mock else "generated",
            },
        )
    _say(
        f"added dataset {ds.name!r}: {len(ds.schema.columns)} columns, mock data "
        f"{'from ' + a.mock if a.mock else 'generated from the schema'}"
    )
    return 0


def cmd_dataset_list(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        for ds in svc.list_datasets():
            print(f"{ds['name']}\t{ds['columns']} columns\t{ds['description']}")
    return 0


def cmd_user_add(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        _user, token = svc.add_user("cli", a.name, a.role, epsilon=a.epsilon, delta=a.delta)
    budget = f" with ε={a.epsilon}, δ={a.delta}" if a.epsilon is not None else " with no budget"
    _say(f"created {a.role} {a.name!r}{budget}; the token follows on stdout (shown once)")
    print(token)
    return 0


def cmd_user_list(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        for u in svc.store.list_users():
            state = "disabled" if u.disabled else "active"
            print(f"{u.name}\t{u.role}\t{state}\t{u.created_at.isoformat()}")
    return 0


def cmd_user_rotate(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        token = svc.store.rotate_token(a.name, actor="cli")
    _say(f"{a.name!r} has a new token, which follows on stdout (shown once); the old one is dead")
    print(token)
    return 0


def cmd_user_disable(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        svc.store.disable_user(a.name, actor="cli")
    _say(f"{a.name!r} is disabled: their token no longer works; history and budget stay")
    return 0


def cmd_user_enable(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        svc.store.enable_user(a.name, actor="cli")
    _say(f"{a.name!r} is enabled again (rotate the token too if it may have leaked)")
    return 0


def cmd_budget_set(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        view = svc.set_budget("cli", a.user, a.epsilon, a.delta, dataset=a.dataset)
    scope = f"dataset {a.dataset!r}" if a.dataset else "this node"
    line = view if a.dataset is None else view.per_dataset[a.dataset]
    _say(f"budget of {a.user!r} on {scope} set to ε={a.epsilon}, δ={line.delta_total}")
    _print_budget(view.to_dict(), a.json)
    return 0


def cmd_budget_show(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        svc.store.get_user(a.user)
        view = svc.store.budget(a.user)
    _print_budget(view.to_dict(), a.json)
    return 0


def cmd_budget_cap(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        cap = svc.set_cap("cli", a.dataset, a.epsilon, a.delta)
    _say(
        f"global cap on {a.dataset!r} (all scientists together) set to ε={a.epsilon}, "
        f"δ={cap.delta_total}"
    )
    _print_budget(cap.to_dict(), a.json)
    return 0


def _print_budget(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view, indent=2))
        return

    def line(label: str, v: dict[str, Any]) -> str:
        return (
            f"{label:<24} ε {v['epsilon_spent']:.6g} spent of {v['epsilon_total']:.6g} "
            f"({v['epsilon_remaining']:.6g} left)   δ {v['delta_spent']:.3g} of "
            f"{v['delta_total']:.3g}"
        )

    print(line(view.get("user", "cap"), view))
    for name, per in view.get("per_dataset", {}).items():
        print(line(f"  dataset {name}", per))


def cmd_audit(a: argparse.Namespace) -> int:
    with _node(a.dir) as svc:
        entries = svc.store.audit_log(limit=a.limit)
    for e in entries:
        if a.json:
            print(json.dumps(e.to_dict()))
        else:
            detail = json.dumps(e.detail, sort_keys=True)
            print(f"{e.created_at.isoformat()}  {e.actor:<12} {e.action:<18} {detail}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from rds_kernel.demo.launcher import run_demo

    browser = False if a.no_browser else None
    return run_demo(Path(a.dir) if a.dir else None, a.port, lab=not a.no_lab, browser=browser)


# ---------------------------------------------------------------- the parser


KEEP_DELTA = "the δ total (default: keep the one already set, 0 where none was)"


def _positive_float(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number ≥ 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rds", description="Run and administer an rds owner node.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        parent: Any,
        name: str,
        fn: Callable[[argparse.Namespace], int],
        help: str,
    ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    def group(name: str, help: str) -> Any:
        g = sub.add_parser(name, help=help, description=help)
        return g.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

    node = group("node", "create and serve an owner node")
    sp = command(node, "init", cmd_node_init, "create a node directory (prints the owner token)")
    sp.add_argument("dir")
    sp.add_argument("--name", help="the node's name (default: the directory's name)")
    sp.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the directory)")
    sp.add_argument("--host")
    sp.add_argument("--port", type=int)
    sp.add_argument("--owner", default="owner", help="name of the owner account")
    sp = command(node, "serve", cmd_node_serve, "serve the node's HTTP API")
    sp.add_argument("dir")
    sp.add_argument("--host")
    sp.add_argument("--port", type=int)
    sp.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )

    ds = group("dataset", "add and list datasets")
    sp = command(ds, "add", cmd_dataset_add, "validate a data file against its schema and add it")
    sp.add_argument("dir")
    sp.add_argument("name")
    sp.add_argument("file", help="the private data (.parquet or .csv)")
    sp.add_argument("--schema", required=True, help="the schema file (TOML)")
    sp.add_argument("--mock", help="your own mock file instead of one generated from the schema")
    sp.add_argument("--replace", action="store_true", help="overwrite an existing dataset")
    sp = command(ds, "list", cmd_dataset_list, "list the node's datasets")
    sp.add_argument("dir")

    user = group("user", "manage accounts")
    sp = command(user, "add", cmd_user_add, "create an account (prints its token once)")
    sp.add_argument("dir")
    sp.add_argument("name")
    sp.add_argument("--role", choices=["scientist", "owner"], default="scientist")
    sp.add_argument("--epsilon", type=_positive_float, help="total privacy budget (epsilon)")
    sp.add_argument("--delta", type=_positive_float, default=0.0, help="total delta budget")
    sp = command(user, "list", cmd_user_list, "list accounts")
    sp.add_argument("dir")
    for name, fn, text in (
        ("rotate", cmd_user_rotate, "give an account a new token (printed once); the old dies"),
        ("disable", cmd_user_disable, "stop an account's token from working"),
        ("enable", cmd_user_enable, "let a disabled account's token work again"),
    ):
        sp = command(user, name, fn, text)
        sp.add_argument("dir")
        sp.add_argument("name")

    budget = group("budget", "set and show privacy budgets")
    sp = command(budget, "set", cmd_budget_set, "set a scientist's total (or per-dataset) budget")
    sp.add_argument("dir")
    sp.add_argument("user")
    sp.add_argument("--epsilon", type=_positive_float, required=True)
    sp.add_argument("--delta", type=_positive_float, help=KEEP_DELTA)
    sp.add_argument("--dataset", help="cap this dataset only, within the total")
    sp.add_argument("--json", action="store_true")
    sp = command(budget, "show", cmd_budget_show, "show what a scientist has spent and has left")
    sp.add_argument("dir")
    sp.add_argument("user")
    sp.add_argument("--json", action="store_true")
    sp = command(budget, "cap", cmd_budget_cap, "cap a dataset's spending across all scientists")
    sp.add_argument("dir")
    sp.add_argument("dataset")
    sp.add_argument("--epsilon", type=_positive_float, required=True)
    sp.add_argument("--delta", type=_positive_float, help=KEEP_DELTA)
    sp.add_argument("--json", action="store_true")

    from rds_kernel.cli.jobs import register as register_jobs

    register_jobs(sub, budget, command, group)

    sp = command(sub, "audit", cmd_audit, "print the audit log, newest first")
    sp.add_argument("dir")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true", help="one JSON object per line")

    sp = command(
        sub,
        "demo",
        cmd_demo,
        "start two demo owner nodes with the bundled synthetic patients and JupyterLab on the "
        "tutorial course (Ctrl-C stops everything)",
    )
    sp.add_argument(
        "--dir",
        help="keep the demo here: nodes, ledgers, your copy of the course (default: a "
        "temporary directory, deleted when the demo stops)",
    )
    sp.add_argument(
        "--port",
        type=int,
        help="port of hospital_a; hospital_b gets the next one (default: 8765, or free ports "
        "when it is taken; 0 picks free ports)",
    )
    sp.add_argument("--no-lab", action="store_true", help="start only the nodes")
    sp.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open a browser (the default when there is no display)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except RdsError as exc:
        _say(f"error: {exc.message}")
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
