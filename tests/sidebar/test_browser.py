"""The dataset browser in a real JupyterLab, driven through Debian's Chromium by Playwright.

The main scenario, as a scientist would do it: open the sidebar, see the saved node (reachable,
with its budget) and a node that is down (shown as unreachable), open ``patients`` and read
its schema and mock rows, create a notebook, press **Insert code**, run the notebook and see
the DP answer from the mock data; then release for real and watch the budget bar follow.
Each test saves a screenshot in ``test-artifacts/``, pass or fail.

Playwright's own browsers are never downloaded: ``scripts/ensure-chromium`` installs Debian's
``chromium``. Without it the tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from rds_kernel import wire
from rds_kernel.client import save_connection
from rds_kernel.jupyter.meter import NodeMeter
from tests.node.nodes import RunningNode
from tests.sidebar.lab import Lab, jupyter_lab

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PANEL = "#rds-dataset-browser"
TIMEOUT_MS = 30_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


@pytest.fixture(scope="module")
def lab(
    owner_node: RunningNode, tmp_path_factory: pytest.TempPathFactory, closed_port_url: str
) -> Iterator[Lab]:
    """JupyterLab with two saved connections: ``hospital_a`` (alice) and ``down``."""
    work = tmp_path_factory.mktemp("lab")
    config = work / "rds_config"
    save_connection("hospital_a", owner_node.url, owner_node.tokens["alice"], config / "c.json")
    save_connection("down", closed_port_url, "not-a-real-token", config / "c.json")
    (config / "c.json").rename(config / "connections.json")
    with jupyter_lab(work, config) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; run scripts/ensure-chromium (as root)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; its screenshot is saved as test-artifacts/<test name>.png, pass or fail."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def open_browser_panel(page: Page, lab: Lab) -> None:
    """Open the lab on a fresh layout (not the last test's) and show the panel."""
    page.goto(lab.page_url("lab?reset"))
    page.locator('.jp-SideBar.jp-mod-left li[data-id="rds-dataset-browser"]').click()
    expect(page.locator(PANEL)).to_be_visible()


def test_sidebar_lists_nodes_shows_schema_and_inserts_a_cell_that_runs(
    page: Page, lab: Lab
) -> None:
    open_browser_panel(page, lab)
    panel = page.locator(PANEL)

    # The tree: the reachable node with its budget and dataset, the node that is down.
    node = panel.locator('li.rds-Node[data-node="hospital_a"]')
    expect(node).to_have_class(re.compile(r"\brds-mod-ok\b"))
    expect(node.locator(".rds-Node-user")).to_have_text("as alice")
    expect(node.locator(".rds-Budget-text")).to_contain_text("left of 2")
    down = panel.locator('li.rds-Node[data-node="down"]')
    expect(down).to_have_class(re.compile(r"\brds-mod-unreachable\b"))
    expect(down.locator(".rds-Node-message")).to_contain_text("down")

    # The dataset's detail: description, schema with bounds and categories, mock rows.
    node.locator('li.rds-Dataset[data-dataset="patients"]').click()
    detail = panel.locator(".rds-Detail")
    expect(detail.locator(".rds-Detail-title")).to_have_text("patients")
    expect(detail.locator(".rds-Detail-description")).to_contain_text("Synthetic patients")
    expect(detail.locator('.rds-Schema tr[data-column="age"]')).to_contain_text("18 … 95")
    expect(detail.locator('.rds-Schema tr[data-column="sex"]')).to_contain_text("F, M")
    expect(detail.locator('.rds-Schema tr[data-column="bmi"]')).to_contain_text("float?")
    expect(detail.locator(".rds-Mock tr")).to_have_count(21)  # header + 20 mock rows

    # A new notebook from the launcher, then Insert code.
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    notebook = page.locator(".jp-NotebookPanel:visible")
    # Cells run before the kernel is up are silently skipped: wait for its first "idle".
    kernel_status = page.locator(".jp-StatusBar-Widget").get_by_role("button", name="| Idle")
    expect(kernel_status).to_be_visible(timeout=60_000)
    detail.locator(".rds-InsertButton").click()
    cells = notebook.locator(".jp-Cell.jp-CodeCell")
    expect(cells).to_have_count(2)
    expect(cells.nth(0)).to_contain_text("%rds connect --name hospital_a")
    expect(cells.nth(1)).to_contain_text("%%rds --mock --on hospital_a")

    # Run All: the set-up cell connects, the snippet releases on the mock data.
    cells.nth(0).locator(".jp-InputPrompt").click()  # the notebook, not the sidebar, has focus
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    run_all = page.get_by_role("menuitem", name=re.compile(r"^Run All Cells"))
    expect(run_all).to_be_enabled()
    run_all.click()
    for i in range(2):
        expect(cells.nth(i).locator(".jp-InputArea-prompt")).to_have_text(
            re.compile(r"\[\d+\]:"), timeout=60_000
        )
    answer = cells.nth(1).locator(".jp-OutputArea")
    expect(answer).to_contain_text("count")
    expect(answer.locator("table")).to_be_visible()
    errors = notebook.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
    expect(errors).to_have_count(0)

    # A real release from the notebook: the sidebar refreshes by itself when the cell is done.
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below, in command mode
    page.keyboard.press("Enter")
    page.keyboard.insert_text(
        "%%rds --on hospital_a\npatients.agg(rds.count()).release(epsilon=0.25)"
    )
    page.keyboard.press("Shift+Enter")
    expect(cells.nth(2).locator(".jp-OutputArea")).to_contain_text("count", timeout=60_000)
    expect(errors).to_have_count(0)
    expect(node.locator(".rds-Budget-text")).to_contain_text("ε 1.75 left of 2")


def test_connecting_and_forgetting_a_node_from_the_sidebar(
    page: Page, lab: Lab, owner_node: RunningNode
) -> None:
    """The + form checks the token with the node and saves it; × forgets the connection."""
    open_browser_panel(page, lab)
    panel = page.locator(PANEL)
    expect(panel.locator('li.rds-Node[data-node="hospital_a"]')).to_be_visible()
    panel.locator(".rds-AddNodeButton").click()
    form = panel.locator("form.rds-AddNode")
    form.locator('input[name="name"]').fill("hospital_b")
    form.locator('input[name="url"]').fill(owner_node.url)
    token = form.locator('input[name="token"]')
    expect(token).to_have_attribute("type", "password")
    token.fill("not-a-real-token")
    form.get_by_role("button", name="Connect").click()
    expect(form.locator(".rds-AddNode-error")).not_to_be_empty()
    token.fill(owner_node.tokens["bob"])
    form.get_by_role("button", name="Connect").click()
    added = panel.locator('li.rds-Node[data-node="hospital_b"]')
    expect(added.locator(".rds-Node-user")).to_have_text("as bob")
    expect(form).to_be_hidden()
    assert owner_node.tokens["bob"] not in page.content()

    added.locator(".rds-Node-header").hover()
    added.locator(".rds-Node-remove").click()
    expect(added).to_have_count(0)
    expect(panel.locator('li.rds-Node[data-node="hospital_a"]')).to_be_visible()


def test_insert_code_without_a_notebook_opens_a_new_one(page: Page, lab: Lab) -> None:
    open_browser_panel(page, lab)
    panel = page.locator(PANEL)
    expect(page.locator(".jp-NotebookPanel")).to_have_count(0)
    panel.locator('li.rds-Dataset[data-dataset="patients"]').first.click()
    panel.locator(".rds-InsertButton").click()
    cells = page.locator(".jp-NotebookPanel:visible .jp-Cell.jp-CodeCell")
    expect(cells).to_have_count(2)
    expect(cells.nth(1)).to_contain_text('patients.group_by("sex")')
    expect(cells.nth(0)).to_have_class(re.compile(r"\bjp-mod-active\b"))  # runs first


COURSE = [
    ("markdown", "# A course notebook\nSome explanations first."),
    ("code", "answer = 6 * 7"),
    ("markdown", "## Later in the course"),
    ("code", "import rds_kernel as rds\n%load_ext rds_kernel"),
    ("code", "%rds connect --name hospital_a"),
    ("code", "%%rds --mock --on hospital_a\npatients.agg(rds.count()).release(epsilon=0.1)"),
]


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> None:
    """An nbformat 4 notebook of ``cells`` (kind, source), never run."""

    def cell(kind: str, source: str) -> dict[str, object]:
        out: dict[str, object] = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            out |= {"execution_count": None, "outputs": []}
        return out

    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": kernel},
        "cells": [cell(kind, source) for kind, source in cells],
    }
    path.write_text(json.dumps(notebook))


