"""The exception tree: stable codes, statuses, and a lossless envelope round trip."""

from __future__ import annotations

import pytest

from rds_kernel import errors
from rds_kernel.errors import BudgetExceeded, NodeUnavailable, RdsError, from_envelope

ALL = [
    getattr(errors, n)
    for n in errors.__all__
    if isinstance(getattr(errors, n), type) and getattr(errors, n) is not RdsError
]


@pytest.mark.parametrize("cls", ALL)
def test_envelope_round_trip_gives_the_same_class(cls: type[RdsError]) -> None:
    err = cls("something happened; do this", {"k": 1})
    back = from_envelope(err.envelope(), cls.status)
    assert type(back) is cls
    assert back.message == err.message and back.detail == {"k": 1}


def test_codes_and_statuses_are_unique_and_http() -> None:
    codes = [c.code for c in ALL]
    assert len(set(codes)) == len(codes)
    assert all(400 <= c.status < 600 for c in ALL)


def test_budget_exceeded_is_a_4xx() -> None:
    assert 400 <= BudgetExceeded.status < 500


@pytest.mark.parametrize("body", ["<html>", {"detail": "x"}, {"error": "x"}, None])
def test_non_envelope_bodies_become_node_unavailable(body: object) -> None:
    assert isinstance(from_envelope(body, 502), NodeUnavailable)
