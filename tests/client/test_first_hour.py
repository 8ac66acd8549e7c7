"""A newcomer's first hour (issue 12): the mistakes a scientist new to rds_kernel makes first,
and what the client says then. Each test fails without its fix."""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from IPython.core.formatters import DisplayFormatter
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError
from urllib3.exceptions import ProtocolError as Urllib3ProtocolError

import rds_kernel as rds
from rds_kernel.client._builder import PrivateRowsAttributeError, PrivateRowsError
from rds_kernel.client._html import number
from rds_kernel.client.connections import load_connections, save_connection
from rds_kernel.dp import prepare
from rds_kernel.mock import generate_mock, mock_to_parquet_bytes
from rds_kernel.schema import Schema
from rds_kernel.spec import validate
from tests.client.fakes import (
    BUDGET,
    SCHEMA,
    TOKEN,
    URL,
    FakeNode,
    Reply,
    release_answer,
    session_with,
)

MOCK_PATH = "/v1/datasets/patients/mock"

# --------------------------------------------------------------------------- 1. saved connections


def test_a_missing_saved_connection_says_which_exist_and_how_to_add_one(tmp_path: Path) -> None:
    path = tmp_path / "connections.json"
    save_connection("hospital_b", "http://127.0.0.1:8766", "tok-b", path=path)
    saved = load_connections(path)
    with pytest.raises(KeyError) as info:
        saved["hospital_a"]
    message = str(info.value)
    assert message.startswith(
        f"no saved connection 'hospital_a'; saved: hospital_b (in {path}). Add one with "
    )
    assert "%rds connect URL --name hospital_a" in message
    assert "rds_kernel.client.connections.save_connection('hospital_a', URL, token)" in message
    assert "tok-b" not in message
    # still a dict: `in` and `get` do not raise
    assert "hospital_a" not in saved and saved.get("hospital_a") is None
    assert saved["hospital_b"].url == "http://127.0.0.1:8766"


def test_with_nothing_saved_the_error_says_so(tmp_path: Path) -> None:
    path = tmp_path / "none.json"
    with pytest.raises(LookupError, match=r"no saved connection 'x'; none is saved \(in "):
        load_connections(path)["x"]


# --------------------------------------------------------------------------- 2. tokens


def _auth(fake: FakeNode) -> str:
    return str(fake.seen[-1].headers["Authorization"])


@pytest.mark.parametrize("token", [TOKEN + "\n", f"  {TOKEN}\r\n", f"\t{TOKEN} "])
def test_a_token_read_from_a_file_works_without_its_newline(fake: FakeNode, token: str) -> None:
    """requests refuses a header with a newline: that was reported as an unreachable node."""
    node = rds.connect(URL, token=token, session=session_with(fake))
    assert node.info["user"]["name"] == "alice"
    assert _auth(fake) == f"Bearer {TOKEN}"


def test_a_saved_token_with_a_newline_works(tmp_path: Path, fake: FakeNode) -> None:
    path = tmp_path / "connections.json"
    path.write_text(json.dumps({"hospital_a": {"url": URL, "token": TOKEN + "\n"}}))
    connection = load_connections(path)["hospital_a"]
    assert connection.token == TOKEN
    node = rds.Node(connection.url, connection.token, session=session_with(fake))
    assert node.name == "hospital_a" and _auth(fake) == f"Bearer {TOKEN}"
    save_connection("hospital_b", URL, " tok-b\n", path=path)
    assert json.loads(path.read_text())["hospital_b"]["token"] == "tok-b"


@pytest.mark.parametrize(
    "token", ["rds_abc def", "rds_abc\ndef", "rds_abc\x00def", "rds_abc\u200bdef", "rds_a\tb"]
)
def test_a_token_with_whitespace_inside_says_copy_it_again(fake: FakeNode, token: str) -> None:
    with pytest.raises(rds.BadRequest) as info:
        rds.connect(URL, token=token, session=session_with(fake))
    assert info.value.message.startswith(
        "the token contains whitespace or control characters: copy it again"
    )
    assert "abc" not in info.value.message
    assert fake.seen == []  # refused before anything was sent


def test_a_token_with_other_characters_is_refused_clearly(fake: FakeNode) -> None:
    """A typographic character pasted into a token used to escape as a UnicodeEncodeError."""
    with pytest.raises(rds.BadRequest, match="other than ASCII letters, digits and punctuation"):
        rds.connect(URL, token="rds_abc’def", session=session_with(fake))