def test_insert_code_in_the_middle_of_a_course_notebook_runs_first_time(
    page: Page, lab: Lab
) -> None:
    """Issue 12: in a notebook whose import and %load_ext come later, Insert code under an
    early cell must add a set-up cell with all three lines (only cells above run first) and
    select it, so Shift+Enter, Shift+Enter runs the set-up, then the query, without an error.
    It selected the query cell ("Cell magic `%%rds` not found") and left the set-up without
    the import (NameError)."""
    write_notebook(lab.root / "course.ipynb", COURSE)
    page.goto(lab.page_url("lab/tree/course.ipynb?reset"))
    notebook = page.locator(".jp-NotebookPanel:visible")
    cells = notebook.locator(".jp-Cell")
    expect(cells).to_have_count(len(COURSE))
    kernel_status = page.locator(".jp-StatusBar-Widget").get_by_role("button", name="| Idle")
    expect(kernel_status).to_be_visible(timeout=60_000)
    cells.nth(1).locator(".jp-InputPrompt").click()  # answer = 6 * 7: the middle of the course
    expect(cells.nth(1)).to_have_class(re.compile(r"\bjp-mod-active\b"))

    page.locator('.jp-SideBar.jp-mod-left li[data-id="rds-dataset-browser"]').click()
    panel = page.locator(PANEL)
    node = panel.locator('li.rds-Node[data-node="hospital_a"]')
    node.locator('li.rds-Dataset[data-dataset="patients"]').click()
    panel.locator(".rds-InsertButton").click()

    expect(cells).to_have_count(len(COURSE) + 2)
    setup, query = cells.nth(2), cells.nth(3)
    for line in ("import rds_kernel as rds", "%load_ext rds_kernel", "%rds connect --name"):
        expect(setup).to_contain_text(line)
    expect(query).to_contain_text("%%rds --mock --on hospital_a")
    expect(cells.nth(4)).to_contain_text("Later in the course")  # the rest stays below
    expect(notebook.locator(".jp-Cell.jp-mod-active")).to_have_count(1)
    expect(setup).to_have_class(re.compile(r"\bjp-mod-active\b"))

    # The obvious order: run the selected cell, then the next, with the keyboard alone.
    page.keyboard.press("Shift+Enter")
    expect(setup.locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=60_000
    )
    expect(query).to_have_class(re.compile(r"\bjp-mod-active\b"))
    page.keyboard.press("Shift+Enter")
    expect(query.locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=60_000
    )
    answer = query.locator(".jp-OutputArea")
    expect(answer).to_contain_text("count")
    expect(answer.locator("table")).to_be_visible()  # a DP answer from the node's mock data
    errors = notebook.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
    expect(errors).to_have_count(0)
    expect(notebook).not_to_contain_text("not found")
    expect(notebook).not_to_contain_text("Error")
    # The course's own later cells did not run.
    expect(cells.nth(5).locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"\[ \]:"))


