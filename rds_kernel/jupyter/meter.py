"""The live privacy-budget meter: per node, epsilon (and delta) left as a bar with numbers.

Built from plain ipywidgets 8 widgets (no JavaScript of ours), so it renders wherever
ipywidgets does. Its numbers always come from the node: it asks ``node.budget.get()`` when
built, and then follows the client's budget listener, which hears the node's budget after every
release, preview and ``node.budget.get()`` made in this kernel — by the magics or the Python
API.
A meter built after a kernel restart therefore shows the same numbers as before it.

The bar shows what is left and turns from green to orange when 80 % of the budget is spent
and to red at 95 %. Requests for more budget that the owner has not answered yet are listed
under the bar (read from the node whenever the meter refreshes).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets  # type: ignore[import-untyped]

from rds_kernel.client import Node, add_budget_listener
from rds_kernel.errors import RdsError

if TYPE_CHECKING:  # pragma: no cover
    from rds_kernel.client import Budget
    from rds_kernel.wire import BudgetRequest

WARNING_AT = 0.8
"""Fraction of a budget spent from which the bar is orange (``bar_style="warning"``)."""
DANGER_AT = 0.95
"""Fraction of a budget spent from which the bar is red (``bar_style="danger"``)."""


def bar_style(spent: float, total: float) -> str:
    """The bar's colour for this much spent of ``total``: success, warning or danger."""
    fraction = spent / total if total > 0 else 1.0
    if fraction >= DANGER_AT:
        return "danger"
    return "warning" if fraction >= WARNING_AT else "success"


class NodeMeter:
    """One node's row of the meter. ``budget`` is the last budget shown (None until known)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.budget: Budget | None = None
        self.title = widgets.HTML()
        self.epsilon_bar = _bar("ε left")
        self.epsilon_text = widgets.HTML()
        self.delta_bar = _bar("δ left")
        self.delta_text = widgets.HTML()
        self.delta_row = widgets.HBox([self.delta_bar, self.delta_text])
        self.requests = widgets.HTML()
        self.widget = widgets.VBox(
            [
                self.title,
                widgets.HBox([self.epsilon_bar, self.epsilon_text]),
                self.delta_row,
                self.requests,
            ]
        )
        self.title.value = f"<b>{html.escape(node)}</b>"
        self.delta_row.layout.display = "none"
        self.requests.layout.display = "none"

    def show_requests(self, requests: Sequence[BudgetRequest]) -> None:
        """List the requests for more budget still waiting for the owner's answer."""
        pending = [r for r in requests if r.status == "pending"]
        self.requests.layout.display = "" if pending else "none"
        asked = ", ".join(f"ε {r.epsilon:.4g}" for r in pending)
        self.requests.value = (
            f"<i>{len(pending)} request{'s' if len(pending) != 1 else ''} for more budget "
            f"waiting for the owner ({html.escape(asked)})</i>"
            if pending
            else ""
        )

    def update(self, budget: Budget) -> None:
        """Show ``budget``."""
        self.budget = budget
        self.title.value = (
            f"<b>{html.escape(self.node)}</b> — your budget as {html.escape(budget.user)}"
        )
        b = budget
        _show(self.epsilon_bar, b.epsilon_spent, b.epsilon_total, b.epsilon_remaining)
        self.epsilon_text.value = _numbers(
            b.epsilon_spent, b.epsilon_total, b.epsilon_remaining, ".4g"
        )
        uses_delta = b.delta_total > 0 or b.delta_spent > 0
        self.delta_row.layout.display = "" if uses_delta else "none"
        _show(self.delta_bar, b.delta_spent, b.delta_total, b.delta_remaining)
        self.delta_text.value = _numbers(b.delta_spent, b.delta_total, b.delta_remaining, ".3g")

    def fail(self, error: RdsError) -> None:
        """Say that the node's budget could not be read (the last numbers stay visible)."""
        self.title.value = (
            f"<b>{html.escape(self.node)}</b> — budget not available: {html.escape(error.message)}"
        )

    def __repr__(self) -> str:
        b = self.budget
        if b is None:
            return f"{self.node}: budget not known"
        text = f"{self.node}: ε {b.epsilon_remaining:.4g} left of {b.epsilon_total:.4g}"
        if b.delta_total > 0 or b.delta_spent > 0:
            text += f", δ {b.delta_remaining:.3g} left of {b.delta_total:.3g}"
        return text


class BudgetMeter:
    """Your privacy budget on each of ``nodes``, kept up to date; display it in a notebook.

    ``widget`` is the ipywidgets ``VBox``; ``rows`` maps each node's name to its
    :class:`NodeMeter`. Call :meth:`close` to stop following releases.
    """

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes = {node.name: node for node in nodes}
        self.rows = {name: NodeMeter(name) for name in self.nodes}
        self.widget = widgets.VBox([row.widget for row in self.rows.values()])
        self._remove = add_budget_listener(self.update)
        self.refresh()

    def refresh(self) -> None:
        """Ask every node for your budget now (an unreachable node shows why on its row)."""
        for name, node in self.nodes.items():
            try:
                node.budget.get()  # the budget listener calls self.update
                self.rows[name].show_requests(node.budget.requests())
            except RdsError as exc:
                self.rows[name].fail(exc)

    def update(self, node: str, budget: Budget) -> None:
        """Show ``budget`` on ``node``'s row (the budget listener calls this)."""
        if node in self.rows:
            self.rows[node].update(budget)

    def close(self) -> None:
        """Stop following releases and close the widgets."""
        self._remove()
        _close(self.widget)

    def __repr__(self) -> str:
        return "\n".join(repr(row) for row in self.rows.values()) or "no nodes"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle


def _bar(label: str) -> Any:
    return widgets.FloatProgress(
        min=0.0, max=1.0, value=0.0, description=label, bar_style="success"
    )


def _show(bar: Any, spent: float, total: float, left: float) -> None:
    bar.max = total if total > 0 else 1.0
    bar.value = min(max(0.0, left), total) if total > 0 else 0.0
    bar.bar_style = bar_style(spent, total)


def _numbers(spent: float, total: float, left: float, fmt: str) -> str:
    if total <= 0:
        return "none on this node — ask the owner for a budget"
    share = 100 * spent / total
    return f"{left:{fmt}} of {total:{fmt}} left · {spent:{fmt}} spent ({share:.0f} %)"


def _close(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close(child)
    widget.close()
