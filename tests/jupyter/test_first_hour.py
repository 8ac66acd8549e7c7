"""A newcomer's first hour (issue 12), in a notebook against a real node: previews of means
show a ±, answers of the Python API show the magic's card, saved tokens with a newline work,
and a dataset used like a DataFrame says its rows are private."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rds_kernel.client._builder import PrivateRowsAttributeError
from rds_kernel.jupyter.display import result_html
from tests.jupyter.shell import Served, Shell

pytestmark = pytest.mark.server

MEANS = 'patients.agg(rds.count(), rds.mean("age"), rds.variance("age"))'
AT_MOCK = "± at n = 200 (the mock's size; the private n is not public)"  # build_node: 200 rows


def _accuracies(html: str) -> list[str]:
    """The ± column of a preview card."""
    rows = re.findall(r"<tr>(.*?)</tr>", html.split("<tbody>", 1)[1])
    return [re.findall(r"<td>(.*?)</td>", row)[3] for row in rows]


@pytest.mark.parametrize("flags", ["--on hospital_a", "--on hospital_a --preview", "--mock"])
def test_a_preview_of_means_shows_a_number_at_the_mocks_size(
    connected: tuple[Shell, str], flags: str
) -> None:
    """The node (or the mock run) gives no ± for a mean: n is private. The card shows it at
    the mock's size, marked, with the node's formula kept as a footnote."""
    shell, _token = connected
    if "--preview" in flags:  # a release in a --preview cell shows its preview
        ran = shell.run(f"%%rds {flags}\n{MEANS}.release(epsilon=0.5)")
        html = ran.html
    else:
        ran = shell.run(f"%%rds {flags}\n{MEANS}.preview(epsilon=0.5)")
        html = shell.html_of(ran.value)
    assert ran.error is None, ran.text
    count, mean, variance = _accuracies(html)
    assert re.fullmatch(r"[\d.]+", count)
    assert re.fullmatch(r"[\d.]+ \*", mean) and re.fullmatch(r"[\d.]+ \*", variance)
    assert f"* {AT_MOCK}" in html
    assert "mean_age: noisy sum / noisy row count n" in html


def test_a_release_through_the_python_api_shows_the_magics_card(
    shell: Shell, served: Served
) -> None:
    node = served.node(served.scientist())
    shell.ns["node"] = node
    ran = shell.run(
        "import rds_kernel as rds\n"
        'df = node.dataset("patients").agg(rds.count(), rds.mean("age")).release(epsilon=0.2)\n'
        "df"
    )
    assert ran.error is None, ran.text
    df = shell.ns["df"]
    html = shell.html_of(df)
    assert "Released by hospital_a from 'patients'" in html and " ± " in html
    # the extension's formatter and the answer's own display are one card
    shell.ip.extension_manager.unload_extension("rds_kernel")
    try:
        assert shell.html_of(df) == result_html(df)  # type: ignore[arg-type]
    finally:
        shell.ip.extension_manager.load_extension("rds_kernel")
    assert shell.html_of(df) == result_html(df)  # type: ignore[arg-type]


def test_a_saved_token_with_a_trailing_newline_connects(
    shell: Shell, served: Served, config_dir: Path
) -> None:
    """A token pasted into connections.json with its newline used to be 'could not reach'."""
    config_dir.mkdir(parents=True, exist_ok=True)
    saved = {"hospital_a": {"url": served.url, "token": served.scientist() + "\n"}}
    (config_dir / "connections.json").write_text(json.dumps(saved))
    ran = shell.run("%rds connect --name hospital_a")
    assert ran.error is None, ran.text
    assert "connected to hospital_a" in ran.text


def test_a_dataset_used_like_a_dataframe_in_a_cell_says_its_rows_are_private(
    connected: tuple[Shell, str],
) -> None:
    shell, _token = connected
    ran = shell.run("%%rds --mock\npatients.head()")
    assert isinstance(ran.error, PrivateRowsAttributeError)
    assert "rows are private: use `patients.mock` or `patients.schema`" in str(ran.error)
    ran = shell.run("%%rds --mock\npatients.columns")
    assert ran.error is None and "age" in ran.value  # type: ignore[operator]