def test_mock_preview_writes_short_numbers_and_scrolls_in_its_own_box(page: Page, lab: Lab) -> None:
    """Issue 12: mock floats were shown with 16 digits, and the table was cut off at the
    sidebar's default width. Floats now have at most four significant digits (no digit before
    the point is lost), integers stay integers, and the table scrolls sideways in its own box
    while the panel itself does not overflow."""
    open_browser_panel(page, lab)  # the sidebar at its default width (a reset layout)
    panel = page.locator(PANEL)
    panel.locator('li.rds-Node[data-node="hospital_a"] li.rds-Dataset').first.click()
    mock = panel.locator(".rds-Mock")
    expect(mock.locator("tr")).to_have_count(21)

    header = mock.locator("tr").first.locator("th").all_inner_texts()
    rows = [r.locator("td").all_inner_texts() for r in mock.locator("tr").all()[1:]]
    by_column = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    for name in ("bmi", "cholesterol"):  # floats
        values = [v for v in by_column[name] if v]
        assert values and all(re.fullmatch(r"\d+(\.\d+)?", v) for v in values), values
        assert all(significant_digits(v) <= 4 for v in values), values
        assert any("." in v for v in values), values
    for name in ("age", "systolic_bp", "cvd"):  # integers
        assert all(re.fullmatch(r"\d+", v) for v in by_column[name]), by_column[name]

    box = panel.locator(".rds-TableWrap:has(> .rds-Mock)")
    assert box.evaluate("e => getComputedStyle(e).overflowX") == "auto"
    size = box.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert size[0] > size[1], f"the mock table fits at the default width: {size}"
    body = panel.locator(".rds-Browser-body")
    assert body.evaluate("e => e.scrollWidth <= e.clientWidth"), "the panel overflows sideways"
    last = mock.locator("tr").first.locator("th").last
    box.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
    last.evaluate("e => e.scrollIntoView({block: 'nearest', inline: 'nearest'})")
    inner, outer, whole = (
        last.bounding_box(),
        box.bounding_box(),
        panel.bounding_box(),
    )
    assert inner is not None and outer is not None and whole is not None
    assert outer["x"] - 0.5 <= inner["x"], (inner, outer)
    assert inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5, (inner, outer)
    assert outer["x"] + outer["width"] <= whole["x"] + whole["width"] + 0.5, (outer, whole)
    expect(last).to_be_visible()
    expect(last).to_have_text(header[-1])


