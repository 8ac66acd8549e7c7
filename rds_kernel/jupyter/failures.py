"""How an rds error reaches a magic user: one line that says what to do, never a traceback.

The magics turn every :class:`rds_kernel.RdsError` into a :class:`MagicError`. IPython shows an
exception through its ``_render_traceback_`` when it has one (ipykernel and the terminal both
do), so the notebook shows ``BudgetExceeded: needs ε=0.6, ... left on hospital_a — ask the
owner to raise your budget`` and nothing else. Other exceptions are the scientist's own bugs
and keep their usual traceback.
"""

from __future__ import annotations

from collections.abc import Mapping

from rds_kernel.errors import RdsError


class MagicError(Exception):
    """An rds error raised in a magic, shown as one line. ``error`` is the original."""

    def __init__(self, error: RdsError, own_names: Mapping[str, str] | None = None) -> None:
        self.error = error
        self.line = one_line(error, own_names=own_names)
        super().__init__(self.line)

    def _render_traceback_(self) -> list[str]:
        return [self.line]


def one_line(
    error: RdsError, node: str | None = None, *, own_names: Mapping[str, str] | None = None
) -> str:
    """``"<Class>: <message>"`` on one line, naming the node as the scientist named it.

    ``node`` (default: ``error.detail["node"]``, set by the cell's dataset handles) is the name
    the node was connected under. ``own_names`` maps it to the name the node gives itself in
    its messages ("left on test_node"), which is replaced; if the message still does not name
    the node, the name is put in front.
    """
    node = node or _str(error.detail.get("node"))
    text = " ".join(error.message.split())
    if node:
        own = (own_names or {}).get(node)
        if own and own != node:
            text = text.replace(f"on {own}", f"on {node}")
        if node not in text:
            text = f"{node}: {text}"
    return f"{type(error).__name__}: {text}"


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
