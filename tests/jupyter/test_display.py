"""How answers and previews look in a notebook, without a node (the client's own fakes)."""

from __future__ import annotations

import pandas as pd
import pytest

import rds_kernel as rds
from rds_kernel import wire
from rds_kernel.client._results import release_frame
from rds_kernel.jupyter.display import (
    describe_spec,
    number,
    preview_table,
    result_html,
)
from tests.client.fakes import PREVIEW, release_answer
from tests.jupyter.shell import Shell


@pytest.mark.parametrize(
    ("value", "accuracy", "shown"),
    [
        (1203, 24.45, "1203 ± 24"),
        (1203, 6.43, "1203 ± 6.4"),
        (57.558935, 1.3447, "57.6 ± 1.3"),
        (0.2134, 0.05, "0.213 ± 0.050"),
        (0.2134, None, "0.2134"),
        (12, None, "12"),
        (None, 1.0, "—"),
        (float("nan"), 1.0, "—"),
        ("F", None, "F"),
    ],
)
def test_numbers_are_shown_to_their_accuracy(
    value: object, accuracy: float | None, shown: str
) -> None:
    assert number(value, accuracy) == shown


def released() -> pd.DataFrame:
    return release_frame(wire.ReleaseAnswer.model_validate(release_answer("r-1")), "hospital_a")


def test_a_release_shows_values_with_accuracy_cost_and_node() -> None:
    html = result_html(released())
    assert html is not None
    assert "Released by hospital_a from 'patients': ε=0.5 spent" in html
    assert "<td>1203 ± 12</td>" in html and "<td>0.210 ± 0.050</td>" in html
    assert "<td>F</td>" in html
    assert "95 % interval" in html


def test_a_replayed_release_and_a_mock_run_say_so() -> None:
    replayed = release_frame(
        wire.ReleaseAnswer.model_validate(release_answer("r-2", replayed=True)), "hospital_a"
    )
    assert "not charged again" in str(result_html(replayed))
    mock = released()
    mock.attrs["mock"] = True
    assert "Mock run on the mock data of 'patients' from hospital_a — not a release" in str(
        result_html(mock)
    )


def test_any_other_dataframe_keeps_pandas_html() -> None:
    plain = pd.DataFrame({"a": [1, 2]})
    assert result_html(plain) == plain._repr_html_()


def test_a_release_is_still_a_dataframe_with_attrs(shell: Shell) -> None:
    """The answer is a pandas DataFrame for code, attrs intact, and shows its ± as a card."""
    df = released()
    assert isinstance(df, pd.DataFrame)
    assert df.attrs["epsilon_spent"] == 0.5
    assert "Released by hospital_a" in shell.html_of(df)
    assert "Released by" not in shell.html_of(pd.DataFrame({"a": [1]}))


def with_result_attrs() -> pd.DataFrame:
    """A plain DataFrame carrying an answer's attrs (as pandas passes them on to derived
    frames): only the extension's formatter shows it as an answer."""
    df = released()
    plain = pd.DataFrame(df.to_dict("list"))
    plain.attrs.update(df.attrs)
    return plain


def test_unloading_the_extension_restores_the_default_displays(shell: Shell) -> None:
    shell.ip.extension_manager.unload_extension("rds_kernel")
    try:
        assert "Released by" not in shell.html_of(with_result_attrs())
        assert "Released by" in shell.html_of(released())  # the answer's own display
    finally:
        shell.ip.extension_manager.load_extension("rds_kernel")
    assert "Released by" in shell.html_of(with_result_attrs())


def test_a_preview_is_a_table_of_mechanism_scale_accuracy_threshold(shell: Shell) -> None:
    preview = rds.Preview.from_wire(wire.Preview.model_validate(PREVIEW), "hospital_a")
    table = preview_table(preview)
    assert list(table.columns) == [
        "aggregate",
        "mechanism",
        "scale",
        "± accuracy (95 %)",
        "threshold",
    ]
    assert [list(r) for r in table.rows] == [
        ["count", "geometric", "4", "12", ""],
        ["mean_cvd", "geometric", "8", "0.05", ""],
    ]
    assert "would cost ε=0.5" in table.title and "Nothing was spent" in table.title
    html = shell.html_of(preview)
    assert "<th>mechanism</th>" in html and "Preview of 'patients' on hospital_a" in html


def test_history_describes_each_query_briefly() -> None:
    spec = (
        rds.Query("patients")
        .filter(rds.col("age") >= 50)
        .group_by("sex")
        .agg(rds.count(), rds.mean("cvd", bounds=(0, 1)))
        .spec(epsilon=0.5)
        .to_dict()
    )
    assert describe_spec(spec) == "count, mean_cvd by sex (filtered)"
    assert describe_spec(None) == ""