def significant_digits(text: str) -> int:
    """The significant digits written in a plain decimal number, e.g. 3 in ``0.0123``."""
    return len(text.replace(".", "").lstrip("0")) if "." in text else len(text.rstrip("0"))


# ε and δ (remaining, total) pairs: everyday values, exact ties (1234.5, 10.625: Python
# rounds them to even, toPrecision would not), and both sides of the exponent switch.
BUDGETS = [
    ((10.0, 10.0), (9.01e-06, 1e-05)),
    ((0.5, 2.0), (0.0, 1e-05)),
    ((1234.5678, 10_000.0), (1.23456e-07, 0.001)),
    ((1234.5, 12_345.0), (0.000123456, 0.5)),
    ((10.625, 99_999.0), (2.5e-05, 0.0001)),
    ((0.00012345, 0.1), (1.0, 1.0)),
    ((3.0000001e-05, 1e16), (9.995e-07, 2e-06)),
    ((99_995.0, 123_456.0), (1e-10, 0.00995)),
    ((1.234e-05, 0.0001), (0.0625, 0.125)),
]


def test_the_budget_reads_as_the_meter_writes_it_on_one_line_each(page: Page, lab: Lab) -> None:
    """Issue 12: the sidebar wrote δ as 0.00000901 where the meter and the CLI write 9.01e-06,
    and its budget line wrapped. Each budget (ε, then δ) is one line, and its text is the one
    the ipywidgets meter writes for the same budget (``NodeMeter``'s ``.4g`` and ``.3g``)."""
    budgets = [
        wire.Budget(
            user="alice",
            epsilon_total=et,
            epsilon_spent=et - er,
            epsilon_remaining=er,
            delta_total=dt,
            delta_spent=dt - dr,
            delta_remaining=dr,
        )
        for (er, et), (dr, dt) in BUDGETS
    ]
    nodes: list[dict[str, object]] = [
        {
            "name": f"node_{i}",
            "url": f"http://127.0.0.1:{9000 + i}",
            "status": "ok",
            "message": None,
            "node_name": f"node_{i}",
            "user": "alice",
            "datasets": [],
            "budget": b.model_dump(mode="json"),
        }
        for i, b in enumerate(budgets)
    ]
    page.route(
        re.compile(r".*/rds-kernel/nodes(\?.*)?$"),
        lambda route: (
            route.fulfill(json={"nodes": nodes})
            if route.request.method == "GET"
            else route.continue_()
        ),
    )
    open_browser_panel(page, lab)
    panel = page.locator(PANEL)
    for i, budget in enumerate(budgets):
        meter = NodeMeter(f"node_{i}")
        meter.update(budget)
        expected = repr(meter).removeprefix(f"node_{i}: ").split(", ")
        text = panel.locator(f'li.rds-Node[data-node="node_{i}"] .rds-Budget-text')
        expect(text).to_be_visible()
        assert text.inner_text().splitlines() == expected
        lines = text.locator(".rds-Budget-line")
        expect(lines).to_have_text(expected)
        for line in lines.all():
            assert line.evaluate(ONE_LINE), f"{line.inner_text()!r} wraps"
    # A δ of 9.01e-06 as the meter writes it, not 0.00000901.
    expect(panel.locator('li.rds-Node[data-node="node_0"]')).to_contain_text("δ 9.01e-06 left")


ONE_LINE = """e => {
    const range = document.createRange();
    range.selectNodeContents(e);
    return getComputedStyle(e).whiteSpace === 'nowrap' && range.getClientRects().length === 1;
}"""


def test_the_panel_follows_the_dark_theme(page: Page, lab: Lab) -> None:
    """With JupyterLab Dark the panel is dark too: it only uses JupyterLab's CSS variables."""
    themes = lab.settings / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    themes.write_text(json.dumps({"theme": "JupyterLab Dark"}))
    try:
        open_browser_panel(page, lab)
        expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false")
        panel = page.locator(PANEL)
        name = panel.locator('li.rds-Node[data-node="hospital_a"] .rds-Node-name')
        expect(name).to_be_visible()
        background = panel.evaluate("e => getComputedStyle(e).backgroundColor")
        text = name.evaluate("e => getComputedStyle(e).color")
    finally:
        themes.unlink()
    assert luminance(background) < 0.2 < luminance(text), (background, text)


def luminance(css_color: str) -> float:
    """0 (black) to 1 (white) for an ``rgb(...)``/``rgba(...)`` colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css_color)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
