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

from rds_kernel.client import save_connection
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
