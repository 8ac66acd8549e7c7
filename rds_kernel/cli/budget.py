"""``rds budget set|show|cap|requests|grant|deny``: privacy budgets and requests for more."""

from __future__ import annotations

import click

from rds_kernel.cli.common import BUDGET, job_service, node_service
from rds_kernel.cli.output import budget_lines, format_option, request_lines, say, show

__all__ = ["budget"]

DELTA = click.option(
    "--delta",
    type=BUDGET,
    help="The δ total (default: keep the one already set, 0 where none was).",
)
REQUEST = click.argument(
    "request", type=click.IntRange(min=1), help="The request's number (see `rds budget requests`)."
)
NOTE = click.option("--note", help="A note for the scientist and the audit log (default: none).")


@click.group()
def budget() -> None:
    """Set and show privacy budgets; grant or deny requests for more."""


@budget.command("set")
@click.argument("user", help="The scientist's account name.")
@click.option("--epsilon", type=BUDGET, required=True, help="The ε total.")
@DELTA
@click.option(
    "--dataset",
    help="Set the budget on this dataset only, within the total (default: the total).",
)
@format_option
def set_(user: str, epsilon: float, delta: float | None, dataset: str | None, fmt: str) -> int:
    """Set a scientist's total budget on the node, or on one dataset; show the result."""
    with node_service() as svc:
        view = svc.set_budget("cli", user, epsilon, delta, dataset=dataset)
    scope = f"dataset {dataset!r}" if dataset else "this node"
    line = view if dataset is None else view.per_dataset[dataset]
    say(f"budget of {user!r} on {scope} set to ε={epsilon}, δ={line.delta_total}")
    show(view.to_dict(), fmt, budget_lines)
    return 0


@budget.command("show")
@click.argument("user", help="The scientist's account name.")
@format_option
def show_(user: str, fmt: str) -> int:
    """Show what a scientist has spent and has left, in total and per dataset."""
    with node_service() as svc:
        svc.store.get_user(user)
        view = svc.store.budget(user)
    show(view.to_dict(), fmt, budget_lines)
    return 0


@budget.command()
@click.argument("dataset", help="The dataset's name.")
@click.option(
    "--epsilon", type=BUDGET, required=True, help="The ε all scientists together may spend on it."
)
@DELTA
@format_option
def cap(dataset: str, epsilon: float, delta: float | None, fmt: str) -> int:
    """Cap a dataset's spending across all scientists together; show the cap."""
    with node_service() as svc:
        limit = svc.set_cap("cli", dataset, epsilon, delta)
    say(
        f"global cap on {dataset!r} (all scientists together) set to ε={epsilon}, "
        f"δ={limit.delta_total}"
    )
    show(limit.to_dict(), fmt, budget_lines)
    return 0


@budget.command()
@click.option(
    "--status",
    type=click.Choice(["pending", "granted", "denied"]),
    help="Only requests in this status (default: all).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many."
)
@format_option
def requests(status: str | None, limit: int, fmt: str) -> int:
    """List scientists' requests for more budget, newest first, with their reasons."""
    with job_service() as jobs:
        found = jobs.requests.list(status=status, limit=limit)
    show(found, fmt, request_lines)
    return 0


@budget.command()
@REQUEST
@NOTE
def grant(request: int, note: str | None) -> int:
    """Grant a budget request: the scientist's total rises by what they asked for."""
    with job_service() as jobs:
        r = jobs.requests.grant(request, actor="cli", note=note)
        view = jobs.node.store.budget(r["user"])
    say(
        f"granted request {r['id']}: {r['user']} now has ε={view.epsilon_total:g}, "
        f"δ={view.delta_total:g} in total ({view.epsilon_remaining:g} ε left)"
    )
    return 0


@budget.command()
@REQUEST
@NOTE
def deny(request: int, note: str | None) -> int:
    """Deny a budget request."""
    with job_service() as jobs:
        r = jobs.requests.deny(request, actor="cli", note=note)
    say(f"denied request {r['id']} of {r['user']}")
    return 0