# --------------------------------------------------------------------------- 3. refused releases


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spec() -> rds.QuerySpec:
    return rds.Query("patients").agg(rds.count()).spec(0.5)


def _refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(MaxRetryError(None, URL, reason))  # type: ignore[arg-type]


def _no_such_host() -> requests.exceptions.ConnectionError:
    reason = NameResolutionError("node.test", None, socket.gaierror("unknown"))  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(MaxRetryError(None, URL, reason))  # type: ignore[arg-type]


def _reset() -> requests.exceptions.ConnectionError:
    aborted = Urllib3ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    return requests.exceptions.ConnectionError(aborted)


def test_a_release_to_a_node_that_refused_the_connection_was_not_charged(
    node: rds.Node,
) -> None:
    """A real refused TCP connection: nothing was sent, so the release cannot be charged."""
    patients = node.dataset("patients")
    node._transport.url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(rds.NodeUnreachable) as info:
        patients.release(_spec(), request_id="r-1")
    message = info.value.message
    assert "Nothing reached the node, so nothing was charged" in message
    assert "may have been charged" not in message
    assert info.value.detail["sent"] is False and info.value.detail["request_id"] == "r-1"


@pytest.mark.parametrize("failure", [_refused, _no_such_host], ids=["refused", "no_such_host"])
def test_a_release_that_never_connected_was_not_charged(
    node: rds.Node, fake: FakeNode, failure: Any
) -> None:
    fake.on("POST", "/v1/queries", failure())
    with pytest.raises(rds.NodeUnreachable, match="nothing was charged"):
        node.dataset("patients").release(_spec())


@pytest.mark.parametrize(
    ("answers", "kind"),
    [
        ([requests.exceptions.ReadTimeout("read timed out")], rds.NodeTimeout),
        ([_reset()], rds.NodeUnreachable),
        ([Reply(502, content=b"<html>Bad Gateway</html>")], rds.NodeUnreachable),
        # the first try may have reached the node; the last one was refused
        ([requests.exceptions.ReadTimeout("read timed out"), _refused()], rds.NodeUnreachable),
    ],
    ids=["timeout", "reset_after_sending", "gateway_502", "timeout_then_refused"],
)
def test_a_release_that_may_have_reached_the_node_may_have_been_charged(
    node: rds.Node, fake: FakeNode, answers: list[Any], kind: type[rds.NodeUnavailable]
) -> None:
    fake.on("POST", "/v1/queries", *answers)
    with pytest.raises(kind) as info:
        node.dataset("patients").release(_spec(), request_id="r-2")
    assert "The release may have been charged; run it again with request_id='r-2'" in str(
        info.value
    )


def test_a_release_refused_as_busy_after_a_timeout_may_have_been_charged(
    node: rds.Node, fake: FakeNode
) -> None:
    """The first try timed out while the node worked on it; the retries then found it busy
    with that very release (429): it may well be charged, and its request_id gets it."""
    busy = rds.TooManyRequests("too many of your requests are in flight").envelope()
    fake.on(
        "POST", "/v1/queries", requests.exceptions.ReadTimeout("read timed out"), Reply(429, busy)
    )
    with pytest.raises(rds.TooManyRequests, match="may have been charged"):
        node.dataset("patients").release(_spec(), request_id="r-3")


def test_a_job_to_a_node_that_refused_the_connection_was_not_stored(
    node: rds.Node, fake: FakeNode
) -> None:
    fake.on("POST", "/v1/jobs", _refused())

    def mean_age(df: pd.DataFrame) -> float:
        return float(df["age"].mean())

    with pytest.raises(rds.NodeUnreachable, match="Nothing reached the node, so no job was stored"):
        node.jobs.submit(mean_age, dataset="patients", message="please")


# --------------------------------------------------------------------------- 4. ± of means


def _node_preview(schema: Schema, spec: rds.QuerySpec) -> dict[str, Any]:
    """The node's preview answer for ``spec``: its summary comes from the same DP layer."""
    prepared = prepare(validate(spec, schema), schema)
    return {
        "dataset": "patients",
        "requested": {"epsilon": spec.epsilon, "delta": spec.delta},
        "cost": {"epsilon": prepared.cost[0], "delta": prepared.cost[1]},
        "summary": prepared.summary,
        "budget": BUDGET,
    }


def _with_mock(fake: FakeNode, rows: int) -> None:
    mock = generate_mock(Schema.from_dict(SCHEMA), n=rows, seed=1)
    fake.on("GET", MOCK_PATH, Reply(200, content=mock_to_parquet_bytes(mock)))


