"""The tutorial course (``notebooks/``): every notebook runs top to bottom against demo nodes.

One ``rds demo --no-lab`` (a real child process, stopped at the end even on failure) serves
the whole course; the notebooks run in order in fresh kernels that find the nodes through the
demo's connections file (``$RDS_CONFIG_DIR``), as they do in the JupyterLab that ``make demo``
opens. The course's budget plan is pinned too: the notebooks together fit well inside the
demo's ε=10 per node. DP answers are noisy, so the checks are on shapes, costs and ranges,
never on exact values.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from rds_kernel.client import Budget
from tests.demo_process import Demo, demo_process

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "notebooks"
NOTEBOOKS = sorted(COURSE.glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# --------------------------------------------------------------------------- reading notebooks


def code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def text_of(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
        parts.extend(out.get("traceback", []))
    return "\n".join(parts)


def all_text(nb: Any) -> str:
    return "\n".join(text_of(c) for c in code_cells(nb))


def cell(nb: Any, starts_with: str) -> Any:
    """The one code cell whose source starts with ``starts_with``."""
    (found,) = [c for c in code_cells(nb) if c.source.startswith(starts_with)]
    return found


def has_output(cell: Any, mime: str) -> bool:
    return any(mime in o.get("data", {}) for o in cell.get("outputs", []))


def images(nb: Any) -> int:
    """How many cells show a plot; each must be opaque, so it reads on dark themes too."""
    import matplotlib.image

    pngs = [
        o["data"]["image/png"]
        for c in code_cells(nb)
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    for png in pngs:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(png)), format="png")
        assert pixels.shape[2] == 3 or pixels[..., 3].min() == 1.0, "a transparent plot"
    return len(pngs)


# --------------------------------------------------------------------------- committed state


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path: Path) -> None:
    """CI re-executes them; outputs, counts and widget state in git would only go stale."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for c in code_cells(nb):
        assert c.outputs == [], f"{path.name}: strip the outputs of {c.source[:40]!r}"
        assert c.execution_count is None
    assert "widgets" not in nb.metadata
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert not re.search(r"rds_[A-Za-z0-9_-]{20,}", path.read_text()), "a token in a notebook"


def test_the_course_is_numbered_and_starts_with_the_notebook_rds_demo_opens() -> None:
    from rds_kernel.demo.lab import FIRST_NOTEBOOK

    assert NOTEBOOKS[0].name == FIRST_NOTEBOOK
    assert [p.name[:3] for p in NOTEBOOKS] == [f"{i:02d}_" for i in range(1, len(NOTEBOOKS) + 1)]


