"""The %rds magics in a real IPython shell against a real node on a loopback port.

Cells run through ``shell.run_cell`` exactly as a notebook runs them, so what these tests read
is what a scientist would see: printed lines, rich outputs and the error display.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rds_kernel.client import jobs
from rds_kernel.jupyter.failures import MagicError
from tests.jupyter.shell import TOKEN_ENV, Served, Shell

pytestmark = pytest.mark.server

QUERY = """\
q = patients.filter(rds.col("age") >= 50).group_by("sex").agg(
    rds.count(), rds.mean("cvd", bounds=(0, 1))
)
result = q.release()
result
"""


def assert_one_line(text: str, starts: str) -> str:
    """The error display is a single line starting with ``starts`` and no traceback."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[-1].startswith(starts), text
    assert "Traceback" not in text and "File " not in text, text
    return lines[-1]


# --------------------------------------------------------------------------- loading and help


def test_load_ext_imports_nothing_slow() -> None:
    """`%load_ext rds_kernel` registers the magics without pandas, ipywidgets or requests."""
    code = (
        "import sys, json\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'rds_kernel')\n"
        "print(json.dumps([sorted(ip.magics_manager.magics[k]) for k in ('line', 'cell')]"
        " + [sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pandas', 'ipywidgets', 'requests', 'polars', 'opendp', 'fastapi'))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    line, cell, slow = json.loads(out.stdout)
    assert "rds" in line and "rds" in cell
    assert slow == []


def test_help_lists_every_command_and_option(shell: Shell) -> None:
    """`%rds?` is complete: commands, cell modes and every option with its help."""
    ran = shell.run("%rds?")
    assert ran.error is None
    doc = shell.ip.find_line_magic("rds").__doc__
    for text in (
        "%rds connect URL --name",
        "%rds disconnect NAME",
        "%rds nodes",
        "%rds datasets",
        "%rds budget",
        "%rds history",
        "%%rds --mock",
        "%%rds --on NODE --preview",
        "--token-env VAR",
        "--epsilon",
        "--forget",
        "RdsMagics",
    ):
        assert text in doc, text
    assert "--token TOKEN" not in doc  # the refusing option is hidden


def test_unknown_command_and_misplaced_options_are_usage_errors(shell: Shell) -> None:
    for source, says in (
        ("%rds", "say what to do"),
        ("%rds frobnicate", "unknown command 'frobnicate'"),
        ("%rds nodes --mock", "belong to the cell magic"),
        ("%%rds\n1", "say where the cell runs"),
        ("%%rds --mock --preview\n1", "--preview needs --on"),
        ("%%rds --mock --epsilon -1\n1", "--epsilon must be a positive number"),
    ):
        ran = shell.run(source)
        assert ran.error is not None, source
        assert says in ran.text, (source, ran.text)
        assert "Traceback" not in ran.text


# --------------------------------------------------------------------------- connecting


def test_connect_reads_the_token_from_the_env_and_saves_it_0600(
    shell: Shell, served: Served, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = served.scientist()
    monkeypatch.setenv(TOKEN_ENV, token)
    ran = shell.run(f"%rds connect {served.url} --name hospital_a --token-env {TOKEN_ENV}")
    assert ran.error is None, ran.text
    assert "connected to hospital_a" in ran.text and "datasets: patients" in ran.text
    path = config_dir / "connections.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"hospital_a": {"url": served.url, "token": token}}
    shown = [ran, shell.run("%rds nodes"), shell.run("%rds datasets"), shell.run("%rds budget")]
    for out in shown:
        assert token not in out.text + json.dumps(out.outputs, default=str)
    assert token not in repr(shell.run("%rds nodes").value)


def test_a_later_notebook_reuses_the_saved_connection(
    shell: Shell, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a kernel restart, `%rds connect --name N` needs neither URL nor token."""
    monkeypatch.setenv(TOKEN_ENV, served.scientist())
    first = shell.run(f"%rds connect {served.url} --name hospital_a --token-env {TOKEN_ENV}")
    assert first.error is None, first.text
    shell.ip.extension_manager.reload_extension("rds_kernel")
    monkeypatch.delenv(TOKEN_ENV)
    ran = shell.run("%rds connect --name hospital_a")
    assert ran.error is None, ran.text
    assert "connected to hospital_a" in ran.text


def test_connect_asks_in_a_hidden_prompt_without_echo(
    shell: Shell, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = served.scientist()
    asked: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        asked.append(prompt)
        return token

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    ran = shell.run(f"%rds connect {served.url} --name hospital_a")
    assert ran.error is None, ran.text
    assert asked == [f"Your token on {served.url} (hidden): "]
    assert token not in ran.text


def test_connect_without_any_input_says_to_use_an_env_var(
    shell: Shell, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_stdin(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", no_stdin)
    ran = shell.run(f"%rds connect {served.url} --name hospital_a")
    assert isinstance(ran.error, MagicError)
    line = assert_one_line(ran.text, "BadRequest: cannot ask for the token here")
    assert "--token-env VAR" in line


def test_a_token_on_the_command_line_is_refused_and_not_echoed(shell: Shell) -> None:
    ran = shell.run("%rds connect http://127.0.0.1:9 --name a --token s3cr3t-t0ken")
    assert ran.error is not None
    assert "never goes into the notebook" in ran.text
    assert "s3cr3t-t0ken" not in ran.text


def test_a_wrong_token_and_a_missing_env_var_are_one_line(
    shell: Shell, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "rds_wrong-token")
    ran = shell.run(f"%rds connect {served.url} --name hospital_a --token-env {TOKEN_ENV}")
    assert_one_line(ran.text, "AuthenticationError: ")
    assert "wrong-token" not in ran.text
    monkeypatch.delenv(TOKEN_ENV)
    ran = shell.run(f"%rds connect {served.url} --name hospital_a --token-env {TOKEN_ENV}")
    assert_one_line(ran.text, f"BadRequest: the environment variable {TOKEN_ENV} is not set")


def test_disconnect_closes_and_forget_deletes_the_saved_token(
    connected: tuple[Shell, str], config_dir: Path
) -> None:
    shell, _token = connected
    ran = shell.run("%rds disconnect hospital_a")
    assert ran.error is None and "disconnected hospital_a" in ran.text
    assert "hospital_a" in json.loads((config_dir / "connections.json").read_text())
    ran = shell.run("%%rds --on hospital_a\n1")
    assert_one_line(ran.text, "NotFound: no node is connected")
    assert "%rds connect --name hospital_a" in ran.text
    ran = shell.run("%rds disconnect hospital_a --forget")
    assert ran.error is None and "saved token is deleted" in ran.text
    assert json.loads((config_dir / "connections.json").read_text()) == {}
    ran = shell.run("%rds disconnect hospital_a")
    assert_one_line(ran.text, "NotFound: ")


# --------------------------------------------------------------------------- exploring


def test_nodes_datasets_budget_and_history(connected: tuple[Shell, str], served: Served) -> None:
    shell, token = connected
    nodes = shell.run("%rds nodes")
    assert nodes.error is None
    assert "hospital_a" in repr(nodes.value) and served.url in repr(nodes.value)
    assert "3 of 3" in repr(nodes.value)  # ε left of total

    datasets = shell.run("%rds datasets hospital_a")
    assert datasets.error is None
    html = datasets.value._repr_html_()  # type: ignore[attr-defined]
    assert "<summary><b>patients</b> on hospital_a" in html
    assert "public bounds / categories" in html and "[18, 95]" in html
    assert html.count("<tr>") >= 9 + 5  # nine schema rows, five mock rows

    meter = shell.run("%rds budget").value
    assert repr(meter) == "hospital_a: ε 3 left of 3"
    assert shell.run("%rds budget").value is meter  # one meter, not a pile of them

    assert shell.run("%rds history").value.empty  # type: ignore[attr-defined]
    shell.run("%%rds --on hospital_a --epsilon 0.25\npatients.agg(rds.count()).release()")
    history = shell.run("%rds history").value
    assert isinstance(history, pd.DataFrame)
    assert history[["node", "dataset", "query", "epsilon"]].values.tolist() == [
        ["hospital_a", "patients", "count", 0.25]
    ]
    assert token not in history.to_string()


def test_unknown_node_names_are_one_line(connected: tuple[Shell, str]) -> None:
    shell, _token = connected
    for source in ("%rds budget nowhere", "%%rds --on nowhere\n1", "%%rds --mock --on nowhere\n1"):
        ran = shell.run(source)
        line = assert_one_line(ran.text, "NotFound: no node named 'nowhere' is connected")
        assert "(connected: hospital_a)" in line and "%rds connect URL --name nowhere" in line


# ------------------------------------------------------------------ the same cell, three ways


def test_the_same_cell_runs_on_mock_then_on_the_node(
    connected: tuple[Shell, str], served: Served
) -> None:
    """Mock mode spends nothing; remote mode spends exactly the release's cost."""
    shell, token = connected
    node = served.node(token)
    before = node.budget.get()

    mock = shell.run("%%rds --mock --epsilon 0.5\n" + QUERY)
    assert mock.error is None, mock.text
    assert isinstance(mock.value, pd.DataFrame) and mock.value.attrs["mock"] is True
    assert list(mock.value.columns) == ["sex", "count", "mean_cvd"]
    assert "mock run: 1 release on the mock data of hospital_a would cost ε=0.5" in mock.text
    assert "Mock run on the mock data of 'patients' from hospital_a" in shell.html_of(mock.value)
    assert node.budget.get() == before

    remote = shell.run("%%rds --on hospital_a --epsilon 0.5\n" + QUERY)
    assert remote.error is None, remote.text
    df = remote.value
    assert isinstance(df, pd.DataFrame) and df.attrs["mock"] is False
    assert df.attrs["node"] == "hospital_a" and list(df.columns) == list(mock.value.columns)
    after = node.budget.get()
    spent = df.attrs["epsilon_spent"]
    assert after.epsilon_spent == pytest.approx(before.epsilon_spent + spent, abs=1e-12)
    assert f"hospital_a: 1 release charged ε={spent:.4g}; ε {after.epsilon_remaining:.4g}" in (
        remote.text
    )
    html = shell.html_of(df)
    assert "Released by hospital_a from 'patients'" in html and "±" in html
    assert shell.ns["result"] is df  # the cell's own variables stay


def test_dataset_handles_live_only_for_the_cell(connected: tuple[Shell, str]) -> None:
    shell, _token = connected
    shell.ns["patients"] = "mine"
    ran = shell.run("%%rds --mock\nseen = repr(patients)")
    assert ran.error is None, ran.text
    assert shell.ns["seen"] == "<patients: the mock data of hospital_a>"
    assert shell.ns["patients"] == "mine"
    del shell.ns["patients"]
    shell.run("%%rds --mock\nx = 1")
    assert "patients" not in shell.ns


def test_preview_spends_nothing_and_shows_cost_and_accuracy(
    connected: tuple[Shell, str], served: Served
) -> None:
    shell, token = connected
    node = served.node(token)
    before = node.budget.get()
    ran = shell.run("%%rds --on hospital_a --preview --epsilon 0.5\n" + QUERY)
    assert ran.error is None, ran.text
    assert node.budget.get() == before
    assert "Preview of 'patients' on hospital_a: would cost ε=0.5" in ran.html
    for column in ("aggregate", "mechanism", "scale", "± accuracy (95 %)", "threshold"):
        assert f"<th>{column}</th>" in ran.html
    assert "preview: 1 release on hospital_a would cost ε=0.5" in ran.text
    assert "nothing was spent" in ran.text
    assert ran.value.attrs["mock"] is True  # type: ignore[attr-defined]


def test_the_cell_epsilon_is_the_default_and_an_explicit_one_wins(
    connected: tuple[Shell, str],
) -> None:
    shell, _token = connected
    ran = shell.run(
        "%%rds --mock --epsilon 0.3\n"
        "a = patients.agg(rds.count()).release()\n"
        "b = patients.agg(rds.count()).release(epsilon=0.2)\n"
        "p = patients.agg(rds.count()).preview()"
    )
    assert ran.error is None, ran.text
    assert shell.ns["a"].attrs["epsilon_spent"] == pytest.approx(0.3)  # type: ignore[attr-defined]
    assert shell.ns["b"].attrs["epsilon_spent"] == pytest.approx(0.2)  # type: ignore[attr-defined]
    assert shell.ns["p"].epsilon == pytest.approx(0.3)  # type: ignore[attr-defined]
    ran = shell.run("%%rds --on hospital_a\npatients.agg(rds.count()).release()")
    line = assert_one_line(ran.text, "SpecError: release() needs an epsilon")
    assert "--epsilon 0.5" in line


def test_the_last_expression_is_displayed_unless_silenced(connected: tuple[Shell, str]) -> None:
    shell, _token = connected
    assert shell.run("%%rds --mock\n40 + 2").value == 42
    assert shell.run("%%rds --mock\n40 + 2;").value is None
    assert shell.run("%%rds --mock\nx = 40 + 2").value is None


# --------------------------------------------------------------------------- errors


def test_a_refused_release_is_one_line_and_costs_nothing(
    connected: tuple[Shell, str], served: Served
) -> None:
    shell, token = connected
    node = served.node(token)
    before = node.budget.get()
    ran = shell.run("%%rds --on hospital_a\npatients.agg(rds.count()).release(epsilon=5)")
    assert isinstance(ran.error, MagicError)
    line = assert_one_line(ran.text, "BudgetExceeded: ")
    assert "needs ε=5" in line and "hospital_a" in line and "ask the owner" in line
    assert node.budget.get() == before


def test_the_mock_budget_refuses_what_the_node_would(
    connected: tuple[Shell, str], served: Served
) -> None:
    """The simulated budget starts at the real one (3) and is never sent to the node."""
    shell, token = connected
    before = served.node(token).budget.get()
    ran = shell.run(
        "%%rds --mock --epsilon 1.2\n"
        "first = patients.agg(rds.count()).release()\n"
        "second = patients.agg(rds.count()).release()\n"
        "third = patients.agg(rds.count()).release()\n"
    )
    line = assert_one_line(ran.text, "BudgetExceeded: needs ε=1.2, 0.6 left on hospital_a")
    assert "simulated budget" in line
    assert "mock run: 2 releases on the mock data of hospital_a would cost ε=2.4" in ran.text
    assert "second" in shell.ns and "third" not in shell.ns
    assert served.node(token).budget.get() == before


def test_federation_is_not_supported_yet(connected: tuple[Shell, str], served: Served) -> None:
    shell, _token = connected
    shell.run(f"%rds connect {served.url} --name hospital_b --token-env {TOKEN_ENV}")
    ran = shell.run("%%rds --on hospital_a,hospital_b\n1")
    line = assert_one_line(ran.text, "BadRequest: one cell on several nodes")
    assert "not support" in line and "--on hospital_a, then --on hospital_b" in line


def test_two_nodes_with_the_same_dataset_bind_the_first(
    connected: tuple[Shell, str], served: Served
) -> None:
    shell, _token = connected
    shell.run(f"%rds connect {served.url} --name hospital_b --token-env {TOKEN_ENV}")
    ran = shell.run("%%rds --mock\nwhere = patients.node.name")
    assert shell.ns["where"] == "hospital_a"
    assert "note: patients is hospital_a's; hospital_b has a 'patients' too" in ran.text
    assert "--on hospital_b" in ran.text
    shell.run("%%rds --mock --on hospital_b\nwhere = patients.node.name")
    assert shell.ns["where"] == "hospital_b"


def test_a_bug_in_the_cell_keeps_its_traceback(connected: tuple[Shell, str]) -> None:
    shell, _token = connected
    ran = shell.run("%%rds --mock\nratio = 1 / 0")
    assert isinstance(ran.error, ZeroDivisionError)
    assert "Traceback" in ran.text and "ratio = 1 / 0" in ran.text


def test_settings_are_traitlets(connected: tuple[Shell, str]) -> None:
    shell, _token = connected
    assert shell.run("%config RdsMagics.preview_rows = 2").error is None
    html = shell.run("%rds datasets").value._repr_html_()  # type: ignore[attr-defined]
    assert "first 2 rows" in html


def test_a_rejected_saved_token_says_how_to_replace_it(
    shell: Shell, served: Served, config_dir: Path
) -> None:
    from rds_kernel.client import save_connection

    save_connection("hospital_a", served.url, "rds_revoked-token")
    ran = shell.run("%rds connect --name hospital_a")
    line = assert_one_line(ran.text, "AuthenticationError: ")
    assert "%rds disconnect hospital_a --forget, then connect again" in line
    assert "revoked-token" not in ran.text


@pytest.mark.parametrize("flags", ["--mock", "--on hospital_a --preview"])
def test_mock_and_preview_cells_never_send_code_jobs(
    connected: tuple[Shell, str], served: Served, flags: str
) -> None:
    """A job submitted from a cell that promises to spend nothing is refused, in one line."""
    shell, token = connected
    node = served.node(token)
    before = node.budget.get()
    cell = (
        f"%%rds {flags}\n"
        "def share(df):\n"
        "    return float((df['age'] > 60).mean())\n"
        "rds.submit(share, dataset=patients, epsilon=0.5, bounds=(0, 1), partitions=10)"
    )
    ran = shell.run(cell)
    assert isinstance(ran.error, MagicError)
    line = assert_one_line(ran.text, "BadRequest: ")
    assert "does not send jobs" in line
    assert node.budget.get() == before
    assert jobs(node) == []
