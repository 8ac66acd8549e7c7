"""A real notebook, executed by nbclient in a real kernel, against a node started here.

The kernel gets the node's URL from ``$RDS_NODE_URL`` and the token from ``$RDS_NODE_TOKEN``;
the executed notebook must never contain the token. Widget state (the budget meter) is what
nbclient recorded from the kernel's comm messages, as a front end would have received it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.jupyter.shell import Served

pytestmark = pytest.mark.server

NOTEBOOK = Path(__file__).with_name("magics_tour.ipynb")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def outputs(cell: Any) -> list[dict[str, Any]]:
    return [dict(o) for o in cell.get("outputs", [])]


def text_of(cell: Any) -> str:
    parts = []
    for out in outputs(cell):
        parts.append(out.get("text", ""))
        parts.extend(str(v) for v in out.get("data", {}).values())
        parts.extend(out.get("traceback", []))
    return "\n".join(parts)


def progress_values(nb: Any) -> list[float]:
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [
        m["state"]["value"]
        for m in state.values()
        if m["model_name"] == "FloatProgressModel" and m["state"].get("description") == "ε left"
    ]


def test_the_magics_tour_runs_end_to_end(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = served.scientist(epsilon=3.0)
    monkeypatch.setenv("RDS_NODE_URL", served.url)
    monkeypatch.setenv("RDS_NODE_TOKEN", token)
    monkeypatch.setenv("RDS_CONFIG_DIR", str(tmp_path / "config"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    assert token not in json.dumps(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    _load, connect, datasets, budget, mock, preview, remote, refused, history = code

    assert "connected to hospital_a" in text_of(connect)
    assert "<summary><b>patients</b> on hospital_a" in text_of(datasets)
    assert any(WIDGET_VIEW in o.get("data", {}) for o in outputs(budget))
    assert "Mock run on the mock data of 'patients'" in text_of(mock)
    assert "Preview of 'patients' on hospital_a" in text_of(preview)
    assert "nothing was spent" in text_of(preview)
    assert "Released by hospital_a from 'patients'" in text_of(remote)

    (error,) = [o for o in outputs(refused) if o["output_type"] == "error"]
    assert len(error["traceback"]) == 1
    assert error["traceback"][0].startswith("BudgetExceeded: hospital_a: needs ε=100")

    released = served.node(token).budget.get()
    assert 0 < released.epsilon_spent <= 0.5  # the one remote release, nothing else
    assert "hospital_a" in text_of(history)
    # The meter shown before the release moved with it, through the kernel's comms.
    assert progress_values(nb) == [pytest.approx(released.epsilon_remaining)]