def test_the_readme_quick_start_is_the_courses_first_steps() -> None:
    """Each code block of the README's scientist quick start is a course cell, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start for data scientists")[1].split("\n## ")[0]
    blocks = [b.strip() for b in re.findall(r"```python\n(.*?)```", section, re.DOTALL)]
    assert len(blocks) >= 3
    cells = [
        (i, j, c.source.strip())
        for i, path in enumerate(NOTEBOOKS)
        for j, c in enumerate(code_cells(nbformat.read(path, as_version=4)))
    ]
    where = []
    for block in blocks:
        found = [(i, j) for i, j, source in cells if source == block]
        assert found, f"README block not found as a course cell:\n{block}"
        where.append(found[0])
    assert where == sorted(where), "the README's blocks come in the course's order"


# --------------------------------------------------------------------------- running the course


@dataclass
class Course:
    """The demo serving the course, and how to run a notebook against it."""

    demo: Demo
    work: Path

    def budgets(self) -> dict[str, Budget]:
        out = {}
        for name, connection in self.demo.connections().items():
            with connection.connect() as node:
                out[name] = node.budget.get()
        return out

    def run(self, path: Path) -> Any:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            timeout=240,
            kernel_name="python3",
            resources={"metadata": {"path": str(self.work)}},
        )
        client.execute()
        return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Course]:
    work = tmp_path_factory.mktemp("course")
    patch = pytest.MonkeyPatch()
    with demo_process(work / "demo", "--no-lab", "--port", "0") as demo:
        # The kernels find the nodes as JupyterLab's do: $RDS_CONFIG_DIR, and `rds` on PATH.
        patch.setenv("RDS_CONFIG_DIR", str(demo.config_dir))
        patch.setenv(
            "PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
        )
        try:
            yield Course(demo, work)
        finally:
            patch.undo()


def spent(before: dict[str, Budget], after: dict[str, Budget]) -> dict[str, float]:
    return {n: after[n].epsilon_spent - before[n].epsilon_spent for n in after}


def spent_delta(before: dict[str, Budget], after: dict[str, Budget]) -> set[str]:
    return {n for n in after if after[n].delta_spent > before[n].delta_spent}


def check_01(nb: Any) -> None:
    assert "so the director has CVD: True" in text_of(cell(nb, "everyone ="))
    assert "Integer Laplace" in text_of(cell(nb, "schema ="))
    rate = float(re.findall(r"guessed right (\d+)% of the time", all_text(nb))[0]) / 100
    assert 0.5 < rate < 0.8, "DP at ε=1 keeps the attack between a coin flip and the bound"
    assert images(nb) == 1


def check_02(nb: Any) -> None:
    text = all_text(nb)
    assert "connected to hospital_a" in text
    assert "connected to hospital_b" in text
    assert "patients" in text_of(cell(nb, "%rds datasets"))
    assert has_output(cell(nb, "%rds budget"), WIDGET_VIEW)
    assert images(nb) == 1


def check_03(nb: Any) -> None:
    assert "Preview of 'patients' on hospital_a" in text_of(cell(nb, "%%rds --on hospital_a\nq ="))
    released = text_of(cell(nb, "%%rds --on hospital_a --epsilon 0.5"))
    assert "Released by hospital_a from 'patients'" in released
    assert "needs ε=100" in all_text(nb)
    assert images(nb) == 1


def check_04(nb: Any) -> None:
    text = all_text(nb)
    assert text.count("Released by hospital_b from 'patients'") >= 5
    assert "median_systolic_bp" in text
    assert images(nb) == 2


def check_05(nb: Any) -> None:
    text = all_text(nb)
    assert "Mock run on the mock data of 'patients' from hospital_a" in text
    assert "unknown column 'income'" in text
    assert "Preview of 'patients' on hospital_a" in text
    assert "Released by hospital_a from 'patients'" in text
    assert "Released by hospital_b from 'patients'" in text
    assert images(nb) == 1


def check_06(nb: Any) -> None:
    text = all_text(nb)
    assert "initialised node 'clinic'" in text
    assert "added dataset 'patients': 4 columns, mock data generated from the schema" in text
    assert re.search(r"alice\s+release\s", text), "the release is in the audit log"
    (scratch,) = re.findall(r"Writing (\S+)/clinic\.schema\.toml", text)
    assert not Path(scratch).exists(), "the last cell deletes the scratch directory"


CHECKS: dict[str, Callable[[Any], None]] = {
    "01_why_remote_data_science": check_01,
    "02_connect_and_explore": check_02,
    "03_first_private_answers": check_03,
    "04_groups_histograms_quantiles": check_04,
    "05_mock_then_real": check_05,
    "06_for_data_owners": check_06,
}

SPENDS = {  # ε each notebook spends on the demo nodes: the course's budget plan
    "01_why_remote_data_science": {"hospital_a": 0.0, "hospital_b": 0.0},
    "02_connect_and_explore": {"hospital_a": 0.0, "hospital_b": 0.0},
    "03_first_private_answers": {"hospital_a": 0.75, "hospital_b": 0.0},
    "04_groups_histograms_quantiles": {"hospital_a": 0.0, "hospital_b": 2.0},
    "05_mock_then_real": {"hospital_a": 1.0, "hospital_b": 0.5},
    "06_for_data_owners": {"hospital_a": 0.0, "hospital_b": 0.0},
}


DELTA_SPENDS = {"04_groups_histograms_quantiles": {"hospital_b"}}  # unknown-key group-bys


def test_every_notebook_has_checks_and_a_budget_plan() -> None:
    assert sorted(CHECKS) == sorted(SPENDS) == [p.stem for p in NOTEBOOKS]
    for node in ("hospital_a", "hospital_b"):
        assert sum(plan[node] for plan in SPENDS.values()) <= 5.0, "half the demo's ε=10"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_against_the_demo_nodes(path: Path, course: Course) -> None:
    before = course.budgets()
    nb = course.run(path)
    after = course.budgets()

    errors = [o for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # A red stderr block reads as a failure to a newcomer (notebook 06's child node printed
    # "... Ctrl-C stops it" there): the course writes nothing to stderr.
    stderr = [
        o.text
        for c in code_cells(nb)
        for o in c.outputs
        if o.output_type == "stream" and o.name == "stderr"
    ]
    assert stderr == []
    executed = json.dumps(nb)
    for connection in course.demo.connections().values():
        assert connection.token not in executed
    assert spent(before, after) == pytest.approx(SPENDS[path.stem], abs=1e-9)
    assert spent_delta(before, after) == DELTA_SPENDS.get(path.stem, set())
    CHECKS[path.stem](nb)