def test_a_means_preview_shows_its_accuracy_at_the_mocks_row_count(
    node: rds.Node, fake: FakeNode
) -> None:
    q = node.dataset("patients").agg(rds.count(), rds.mean("age"), rds.variance("age"))
    spec = q.spec(0.5)
    answer = _node_preview(Schema.from_dict(SCHEMA), spec)
    assert [r["accuracy"] is None for r in answer["summary"]] == [False, True, True]
    fake.on("POST", "/v1/queries/preview", Reply(200, answer))
    _with_mock(fake, 400)

    preview = q.preview(epsilon=0.5)

    # the ± the node itself gives when the row count is public, at n = 400
    public = Schema.from_dict({**SCHEMA, "public_row_count": 400})
    expected = prepare(validate(spec, public), public).summary
    count, mean, variance = preview.rows
    assert count["accuracy"] == answer["summary"][0]["accuracy"] and "accuracy_n" not in count
    assert mean["accuracy"] == pytest.approx(expected[1]["accuracy"])
    assert variance["accuracy"] == pytest.approx(expected[2]["accuracy"])
    assert mean["accuracy_n"] == variance["accuracy_n"] == 400
    assert preview.accuracy_note == "± at n = 400 (the mock's size; the private n is not public)"
    assert preview.summary["accuracy_n"].tolist()[1:] == [400, 400]

    html = preview._repr_html_()
    assert "—" not in html
    assert f"<td>{number(mean['accuracy'])} *</td>" in html
    assert "* ± at n = 400 (the mock's size; the private n is not public)" in html
    assert "mean_age: noisy sum / noisy row count n" in html  # the formula stays, as a footnote


def test_a_means_preview_uses_the_public_row_count_when_the_schema_has_one(
    fake: FakeNode,
) -> None:
    schema = {**SCHEMA, "public_row_count": 5000}
    fake.on("GET", "/v1/datasets/patients", Reply(body={"name": "patients", "schema": schema}))
    node = rds.connect(URL, token=TOKEN, session=session_with(fake))
    q = node.dataset("patients").filter(rds.col("age") >= 50).agg(rds.mean("cvd"))
    answer = _node_preview(Schema.from_dict(schema), q.spec(0.5))
    assert answer["summary"][0]["accuracy"] is None  # filtered: the node cannot know n
    fake.on("POST", "/v1/queries/preview", Reply(200, answer))

    preview = q.preview(epsilon=0.5)

    assert preview.rows[0]["accuracy_n"] == 5000
    assert preview.accuracy_note.startswith("± at n = 5000 (the dataset's public row count)")
    assert "a filter or a group keeps fewer rows" in preview.accuracy_note
    assert fake.calls("GET", MOCK_PATH) == []  # no mock download needed


def test_a_preview_from_a_node_with_other_noise_is_left_as_the_node_sent_it(
    node: rds.Node, fake: FakeNode
) -> None:
    """The ± is computed here only if this client's calibration is the node's."""
    q = node.dataset("patients").agg(rds.mean("age"))
    answer = _node_preview(Schema.from_dict(SCHEMA), q.spec(0.5))
    answer["summary"][0]["scale"] *= 2
    fake.on("POST", "/v1/queries/preview", Reply(200, answer))
    _with_mock(fake, 400)
    preview = q.preview(epsilon=0.5)
    assert preview.rows[0]["accuracy"] is None and preview.accuracy_note == ""


# --------------------------------------------------------------------------- 5. not a DataFrame


@pytest.fixture
def patients(node: rds.Node) -> rds.RemoteDataset:
    return node.dataset("patients")


HINT = (
    "rows are private: use `patients.mock` or `patients.schema` "
    "(or build a query: patients.agg(...))"
)


@pytest.mark.parametrize(
    "use",
    [
        lambda p: p["age"],
        lambda p: p[["age", "sex"]],
        lambda p: len(p),
        lambda p: list(p),
        lambda p: [row for row in p],
    ],
    ids=["column", "columns", "len", "list", "iterate"],
)
def test_a_dataset_used_like_a_dataframe_says_its_rows_are_private(
    patients: rds.RemoteDataset, use: Any
) -> None:
    with pytest.raises(TypeError) as info:
        use(patients)
    assert isinstance(info.value, PrivateRowsError)
    assert HINT in str(info.value)


