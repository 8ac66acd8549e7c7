"""``rds user add|list|rotate|disable|enable``: the node's accounts and their tokens.

A command that makes a token prints it alone on stdout, once: ``TOKEN=$(rds user add alice)``.
"""

from __future__ import annotations

import click

from rds_kernel.cli.common import BUDGET, node_service
from rds_kernel.cli.output import format_option, say, secret, show, user_lines
from rds_kernel.errors import Conflict

__all__ = ["user"]

NAME = click.argument("name", help="The account's name.")


@click.group()
def user() -> None:
    """Manage accounts and their tokens."""


@user.command()
@NAME
@click.option(
    "--role",
    type=click.Choice(["scientist", "owner"]),
    default="scientist",
    show_default=True,
    help="What the account may do.",
)
@click.option(
    "--epsilon",
    type=BUDGET,
    help="The scientist's total privacy budget ε on this node (default: no budget).",
)
@click.option("--delta", type=BUDGET, default=0.0, show_default=True, help="The total δ budget.")
def add(name: str, role: str, epsilon: float | None, delta: float) -> int:
    """Create an account; its token follows alone on stdout, shown once."""
    with node_service() as svc:
        try:
            _user, token = svc.add_user("cli", name, role, epsilon=epsilon, delta=delta)
        except Conflict as exc:
            existing = svc.store.get_user(name)
            raise Conflict(taken(name, existing.role, existing.disabled), exc.detail) from None
    budget = f" with ε={epsilon}, δ={delta}" if epsilon is not None else " with no budget"
    say(f"created {role} {name!r}{budget}; the token follows on stdout (shown once)")
    secret(token)
    return 0


def taken(name: str, role: str, disabled: bool) -> str:
    """The error for `rds user add NAME` when NAME exists: the commands that manage it."""
    steps = [f"`rds user rotate {name}` gives it a new token"]
    if role == "scientist":
        steps.append(f"`rds budget set {name} --epsilon E` changes its budget")
    if disabled:
        steps.insert(0, f"`rds user enable {name}` lets its token work again")
    state = " (disabled)" if disabled else ""
    return (
        f"a user named {name!r} already exists{state}; pick another name, or manage that "
        f"account: {'; '.join(steps)}"
    )


@user.command("list")
@format_option
def list_(fmt: str) -> int:
    """List the accounts."""
    with node_service() as svc:
        users = [u.to_dict() for u in svc.store.list_users()]
    show(users, fmt, user_lines)
    return 0


@user.command()
@NAME
def rotate(name: str) -> int:
    """Give an account a new token (alone on stdout, shown once); the old one stops working."""
    with node_service() as svc:
        token = svc.store.rotate_token(name, actor="cli")
    say(f"{name!r} has a new token, which follows on stdout (shown once); the old one is dead")
    secret(token)
    return 0


@user.command()
@NAME
def disable(name: str) -> int:
    """Stop an account's token from working; its history and budget stay."""
    with node_service() as svc:
        svc.store.disable_user(name, actor="cli")
    say(f"{name!r} is disabled: their token no longer works; history and budget stay")
    return 0


@user.command()
@NAME
def enable(name: str) -> int:
    """Let a disabled account's token work again."""
    with node_service() as svc:
        svc.store.enable_user(name, actor="cli")
    say(f"{name!r} is enabled again (rotate the token too if it may have leaked)")
    return 0
