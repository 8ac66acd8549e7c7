"""The notebook side's test helpers: a node the tests share, and an IPython shell that runs
cells and records what they did."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import rds_kernel as rds
from rds_kernel.node.service import NodeService

TOKEN_ENV = "RDS_TEST_TOKEN"


@dataclass
class Served:
    """The running node, and its service to add scientists to the same database."""

    url: str
    service: NodeService

    def scientist(self, epsilon: float = 3.0, delta: float = 0.0) -> str:
        """A new scientist with this budget; returns the token."""
        name = f"sci_{uuid.uuid4().hex[:10]}"
        _user, token = self.service.store.add_user(name, "scientist", actor="test")
        self.service.store.set_budget(name, epsilon, delta, actor="test")
        return token

    def node(self, token: str, name: str = "hospital_a") -> rds.Node:
        """A Python-API connection as the scientist of ``token``."""
        return rds.connect(self.url, token=token, name=name)


@dataclass
class Ran:
    """What one cell did: its value, its error, everything it printed, its rich outputs."""

    value: object
    error: BaseException | None
    text: str
    outputs: list[dict[str, object]]

    @property
    def html(self) -> str:
        return "\n".join(str(o.get("text/html", "")) for o in self.outputs)


class Shell:
    """An IPython shell with ``%load_ext rds_kernel`` and a helper to run cells."""

    def __init__(self, ip: InteractiveShell) -> None:
        self.ip = ip

    def run(self, source: str) -> Ran:
        with capture_output() as cap:
            result = self.ip.run_cell(source)
        outputs = [dict(o.data) for o in cap.outputs]
        error = result.error_in_exec or result.error_before_exec
        return Ran(result.result, error, cap.stdout + cap.stderr, outputs)

    def html_of(self, value: object) -> str:
        """The HTML the notebook would show for ``value`` (as ``Out[n]`` or ``display``)."""
        formatter = self.ip.display_formatter
        assert formatter is not None
        data, _metadata = formatter.format(value)
        return str(data.get("text/html", ""))

    @property
    def ns(self) -> dict[str, object]:
        return self.ip.user_ns
