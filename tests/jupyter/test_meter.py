"""The budget meter: its widgets' state follows the node's ledger, whoever made the release."""

from __future__ import annotations

from typing import Any

import pytest

import rds_kernel as rds
from rds_kernel.jupyter.meter import BudgetMeter, NodeMeter, bar_style
from tests.jupyter.shell import TOKEN_ENV, Served, Shell

pytestmark = pytest.mark.server


def state(row: NodeMeter) -> dict[str, Any]:
    """What the front end would receive for a row: bar values, colours, texts, visibility."""
    eps, delta = row.epsilon_bar.get_state(), row.delta_bar.get_state()
    return {
        "epsilon": (eps["value"], eps["max"], eps["bar_style"]),
        "epsilon_text": row.epsilon_text.get_state()["value"],
        "delta": (delta["value"], delta["max"], delta["bar_style"]),
        "delta_shown": row.delta_row.layout.display != "none",
        "title": row.title.get_state()["value"],
    }


def count(node: rds.Node) -> rds.Query:
    return node.dataset("patients").agg(rds.count())


def test_colour_turns_orange_at_80_and_red_at_95_percent() -> None:
    assert [bar_style(s, 1.0) for s in (0.0, 0.79, 0.8, 0.94, 0.95, 1.0)] == [
        "success",
        "success",
        "warning",
        "warning",
        "danger",
        "danger",
    ]
    assert bar_style(0.0, 0.0) == "danger"  # no budget at all


def test_a_new_meter_shows_the_nodes_budget(served: Served) -> None:
    node = served.node(served.scientist(epsilon=2.0))
    meter = BudgetMeter([node])
    try:
        row = state(meter.rows["hospital_a"])
        assert row["epsilon"] == (2.0, 2.0, "success")
        assert row["epsilon_text"] == "2 of 2 left · 0 spent (0 %)"
        assert row["delta_shown"] is False  # this scientist has no delta budget
        assert "<b>hospital_a</b>" in row["title"]
        bundle = meter._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert bundle["text/plain"] == "hospital_a: ε 2 left of 2"
    finally:
        meter.close()


def test_a_python_api_release_moves_the_bar(served: Served) -> None:
    """The client's budget listener updates the meter; no call to the meter is needed."""
    node = served.node(served.scientist(epsilon=2.0, delta=1e-5))
    meter = BudgetMeter([node])
    try:
        df = count(node).release(epsilon=1.7)
        row = state(meter.rows["hospital_a"])
        left = 2.0 - df.attrs["epsilon_spent"]
        assert row["epsilon"] == (pytest.approx(left), 2.0, "warning")
        assert row["delta_shown"] is True
        assert row["delta"] == (pytest.approx(1e-5), pytest.approx(1e-5), "success")
        count(node).release(epsilon=0.25)
        assert state(meter.rows["hospital_a"])["epsilon"][2] == "danger"
    finally:
        meter.close()


def test_a_refused_release_leaves_the_meter_as_it_was(served: Served) -> None:
    node = served.node(served.scientist(epsilon=1.0))
    meter = BudgetMeter([node])
    try:
        count(node).release(epsilon=0.5)
        before = state(meter.rows["hospital_a"])
        with pytest.raises(rds.BudgetExceeded):
            count(node).release(epsilon=0.9)
        assert state(meter.rows["hospital_a"]) == before
        assert before["epsilon"] == (0.5, 1.0, "success")
    finally:
        meter.close()


def test_a_meter_built_after_a_restart_shows_the_same_numbers(served: Served) -> None:
    """The numbers come from the node's ledger, not from the kernel."""
    token = served.scientist(epsilon=2.0)
    first_node = served.node(token)
    first = BudgetMeter([first_node])
    count(first_node).release(epsilon=0.6)
    before_restart = state(first.rows["hospital_a"])
    first.close()
    first_node.close()

    second = BudgetMeter([served.node(token)])  # a new kernel: new connection, new meter
    try:
        assert state(second.rows["hospital_a"]) == before_restart
        assert before_restart["epsilon"][0] == pytest.approx(1.4)
    finally:
        second.close()


