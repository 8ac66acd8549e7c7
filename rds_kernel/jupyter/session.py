"""The kernel's side of the notebook: connected nodes, their datasets, and budget meters.

One :class:`Session` lives on the ``%rds`` magics. It connects nodes (the token from an
environment variable, the saved connections, or a hidden prompt — never from the notebook),
remembers them in the per-user connections file, caches dataset handles (so mock data is
downloaded once per kernel), keeps the last budget heard from each node, and builds the meters.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from rds_kernel.client import Node, RemoteDataset, add_budget_listener, connect
from rds_kernel.client.connections import (
    check_connection_name,
    load_connections,
    remove_connection,
    save_connection,
)
from rds_kernel.errors import AuthenticationError, BadRequest, NotFound

if TYPE_CHECKING:  # pragma: no cover - ipywidgets is imported when a meter is first shown
    from rds_kernel.client import Budget
    from rds_kernel.jupyter.meter import BudgetMeter

Prompt = Callable[[str], str]


def ask_hidden(question: str) -> str:
    """Ask for a secret without echoing it (ipykernel routes this to a password field)."""
    return getpass.getpass(question)


class Session:
    """Nodes connected in this kernel, by name, with cached datasets, budgets and meters."""

    def __init__(self, prompt: Prompt = ask_hidden) -> None:
        self.nodes: dict[str, Node] = {}
        self.budgets: dict[str, Budget] = {}
        """The last budget heard from each node (from any release, preview or budget call)."""
        self.prompt = prompt
        self._datasets: dict[str, dict[str, RemoteDataset]] = {}
        self._meters: dict[tuple[str, ...], BudgetMeter] = {}
        self._remove_listener = add_budget_listener(self._heard)

    # ------------------------------------------------------------------ connections

    def connect(
        self,
        url: str | None,
        name: str | None = None,
        *,
        token_env: str | None = None,
        save: bool = True,
    ) -> Node:
        """Connect ``url`` as ``name`` (default: the node's own name) and remember it.

        The token comes from ``$token_env`` if given, else from the saved connection with this
        name or URL, else from a hidden prompt. Without ``url``, the saved connection ``name``
        is used. The connection is saved (mode 0600) only once the node accepted the token.
        """
        if name is not None:
            check_connection_name(name)
        saved = load_connections()
        if url is None:
            if name is None:
                raise BadRequest("give the node's URL, or the --name of a saved connection")
            if name not in saved:
                raise NotFound(
                    f"no saved connection named {name!r}{_listing(saved)}; connect it once "
                    f"with %rds connect URL --name {name}"
                )
            url = saved[name].url
        url = url.rstrip("/")
        match = next((c for c in saved.values() if c.url == url and name in (None, c.name)), None)
        if token_env:
            token = os.environ.get(token_env, "").strip()
            if not token:
                raise BadRequest(
                    f"the environment variable {token_env} is not set (or empty); set it to "
                    "your token before starting Jupyter, or leave out --token-env to type "
                    "the token into a hidden prompt"
                )
        elif match is not None:
            token = match.token
        else:
            token = self._ask_token(url)
        try:
            node = connect(url, token, name=name or (match.name if match else None))
        except AuthenticationError as exc:
            if token_env or match is None:
                raise
            raise AuthenticationError(
                f"{exc.message}. This was the saved token of {match.name}: forget it with "
                f"%rds disconnect {match.name} --forget, then connect again",
                exc.detail,
            ) from None
        try:
            check_connection_name(node.name)
        except BadRequest:
            node.close()
            raise BadRequest(
                f"the node calls itself {node.name!r}, which cannot be used as a name here; "
                "give one with --name, e.g. --name hospital_a"
            ) from None
        old = self.nodes.get(node.name)
        if old is not None:
            old.close()
        self.nodes[node.name] = node
        self._datasets.pop(node.name, None)
        for meter in self._meters.values():  # a meter already shown keeps following the node
            if node.name in meter.nodes:
                meter.nodes[node.name] = node
        if save:
            save_connection(node.name, url, token)
        return node

    def disconnect(self, name: str, *, forget: bool = False, missing_ok: bool = False) -> bool:
        """Close node ``name`` here; with ``forget``, also delete its saved token.

        Returns whether a saved connection was forgotten.
        """
        node = self.nodes.pop(name, None)
        if node is None and not (forget or missing_ok):
            raise self._unknown(name)
        if node is not None:
            node.close()
        self._datasets.pop(name, None)
        for key in [k for k in self._meters if name in k]:
            self._meters.pop(key).close()
        return remove_connection(name) if forget else False

    def node(self, name: str) -> Node:
        """The connected node called ``name``; NotFound saying what is connected otherwise."""
        if name not in self.nodes:
            raise self._unknown(name)
        return self.nodes[name]

    def own_names(self) -> dict[str, str]:
        """The name each connected node gives itself, by the name it was connected under."""
        return {name: str(node.info.get("name") or name) for name, node in self.nodes.items()}

    def select(self, names: str | None) -> list[Node]:
        """The nodes named in ``"a,b"``, or all connected nodes for None."""
        if names is None:
            if not self.nodes:
                raise self._unknown(None)
            return list(self.nodes.values())
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        if not wanted:
            raise BadRequest("name at least one node, e.g. --on hospital_a")
        return [self.node(n) for n in dict.fromkeys(wanted)]

    def _unknown(self, name: str | None) -> NotFound:
        saved = load_connections()
        if not self.nodes:
            hint = (
                f"; reconnect a saved one with %rds connect --name {next(iter(saved))}"
                if saved
                else ""
            )
            return NotFound(
                f"no node is connected{_listing(saved, 'saved')}; run "
                f"%rds connect URL --name NAME first{hint}"
            )
        connected = ", ".join(self.nodes)
        how = f"%rds connect --name {name}" if name in saved else f"%rds connect URL --name {name}"
        return NotFound(
            f"no node named {name!r} is connected (connected: {connected}); connect it with {how}"
        )

    def _ask_token(self, url: str) -> str:
        try:
            token = self.prompt(f"Your token on {url} (hidden): ")
        except (EOFError, OSError, RuntimeError) as exc:
            # ipykernel raises StdinNotImplementedError (a RuntimeError) without a front-end
            # input; a terminal without stdin raises EOFError or OSError.
            raise BadRequest(
                f"cannot ask for the token here ({type(exc).__name__}); put it in an "
                "environment variable and pass --token-env VAR"
            ) from None
        if not token.strip():
            raise BadRequest("no token was entered; the node owner creates one with `rds user add`")
        return token.strip()

    # ------------------------------------------------------------------ datasets

    def datasets(self, node: Node, *, refresh: bool = False) -> dict[str, RemoteDataset]:
        """The datasets of ``node`` by name (asked once per kernel unless ``refresh``)."""
        if refresh or node.name not in self._datasets:
            names = node.datasets.list()
            self._datasets[node.name] = {name: node.dataset(name) for name in names}
        return self._datasets[node.name]

    # ------------------------------------------------------------------ budgets

    def meter(self, nodes: list[Node]) -> BudgetMeter:
        """The budget meter of these nodes (one per set of nodes, refreshed from the nodes)."""
        from rds_kernel.jupyter.meter import BudgetMeter

        key = tuple(n.name for n in nodes)
        if key in self._meters:
            self._meters[key].refresh()
        else:
            self._meters[key] = BudgetMeter(nodes)
        return self._meters[key]

    def _heard(self, node: str, budget: Budget) -> None:
        self.budgets[node] = budget

    def close(self) -> None:
        """Stop listening, close the meters and the nodes' connections (tokens stay saved)."""
        self._remove_listener()
        for meter in self._meters.values():
            meter.close()
        for node in self.nodes.values():
            node.close()
        self._meters.clear()
        self.nodes.clear()
        self._datasets.clear()


def _listing(saved: Mapping[str, object], label: str = "saved") -> str:
    return f" ({label}: {', '.join(saved)})" if saved else ""
