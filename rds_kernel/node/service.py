"""The node's services: everything the HTTP routes and the CLI do, without HTTP.

Routes and commands parse their input, call one method here and render the result. The DP
query path lives in :meth:`NodeService.release`: parse → validate against the schema → compile
and calibrate (cached) → run the OpenDP measurement on the lazily scanned private file →
``Store.charge`` (check, debit, record, store the answer, one transaction) → only then return.
Nothing touches the data before every budget scope was checked (``Store.precheck``), and once
the measurement has run the release is charged whatever happens, a failure included.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import polars as pl

from rds_kernel import wire
from rds_kernel.dp import PreparedQuery, execute, prepare
from rds_kernel.errors import (
    BadRequest,
    Conflict,
    InternalError,
    PermissionDenied,
    RdsError,
    SpecError,
)
from rds_kernel.mock import mock_to_csv_bytes
from rds_kernel.node.admission import HEAVY_WORK, Abandoned, Admission
from rds_kernel.node.datasets import AddNotes, Dataset, DatasetRegistry
from rds_kernel.node.prepared import PreparedCache, weight
from rds_kernel.node.refusals import REFUSALS_PER_WINDOW, AuthFailures, Coalescer, asked
from rds_kernel.node.settings import NodeSettings
from rds_kernel.node.store import Store
from rds_kernel.node.store.records import BudgetLine, BudgetView, User, check_request_id
from rds_kernel.node.store.tables import json_safe
from rds_kernel.spec import QuerySpec, validate
from rds_kernel.spec._expr import SPEC_VERSION

__all__ = ["NodeService"]

log = logging.getLogger("rds_kernel.node")


@dataclass(frozen=True)
class Mock:
    """Mock data bytes ready to serve."""

    content: bytes
    media_type: str
    filename: str


class NodeService:
    """One owner node: its settings, datasets and store."""

    def __init__(self, settings: NodeSettings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings.resolved_database_url)
        self.datasets = DatasetRegistry(settings.directory, node_name=settings.name)
        self._prepared: PreparedCache[tuple[str, str, str], PreparedQuery] = PreparedCache(
            settings.prepared_cache_mb * 1024 * 1024
        )
        self.admission = Admission(
            workers=settings.release_workers, per_user=settings.max_requests_per_user
        )
        self._auth_failures = AuthFailures(
            lambda detail: self.store.audit("anonymous", "auth.failed", detail)
        )
        self._refusals = Coalescer(
            lambda d: self.store.audit(d.pop("actor"), d.pop("action"), d),
            burst=REFUSALS_PER_WINDOW,
        )

    def close(self) -> None:
        self.admission.close()
        self.store.close()

    # ------------------------------------------------------------------ public metadata

    def node_info(self, user: User) -> wire.NodeInfo:
        return wire.NodeInfo(
            name=self.settings.name,
            version=version("rds_kernel"),
            opendp_version=version("opendp"),
            polars_version=pl.__version__,
            spec_version=SPEC_VERSION,
            user=wire.UserRef(name=user.name, role=user.role),
        )

    def list_datasets(self) -> list[dict[str, Any]]:
        """Every dataset's name, description, number of columns and public row count."""
        return [ds.summary() for ds in self.datasets.all()]

    def dataset_list(self) -> wire.DatasetList:
        """:meth:`list_datasets` as the body of ``GET /v1/datasets``."""
        return wire.DatasetList.model_validate({"datasets": self.list_datasets()})

    def dataset(self, name: str) -> wire.DatasetSchema:
        """The dataset's public schema, exactly as ``Schema.to_dict`` writes it."""
        ds = self.datasets.get(name)
        return wire.DatasetSchema.model_validate({"name": ds.name, "schema": ds.schema.to_dict()})

    def mock(self, name: str, fmt: str) -> Mock:
        """The dataset's mock rows as Parquet or CSV (public: generated from the schema)."""
        ds = self.datasets.get(name)
        if fmt == "parquet":
            return Mock(
                ds.mock_path.read_bytes(), "application/vnd.apache.parquet", f"{name}.mock.parquet"
            )
        if fmt == "csv":
            return Mock(
                mock_to_csv_bytes(pl.read_parquet(ds.mock_path)), "text/csv", f"{name}.mock.csv"
            )
        raise BadRequest(f"mock format {fmt!r} is not supported; use 'parquet' or 'csv'")

    # ------------------------------------------------------------------ the DP query path

    def _prepared_query(self, raw_spec: Any) -> tuple[QuerySpec, Dataset, PreparedQuery]:
        spec = QuerySpec.from_dict(raw_spec)
        ds = self.datasets.get(spec.dataset)
        key = (ds.name, ds.version, spec.hash())
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = prepare(validate(spec, ds.schema), ds.schema)
            self._prepared.put(key, prepared, weight(prepared, len(spec.to_json())))
        if prepared.work > self.settings.max_query_work:
            # decided from public facts only (keys, schema, public_row_count), never the data
            seconds = prepared.work * 1e-4
            raise SpecError(
                f"this query is too big for the node: about {prepared.work:,} noisy values to "
                f"draw (~{seconds:.0f} s of work), and the node allows "
                f"{self.settings.max_query_work:,}. Ask for fewer groups or aggregates, split "
                "it into smaller queries, or ask the owner to raise max_query_work",
                {"work": prepared.work, "limit": self.settings.max_query_work},
            )
        return spec, ds, prepared

    def preview(
        self, user: User, raw_spec: Any, abandoned: threading.Event | None = None
    ) -> wire.Preview:
        """Exact cost and accuracy of a query. Runs nothing on the data, spends nothing."""
        _stop_if(abandoned)
        spec, ds, prepared = self._prepared_query(raw_spec)
        eps, delta = prepared.cost
        return wire.Preview(
            dataset=ds.name,
            requested=wire.Cost(epsilon=spec.epsilon, delta=spec.delta),
            cost=wire.Cost(epsilon=eps, delta=delta),
            summary=[wire.SummaryRow.model_validate(row) for row in prepared.summary],
            budget=self.store.budget_of(user),
        )

    def release(
        self,
        user: User,
        request_id: Any,
        raw_spec: Any,
        abandoned: threading.Event | None = None,
    ) -> wire.ReleaseAnswer:
        """Run a query on the private data, charge its exact cost, and return the answer.

        A retry with the same ``request_id`` returns the stored answer and charges nothing.
        ``abandoned`` (set when the client went away) stops the release before the mechanism
        runs, never after: a release that ran is charged. A refusal is audited, with what was
        asked.
        """
        try:
            return self._release(user, request_id, raw_spec, abandoned)
        except RdsError as exc:
            if not isinstance(exc, Abandoned):
                self.refused(user.name, "release.refused", asked(raw_spec, request_id), exc)
            raise

    def refused(self, actor: str, action: str, what: dict[str, Any], error: RdsError) -> None:
        """Audit a refusal once, whatever the entry point: who, what was asked, and why not.

        Up to ``REFUSALS_PER_WINDOW`` rows per user and minute; beyond, the next row counts
        the ones left out (a scientist cannot grow the database without limit).
        """
        detail = {**what, "code": error.code, "reason": error.message[:500]}
        self._refusals.record(actor, {"action": action, "actor": actor, **detail})

    def auth_failed(self, client: str, path: str, reason: str) -> None:
        """Audit a failed authentication (coalesced per client, see ``refusals.AuthFailures``)."""
        self._auth_failures.record(client, path, reason)

    def _release(
        self,
        user: User,
        request_id: Any,
        raw_spec: Any,
        abandoned: threading.Event | None,
    ) -> wire.ReleaseAnswer:
        request_id = check_request_id(request_id, per="release")
        spec = QuerySpec.from_dict(raw_spec)
        existing = self.store.find_release(user, request_id)
        if existing is not None:
            if existing.spec_hash != spec.hash():
                raise Conflict(
                    f"request_id {request_id!r} was already used for a different query; "
                    "use a new request_id for a new query"
                )
            return self._answer(existing.answer, request_id, replayed=True, user=user)
        spec, ds, prepared = self._prepared_query(raw_spec)
        eps, delta = prepared.cost
        # every scope, the dataset's global cap included, before anything touches the data
        self.store.precheck(user, ds.name, eps, delta)
        # what is known without the data must be storable before the data is touched
        answer: dict[str, Any] = json_safe(
            {
                "dataset": ds.name,
                "spec": spec.to_dict(),
                "cost": {"epsilon": eps, "delta": delta},
                "summary": prepared.summary,
            },
            "the query's summary",
        )
        _stop_if(abandoned)

        def run() -> Any:
            return json_safe(execute(prepared, ds.scan()).to_dict(), "the result")

        # From here the time to answer could depend on the data: it is padded to a deadline
        # from public facts (rds_kernel.dp.timing), whatever the outcome.
        with self._padded(prepared.padding(ds.rows_bound)):
            try:
                heavy = prepared.work >= HEAVY_WORK
                answer["result"] = self.admission.heavy(run) if heavy else run()
            except Exception:
                # The mechanism ran on the private data, so whether it failed may depend on
                # the data: the failure is a release like any other and is charged.
                log.exception("a release failed after running on the private data; charged")
                answer["failed"] = True
            charged = self.store.charge(
                user=user,
                dataset=ds.name,
                request_id=request_id,
                spec_hash=spec.hash(),
                epsilon=eps,
                delta=delta,
                answer=answer,
            )
            rel = charged.release
            return self._answer(
                rel.answer,
                request_id,
                replayed=charged.replayed,
                user=user,
                created_at=rel.created_at.isoformat(),
                budget=charged.budget,
            )

    @contextmanager
    def _padded(self, seconds: float | None) -> Iterator[None]:
        """Hold the answer (or the error) until ``seconds`` after entering, if given."""
        factor = self.settings.release_padding
        if seconds is None or factor <= 0:
            yield
            return
        padding = seconds * factor
        until = time.monotonic() + padding
        try:
            yield
        finally:
            left = until - time.monotonic()
            if left > 0:
                time.sleep(left)
            elif -left > 0.005:
                log.warning(
                    "a release took %.3f s, %.3f s beyond its padding: its time may say something "
                    "about the data; set release_padding = %.1f in node.toml",
                    padding - left,
                    -left,
                    math.ceil(factor * (padding - left) / padding * 10) / 10,
                )

    def _answer(
        self,
        answer: dict[str, Any],
        request_id: str,
        *,
        replayed: bool,
        user: User,
        created_at: str | None = None,
        budget: BudgetView | None = None,
    ) -> wire.ReleaseAnswer:
        if answer.get("failed"):
            cost = answer["cost"]
            raise InternalError(
                f"the query failed while running on the private data; nothing was released, but "
                f"its cost (ε={cost['epsilon']:.6g}, δ={cost['delta']:.3g}) was charged, because "
                "whether a query fails there may depend on the data. This is a fault of the "
                "node: tell its owner (the cause is in the node log)",
                {"request_id": request_id, "charged": cost},
            )
        view = budget if budget is not None else self.store.budget_of(user)
        return wire.ReleaseAnswer.model_validate(
            {
                **answer,
                "request_id": request_id,
                "node": self.settings.name,
                "replayed": replayed,
                "created_at": created_at,
                "budget": view,
            }
        )

    # ------------------------------------------------------------------ budgets and history

    def budget(self, user: User) -> BudgetView:
        return self.store.budget_of(user)

    def releases(self, user: User, limit: int) -> wire.Releases:
        """``user``'s own releases, newest first."""
        return wire.Releases(releases=[r.to_wire() for r in self.store.releases(user, limit=limit)])

    # ------------------------------------------------------------------ owner administration

    def require_owner(self, user: User, what: str = "") -> None:
        """Refuse (and audit) anyone but the owner; ``what`` names the request, for the log."""
        if user.role != "owner":
            error = PermissionDenied(
                "only the data owner may do this; scientists can read /v1/budget and "
                "/v1/releases for their own account"
            )
            self.refused(user.name, "admin.refused", {"request": what[:200]}, error)
            raise error

    def users(self) -> wire.Users:
        """Every account, disabled ones included, by name (never a token or its hash)."""
        return wire.Users(users=[u.to_wire() for u in self.store.list_users()])

    def rotate_token(self, actor: str, name: str) -> wire.UserToken:
        """A new token for ``name`` (shown once); the old one stops working at once."""
        token = self.store.rotate_token(name, actor=actor)
        return wire.UserToken(user=self.store.get_user(name).to_wire(), token=token)

    def disable_user(self, actor: str, name: str) -> wire.UserChange:
        """Stop ``name``'s token from working; their history and budget stay.

        ``actor`` may not disable their own account (over HTTP that would lock the owner out).
        """
        if name == actor:
            raise BadRequest(
                "you cannot disable the account you are using; use `rds user disable` on the node"
            )
        self.store.disable_user(name, actor=actor)
        return wire.UserChange(user=self.store.get_user(name).to_wire())

    def enable_user(self, actor: str, name: str) -> wire.UserChange:
        """Let a disabled account's token work again (rotate it too if it may have leaked)."""
        self.store.enable_user(name, actor=actor)
        return wire.UserChange(user=self.store.get_user(name).to_wire())

    def user_budget(self, name: str) -> BudgetView:
        """User ``name``'s budget and per-dataset caps (``NotFound`` for an unknown name)."""
        return self.store.budget(name)

    def caps(self) -> wire.Caps:
        """Every dataset's global cap (all scientists together), with what they spent."""
        return wire.Caps(caps=self.store.dataset_caps())

    def audit_log(self, limit: int = 100) -> wire.AuditLog:
        """The latest audit entries, newest first."""
        return wire.AuditLog(audit=[e.to_wire() for e in self.store.audit_log(limit=limit)])

    def add_dataset(
        self,
        actor: str,
        name: str,
        data_file: Path,
        schema_file: Path,
        *,
        mock_file: Path | None = None,
        replace: bool = False,
    ) -> tuple[Dataset, AddNotes]:
        """Check a data file against its schema and add it (audited); see
        :meth:`DatasetRegistry.add_with_notes`. The notes count private values: they are for
        the owner's terminal and are not audited."""
        ds, notes = self.datasets.add_with_notes(
            name,
            data_file,
            schema_file,
            mock_file=mock_file,
            mock_rows=self.settings.mock_rows,
            replace=replace,
        )
        self.store.audit(
            actor,
            "dataset.add",
            {
                "dataset": ds.name,
                "columns": ds.schema.names,
                "mock": "supplied" if mock_file else "generated",
            },
        )
        return ds, notes

    def add_user(
        self,
        actor: str,
        name: str,
        role: str,
        *,
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> tuple[User, str]:
        """Create an account (its token is returned, shown once), with a budget if given."""
        user, token = self.store.add_user(name, role, actor=actor)
        if epsilon is not None:
            self.store.set_budget(user.name, epsilon, delta or 0.0, actor=actor)
        return user, token

    def set_budget(
        self,
        actor: str,
        name: str,
        epsilon: float,
        delta: float | None = None,
        *,
        dataset: str | None = None,
    ) -> BudgetView:
        """Set a scientist's total, or their cap on an existing dataset.

        ``delta=None`` keeps the δ already set there (0 where nothing was): an update of ε alone
        must not silently zero a δ budget that unknown-key group-bys need.
        """
        user = self.store.get_user(name)
        if dataset is not None:
            self.datasets.get(dataset)
        if delta is None:
            view = self.store.budget_of(user)
            line = view if dataset is None else view.per_dataset.get(dataset)
            delta = line.delta_total if line is not None else 0.0
        self.store.set_budget(name, epsilon, delta, dataset=dataset, actor=actor)
        return self.store.budget_of(user)

    def set_cap(
        self, actor: str, dataset: str, epsilon: float, delta: float | None = None
    ) -> BudgetLine:
        """Cap an existing dataset for all scientists together; ``delta=None`` keeps the δ cap."""
        self.datasets.get(dataset)
        if delta is None:
            current = self.store.dataset_caps().get(dataset)
            delta = current.delta_total if current is not None else 0.0
        self.store.set_dataset_cap(dataset, epsilon, delta, actor=actor)
        return self.store.dataset_caps()[dataset]


def _stop_if(abandoned: threading.Event | None) -> None:
    if abandoned is not None and abandoned.is_set():
        raise Abandoned("the client went away before the query ran; nothing ran or was charged")
