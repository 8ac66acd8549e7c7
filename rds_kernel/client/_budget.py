"""Your privacy budget on a node, as a resource: ``node.budget.get()``, ``.request()``,
``.requests()``.

``node.budget()`` (calling the resource) is ``node.budget.get()``, as it was before budgets were
a resource. :func:`request_budget` and :func:`budget_requests` are the module-level forms
(``rds.request_budget(node, ...)``); they give plain dicts, as they always did.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from rds_kernel.client._events import notify_budget

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.client._node import Node
    from rds_kernel.wire import Budget, BudgetRequest

__all__ = ["NodeBudget", "budget_requests", "request_budget"]


class NodeBudget:
    """Your privacy budget on one node.

    :meth:`get` asks the node for it (and tells the budget listeners, so a notebook's meter
    follows); :meth:`request` asks the node's owner for more; :meth:`requests` lists what you
    asked for and the owner's decisions. Calling the resource is :meth:`get`.
    """

    def __init__(self, node: Node) -> None:
        self._node = node

    def __repr__(self) -> str:
        return (
            f"<your budget on {self._node.name}: .get(), .request(epsilon=..., reason=...), "
            ".requests()>"
        )

    def get(self) -> Budget:
        """Your budget now: total, spent and remaining ε and δ, and per-dataset caps."""
        from rds_kernel.wire import Budget

        budget = self._node._transport.get("/v1/budget", Budget)
        notify_budget(self._node.name, budget)
        return budget

    def __call__(self) -> Budget:
        """``node.budget()``: the same as :meth:`get`."""
        return self.get()

    def request(self, *, epsilon: float, reason: str, delta: float = 0.0) -> BudgetRequest:
        """Ask the node's owner for ``epsilon`` (and ``delta``) more, saying why (they read it).

        The owner grants or denies it (``rds budget grant``); :meth:`requests` shows the
        decision, and a grant raises your total by what you asked for.
        """
        from rds_kernel.wire import BudgetRequest

        body = {"epsilon": epsilon, "delta": delta, "reason": reason}
        return self._node._transport.post("/v1/budget/requests", body, BudgetRequest)

    def requests(self, limit: int = 100) -> builtins.list[BudgetRequest]:
        """Your requests for more budget, newest first, with the owner's decisions."""
        from rds_kernel.wire import BudgetRequests

        answer = self._node._transport.get("/v1/budget/requests", BudgetRequests, {"limit": limit})
        return list(answer.requests)


def request_budget(
    node: Node, *, epsilon: float, reason: str, delta: float = 0.0
) -> dict[str, Any]:
    """Ask the node's owner for ``epsilon`` (and ``delta``) more budget, saying why.

    The same as ``node.budget.request(...)``, as a dict.
    """
    return node.budget.request(epsilon=epsilon, reason=reason, delta=delta).to_dict()


def budget_requests(node: Node) -> list[dict[str, Any]]:
    """Your budget requests on ``node``, newest first, with the owner's decisions.

    The same as ``node.budget.requests()``, as dicts.
    """
    return [r.to_dict() for r in node.budget.requests()]
