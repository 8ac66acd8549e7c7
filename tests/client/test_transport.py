"""HTTP behaviour of the client: errors, timeouts, release retries, and secrecy of the token."""

from __future__ import annotations

import pytest
import requests

import rds_kernel as rds
from rds_kernel import errors
from tests.client.fakes import BUDGET, TOKEN, URL, FakeNode, Reply, release_answer, session_with

ERROR_CLASSES = [
    c
    for c in (getattr(errors, n) for n in errors.__all__)
    if isinstance(c, type) and issubclass(c, errors.RdsError) and c is not errors.RdsError
]


def _spec(epsilon: float = 0.5) -> rds.QuerySpec:
    return rds.Query("patients").group_by("sex").agg(rds.count()).spec(epsilon)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_envelope_becomes_the_same_class(
    node: rds.Node, fake: FakeNode, cls: type[errors.RdsError]
) -> None:
    """`except rds.BudgetExceeded` works over HTTP: the envelope is rebuilt into its class."""
    fake.on(
        "GET",
        "/v1/budget",
        Reply(cls.status, cls("what happened; what to do", {"k": 1}).envelope()),
    )
    with pytest.raises(cls) as info:
        node.budget.get()
    assert type(info.value) is cls
    assert info.value.message == "what happened; what to do"
    assert info.value.detail == {"k": 1}


def test_budget_exceeded_on_release_is_not_retried(node: rds.Node, fake: FakeNode) -> None:
    body = errors.BudgetExceeded("needs ε=0.5; 0.1 left").envelope()
    fake.on("POST", "/v1/queries", Reply(403, body))
    with pytest.raises(rds.BudgetExceeded, match=r"0\.1 left"):
        node.dataset("patients").release(_spec())
    assert len(fake.calls("POST", "/v1/queries")) == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (502, rds.NodeUnreachable),
        (503, rds.NodeUnreachable),
        (504, rds.NodeTimeout),
        (500, rds.ProtocolError),
        (404, rds.ProtocolError),
    ],
)
def test_answer_without_an_envelope_is_node_unavailable(
    node: rds.Node, fake: FakeNode, status: int, kind: type[rds.NodeUnavailable]
) -> None:
    """A proxy's HTML error page is not the node speaking: a NodeUnavailable naming the URL,
    of the kind the status says (a gateway that could not reach the node, or gave up waiting;
    anything else is not the node's protocol)."""
    fake.on("GET", "/v1/budget", Reply(status, content=b"<html>Bad Gateway</html>"))
    with pytest.raises(rds.NodeUnavailable, match=f"HTTP {status}") as info:
        node.budget.get()
    assert type(info.value) is kind
    assert "node.test:8765" in info.value.message


def test_success_that_is_not_json_is_a_protocol_error(node: rds.Node, fake: FakeNode) -> None:
    fake.on("GET", "/v1/budget", Reply(200, content=b"<html>welcome to nginx</html>"))
    with pytest.raises(rds.ProtocolError, match="not JSON"):
        node.budget.get()


def test_answer_missing_a_field_is_a_protocol_error(node: rds.Node, fake: FakeNode) -> None:
    """Every answer is checked against its wire model: what is missing is named."""
    fake.on("GET", "/v1/budget", Reply(200, {"user": "alice"}))
    with pytest.raises(rds.ProtocolError, match="epsilon_total: Field required") as info:
        node.budget.get()
    assert isinstance(info.value, rds.NodeUnavailable)
    assert info.value.code == "protocol_error"


def test_answer_with_a_field_of_the_wrong_type_is_a_protocol_error(
    node: rds.Node, fake: FakeNode
) -> None:
    fake.on("GET", "/v1/budget", Reply(200, {**BUDGET, "per_dataset": {"patients": "lots"}}))
    with pytest.raises(rds.ProtocolError, match=r"per_dataset\.patients"):
        node.budget.get()


def test_an_error_body_that_is_not_an_envelope_is_a_protocol_error(
    node: rds.Node, fake: FakeNode
) -> None:
    fake.on("GET", "/v1/budget", Reply(403, {"error": {"message": "no code"}}))
    with pytest.raises(rds.ProtocolError, match="HTTP 403 without an rds error body"):
        node.budget.get()


