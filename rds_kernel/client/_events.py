"""Budget events: a callback whenever the client learns your budget on a node.

The client calls every registered listener with ``(node_name, budget)`` after a release (the
node's answer carries the budget after the charge), after a preview, and after
``node.budget.get()``. The notebook's budget meter listens here, so it follows every release made
from the notebook, whether by the magics or the Python API::

    remove = rds.client.add_budget_listener(lambda node, budget: print(node, budget))
    node.budget.get()    # prints "hospital_a alice: ε 2 left of 2 ..."
    remove()

``node_name`` is the name the node was connected under (``rds.connect(..., name=...)``).
A listener that raises does not break the release: its error becomes a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - pydantic is imported with the first answer
    from rds_kernel.wire import Budget

BudgetListener = Callable[[str, "Budget"], None]
"""Called with the node's name and your budget on it, as the node reported it."""

_listeners: list[BudgetListener] = []


def add_budget_listener(listener: BudgetListener) -> Callable[[], None]:
    """Call ``listener(node_name, budget)`` whenever the client learns a budget.

    Returns a function that removes the listener again.
    """
    _listeners.append(listener)
    return lambda: remove_budget_listener(listener)


def remove_budget_listener(listener: BudgetListener) -> None:
    """Stop calling ``listener`` (nothing happens if it was not registered)."""
    if listener in _listeners:
        _listeners.remove(listener)


def notify_budget(node: str, budget: Budget) -> None:
    """Tell every listener that ``budget`` is now the budget on ``node``."""
    for listener in list(_listeners):
        try:
            listener(node, budget)
        except Exception as exc:
            warnings.warn(
                f"budget listener {listener!r} failed ({type(exc).__name__}: {exc}); "
                "the release itself is unaffected",
                RuntimeWarning,
                stacklevel=2,
            )
