"""rds errors as a magic user sees them: one line, naming the node as they named it."""

from __future__ import annotations

import rds_kernel as rds
from rds_kernel.jupyter.failures import MagicError, one_line


def test_one_line_names_the_node_as_the_scientist_connected_it() -> None:
    error = rds.BudgetExceeded(
        "needs ε=0.6; 0.5 ε left on test_node —\n ask the owner to raise your budget",
        {"node": "hospital_a"},
    )
    assert one_line(error, own_names={"hospital_a": "test_node"}) == (
        "BudgetExceeded: needs ε=0.6; 0.5 ε left on hospital_a — ask the owner to raise your budget"
    )


def test_one_line_puts_the_node_in_front_when_the_message_does_not_name_it() -> None:
    error = rds.NodeUnavailable("could not reach the node at http://h:1 (refused)")
    assert one_line(error, "hospital_a") == (
        "NodeUnavailable: hospital_a: could not reach the node at http://h:1 (refused)"
    )
    assert one_line(error) == "NodeUnavailable: could not reach the node at http://h:1 (refused)"


def test_a_magic_error_renders_as_its_line_only() -> None:
    error = MagicError(rds.SpecError("no column 'weight'; columns: age, sex"))
    assert error._render_traceback_() == ["SpecError: no column 'weight'; columns: age, sex"]
    assert isinstance(error.error, rds.SpecError)