@pytest.mark.parametrize("attribute", ["head", "tail", "shape", "iloc", "loc", "describe"])
def test_dataframe_attributes_say_so_too_and_hasattr_is_false(
    patients: rds.RemoteDataset, attribute: str
) -> None:
    with pytest.raises(AttributeError) as info:
        getattr(patients, attribute)
    assert isinstance(info.value, PrivateRowsAttributeError)
    assert str(info.value) == f"patients.{attribute}: {HINT}"
    assert not hasattr(patients, attribute)


def test_the_handle_keeps_its_own_attributes(patients: rds.RemoteDataset) -> None:
    assert patients.columns == ["age", "sex", "cvd"]  # public: the schema's column names
    assert patients.name == "patients" and patients.schema.names == patients.columns
    assert bool(patients)  # `if patients:` does not call len()
    assert isinstance(patients.agg(rds.count()), rds.Query)
    with pytest.raises(AttributeError, match="has no attribute 'releas'") as info:
        patients.releas  # noqa: B018 - a typo is a plain AttributeError
    assert not isinstance(info.value, PrivateRowsError)
    assert not hasattr(patients, "_repr_html_") and not hasattr(patients, "__array__")
    assert pickle.loads(pickle.dumps(PrivateRowsError("x"))).args == ("x",)


def test_a_local_dataset_says_the_same_in_its_own_words() -> None:
    staff = rds.LocalDataset(
        pd.DataFrame({"cvd": [0, 1, 1]}), {"columns": {"cvd": {"type": "int", "bounds": [0, 1]}}}
    )
    with pytest.raises(PrivateRowsError, match="a LocalDataset answers as a node would"):
        staff["cvd"]
    with pytest.raises(PrivateRowsError, match=r"use `local.schema` \(or build a query"):
        len(staff)
    assert not hasattr(staff, "head") and staff.columns == ["cvd"]


# --------------------------------------------------------------------------- 6. answers show ±


def _html(value: object) -> str:
    """What a notebook without ``%load_ext rds_kernel`` shows for ``value``."""
    data, _metadata = DisplayFormatter().format(value)
    return str(data.get("text/html", ""))


def test_a_release_shows_its_accuracy_without_the_extension(node: rds.Node, fake: FakeNode) -> None:
    fake.on("POST", "/v1/queries", Reply(200, release_answer("rid-1")))
    df = node.dataset("patients").group_by("sex").agg(rds.count()).release(epsilon=0.5)
    assert isinstance(df, pd.DataFrame)
    assert df.attrs["epsilon_spent"] == 0.5 and df.attrs["node"] == "hospital_a"
    assert df.attrs["accuracy"] == {"count": 12.0, "mean_cvd": 0.05}
    html = _html(df)
    assert "Released by hospital_a from 'patients': ε=0.5 spent" in html
    assert "<td>1203 ± 12</td>" in html and "<td>0.210 ± 0.050</td>" in html
    # what is computed from it is a plain DataFrame: the answer's ± says nothing about it
    derived = df[["count"]] * 2
    assert type(derived) is pd.DataFrame and type(df.copy()) is pd.DataFrame
    assert "Released by" not in _html(pd.DataFrame({"a": [1]}))
    assert pickle.loads(pickle.dumps(df)).equals(df)


def test_a_mock_run_shows_its_accuracy_too(node: rds.Node, fake: FakeNode) -> None:
    _with_mock(fake, 300)
    df = node.dataset("patients").agg(rds.count()).run_on_mock(epsilon=1.0)
    assert "Mock run on the mock data of 'patients' from hospital_a" in _html(df)


# --------------------------------------------------------------------------- 7. local previews


def test_a_local_preview_is_a_preview_card_like_a_nodes() -> None:
    staff = rds.LocalDataset(
        pd.DataFrame({"age": list(range(20, 80))}),
        {"columns": {"age": {"type": "int", "bounds": [18, 90]}}},
        name="staff",
    )
    preview = staff.agg(rds.count(), rds.mean("age")).preview(epsilon=1.0)
    assert isinstance(preview, rds.Preview)
    assert (preview.epsilon, preview.delta, preview.budget) == (1.0, 0.0, None)
    html = _html(preview)
    assert html.startswith("<div><p><b>Preview of 'staff' (local data): a release would cost")
    assert "<th>± accuracy (95 %)</th>" in html
    assert "None" not in html and "None" not in repr(preview)
    assert preview.rows[1]["accuracy_n"] == 60
    assert "* ± at n = 60 (the size of the local data)" in html
    assert "Integer Laplace" in repr(preview)