def test_unreachable_node_says_what_to_check() -> None:
    """A refused connection names the URL and what to check, never the token."""
    with pytest.raises(rds.NodeUnreachable) as info:
        rds.connect("http://127.0.0.1:9", token=TOKEN, timeout=2)
    message = info.value.message
    assert "http://127.0.0.1:9" in message
    assert "`rds --dir DIR node serve`" in message
    assert TOKEN not in message
    assert info.value.code == "node_unreachable"


def test_read_timeout_is_a_node_timeout(fake: FakeNode) -> None:
    fake.on("GET", "/v1/node", requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(rds.NodeTimeout, match=r"no answer within 60 s") as info:
        rds.connect(URL, token=TOKEN, session=session_with(fake))
    assert info.value.code == "node_timeout"


def test_every_call_has_a_timeout(node: rds.Node, fake: FakeNode) -> None:
    node.budget.get()
    node.dataset("patients")
    assert fake.timeouts and all(t == (5.0, 60.0) for t in fake.timeouts)


def test_timeout_is_configurable(fake: FakeNode) -> None:
    rds.connect(URL, token=TOKEN, session=session_with(fake), timeout=(1, 300))
    assert fake.timeouts == [(1, 300)]


def test_release_retries_with_the_same_request_id(
    node: rds.Node, fake: FakeNode, sleeps: list[float]
) -> None:
    """A lost answer is retried with the request_id chosen before the first try, so the node
    (idempotent by request_id) charges once; the client backs off between tries."""
    fake.on(
        "POST",
        "/v1/queries",
        requests.exceptions.ConnectionError("connection reset by peer"),
        requests.exceptions.ReadTimeout("read timed out"),
        Reply(502, content=b"Bad Gateway"),
        Reply(200, release_answer("placeholder")),
    )
    df = node.dataset("patients").release(_spec())
    sent = fake.bodies("POST", "/v1/queries")
    assert len(sent) == 4
    ids = {b["request_id"] for b in sent}
    assert len(ids) == 1
    assert len(ids.pop()) == 32  # uuid4 hex
    assert all(b["spec"] == _spec().to_dict() for b in sent)
    assert sleeps == [0.5, 1.0, 2.0]
    assert df.attrs["epsilon_spent"] == 0.5


def test_release_gives_up_after_three_retries_and_names_the_request_id(
    node: rds.Node, fake: FakeNode
) -> None:
    fake.on("POST", "/v1/queries", Reply(503, content=b"Service Unavailable"))
    with pytest.raises(rds.NodeUnavailable) as info:
        node.dataset("patients").release(_spec(), request_id="my-id-1")
    assert len(fake.calls("POST", "/v1/queries")) == 4
    assert "request_id='my-id-1'" in info.value.message
    assert info.value.detail["request_id"] == "my-id-1"
    assert {b["request_id"] for b in fake.bodies("POST", "/v1/queries")} == {"my-id-1"}


def test_a_429_release_is_retried_after_retry_after(
    node: rds.Node, fake: FakeNode, sleeps: list[float]
) -> None:
    """Too many of your requests in flight: the node ran nothing, so the release is tried
    again (same request_id) after the node's Retry-After; a preview gets the error."""
    busy = errors.TooManyRequests("2 in flight", {"retry_after": 3})
    fake.on(
        "POST",
        "/v1/queries",
        Reply(429, busy.envelope(), headers={"Retry-After": "3"}),
        Reply(200, release_answer("placeholder")),
    )
    node.dataset("patients").release(_spec())
    assert sleeps == [3.0]
    assert len({b["request_id"] for b in fake.bodies("POST", "/v1/queries")}) == 1
    fake.on("POST", "/v1/queries/preview", Reply(429, busy.envelope()))
    with pytest.raises(rds.TooManyRequests):
        node.dataset("patients").preview(_spec())


@pytest.mark.parametrize(
    "answer",
    [
        Reply(200, content=b"<html>welcome to nginx</html>"),
        Reply(200, {"request_id": "x"}),
        Reply(500, content=b"Internal Server Error"),
    ],
    ids=["not-json", "missing-fields", "500-without-envelope"],
)
def test_a_release_is_not_retried_on_a_protocol_error(
    node: rds.Node, fake: FakeNode, answer: Reply
) -> None:
    """Asking again would get the same answer: a ProtocolError is raised at once, and still
    names the request_id (the node may have charged it)."""
    fake.on("POST", "/v1/queries", answer)
    with pytest.raises(rds.ProtocolError) as info:
        node.dataset("patients").release(_spec(), request_id="rid-7")
    assert len(fake.calls("POST", "/v1/queries")) == 1
    assert info.value.detail["request_id"] == "rid-7"


def test_a_release_keeps_the_kind_of_failure_after_its_retries(
    node: rds.Node, fake: FakeNode
) -> None:
    fake.on("POST", "/v1/queries", requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(rds.NodeTimeout, match="request_id='rid-8'"):
        node.dataset("patients").release(_spec(), request_id="rid-8")
    assert len(fake.calls("POST", "/v1/queries")) == 4


def test_release_does_not_retry_a_node_error(node: rds.Node, fake: FakeNode) -> None:
    """Only transient failures are retried; an envelope (even a 500) is the node's answer."""
    fake.on("POST", "/v1/queries", Reply(500, errors.InternalError("bug").envelope()))
    with pytest.raises(rds.InternalError):
        node.dataset("patients").release(_spec())
    assert len(fake.calls("POST", "/v1/queries")) == 1


def test_preview_and_reads_are_not_retried(node: rds.Node, fake: FakeNode) -> None:
    fake.on("POST", "/v1/queries/preview", requests.exceptions.ConnectionError("reset"))
    with pytest.raises(rds.NodeUnavailable):
        node.dataset("patients").preview(_spec())
    assert len(fake.calls("POST", "/v1/queries/preview")) == 1


def test_each_release_gets_a_fresh_request_id(node: rds.Node, fake: FakeNode) -> None:
    fake.on("POST", "/v1/queries", Reply(200, release_answer("x")))
    patients = node.dataset("patients")
    patients.release(_spec())
    patients.release(_spec())
    first, second = fake.bodies("POST", "/v1/queries")
    assert first["request_id"] != second["request_id"]


def test_token_travels_only_in_the_authorization_header(node: rds.Node, fake: FakeNode) -> None:
    node.budget.get()
    for request in fake.seen:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in (request.url or "")


def test_token_never_appears_in_reprs_or_errors(node: rds.Node, fake: FakeNode) -> None:
    patients = node.dataset("patients")
    query = patients.group_by("sex").agg(rds.count())
    texts = [repr(node), str(node), repr(node._transport), repr(patients), repr(query)]
    fake.on("GET", "/v1/budget", requests.exceptions.ConnectionError(f"boom {URL}"))
    with pytest.raises(rds.NodeUnavailable) as info:
        node.budget.get()
    texts += [str(info.value), repr(info.value), repr(info.value.detail)]
    assert all(TOKEN not in t for t in texts)
    assert repr(node) == "<Node hospital_a at http://node.test:8765 as alice (scientist)>"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("node.test:8765", "not a node URL"),
        ("ftp://node.test", "not a node URL"),
        ("http://node.test:port", "not a node URL"),
        ("http://alice:secret@node.test", "not in the URL"),
    ],
)
def test_bad_urls_are_refused_before_any_request(url: str, match: str) -> None:
    with pytest.raises(rds.BadRequest, match=match) as info:
        rds.connect(url, token=TOKEN)
    assert "secret" not in info.value.message


def test_empty_token_is_refused() -> None:
    with pytest.raises(rds.BadRequest, match="rds user add"):
        rds.connect(URL, token="")


def test_dataset_names_are_escaped_into_the_path(node: rds.Node, fake: FakeNode) -> None:
    """A dataset name cannot reach another route (no `../admin`)."""
    with pytest.raises(rds.NotFound):
        node.dataset("../admin/users")
    assert fake.seen[-1].path_url == "/v1/datasets/..%2Fadmin%2Fusers"