def test_a_closed_meter_stops_following(served: Served) -> None:
    node = served.node(served.scientist(epsilon=2.0))
    meter = BudgetMeter([node])
    meter.close()
    count(node).release(epsilon=0.5)
    assert meter.rows["hospital_a"].budget is not None
    assert meter.rows["hospital_a"].budget.epsilon_spent == 0.0


def test_an_unreachable_node_shows_why_on_its_row(served: Served) -> None:
    node = served.node(served.scientist())
    node.close()
    node._transport.url = "http://127.0.0.1:9"  # nothing listens on the discard port
    meter = BudgetMeter([node])
    try:
        assert "budget not available: could not" in state(meter.rows["hospital_a"])["title"]
    finally:
        meter.close()


def test_the_magic_meter_follows_cells_and_the_python_api(
    connected: tuple[Shell, str], served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`%rds budget` shows the session's meter; releases from cells and from Python move it."""
    shell, token = connected
    meter = shell.run("%rds budget").value
    assert isinstance(meter, BudgetMeter)
    assert state(meter.rows["hospital_a"])["epsilon"][0] == 3.0

    shell.run("%%rds --mock --epsilon 1\npatients.agg(rds.count()).release()")
    assert state(meter.rows["hospital_a"])["epsilon"][0] == 3.0  # mock runs spend nothing

    shell.run("%%rds --on hospital_a --epsilon 1\npatients.agg(rds.count()).release()")
    assert state(meter.rows["hospital_a"])["epsilon"][0] == pytest.approx(2.0)

    # The Python API in the same kernel, on its own connection under the same name.
    count(served.node(token, name="hospital_a")).release(epsilon=0.5)
    assert state(meter.rows["hospital_a"])["epsilon"][0] == pytest.approx(1.5)

    refused = shell.run("%%rds --on hospital_a\npatients.agg(rds.count()).release(epsilon=2)")
    assert refused.error is not None
    assert state(meter.rows["hospital_a"])["epsilon"][0] == pytest.approx(1.5)

    monkeypatch.setenv(TOKEN_ENV, token)
    shell.ip.extension_manager.reload_extension("rds_kernel")  # like a kernel restart
    shell.run(f"%rds connect --name hospital_a --token-env {TOKEN_ENV}")
    again = shell.run("%rds budget").value
    assert again is not meter
    assert state(again.rows["hospital_a"]) == state(meter.rows["hospital_a"])  # type: ignore[attr-defined]


def test_reconnecting_keeps_the_meter_already_shown(connected: tuple[Shell, str]) -> None:
    """Running the connect cell again must not leave a dead meter above it."""
    shell, _token = connected
    meter = shell.run("%rds budget").value
    assert isinstance(meter, BudgetMeter)
    assert shell.run(f"%rds connect --name hospital_a --token-env {TOKEN_ENV}").error is None
    shell.run("%%rds --on hospital_a --epsilon 1\npatients.agg(rds.count()).release()")
    assert state(meter.rows["hospital_a"])["epsilon"][0] == pytest.approx(2.0)
    assert shell.run("%rds budget").value is meter


def test_the_meter_lists_pending_requests_for_more_budget(served: Served) -> None:
    """A request the owner has not answered shows under the bar; refresh keeps it current."""
    node = served.node(served.scientist(epsilon=1.0))
    meter = BudgetMeter([node])
    try:
        row = meter.rows["hospital_a"]
        assert row.requests.layout.display == "none"
        rds.request_budget(node, epsilon=2.5, reason="a second cohort")
        meter.refresh()
        assert row.requests.layout.display == ""
        assert "1 request for more budget" in row.requests.get_state()["value"]
        assert "ε 2.5" in row.requests.get_state()["value"]
    finally:
        meter.close()
