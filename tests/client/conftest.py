"""Fixtures for the client tests: a fake node in a requests adapter, and a connected Node."""

from __future__ import annotations

import pytest

import rds_kernel as rds
from tests.client.fakes import TOKEN, URL, FakeNode, session_with


@pytest.fixture
def fake() -> FakeNode:
    return FakeNode()


@pytest.fixture
def sleeps() -> list[float]:
    """The backoff pauses the node's transport took (it records them instead of sleeping)."""
    return []


@pytest.fixture
def node(fake: FakeNode, sleeps: list[float]) -> rds.Node:
    n = rds.connect(URL, token=TOKEN, session=session_with(fake))
    n._transport._sleep = sleeps.append
    return n
