"""The HTTP API's bodies, typed once: what the node sends and takes, and what the client reads.

Every request and response body of the owner node's API is a pydantic model here. The node's
routes declare them (so ``/openapi.json`` and ``/docs`` show every shape) and build their
answers from them; the client validates every answer with them, so a node that answers
something else is a :class:`rds_kernel.errors.ProtocolError`, never a ``KeyError`` later.

The budget is defined here and nowhere else: :class:`BudgetLine` (one scope: total, spent,
remaining ε and δ) and :class:`Budget` (a scientist's node-wide line, plus their per-dataset
caps). The node's store hands it out, the client returns it (``rds.Budget`` is
:class:`Budget`), and the JupyterLab sidebar's ``IBudget`` (``labextension/src/api.ts``) has
exactly its fields (a test compares them).

This module is a leaf: it imports pydantic and the standard library only, so the node and the
client may both use it. pydantic costs ~0.15 s to import, so ``import rds_kernel`` never
imports this module: the client imports it when it reads its first answer.

Conventions: times are ISO 8601 strings in UTC; a privacy loss is ``{"epsilon", "delta"}``
(:class:`Cost`); answers ignore fields they do not know (a newer node may add some) and carry
only the fields declared here (what is not declared does not leave the node).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AuditEntry",
    "AuditLog",
    "Budget",
    "BudgetAsk",
    "BudgetLine",
    "BudgetRequest",
    "BudgetRequests",
    "BudgetUpdate",
    "CapUpdate",
    "Caps",
    "ColumnSchema",
    "Cost",
    "DatasetList",
    "DatasetSchema",
    "DatasetSummary",
    "Decision",
    "ErrorBody",
    "ErrorEnvelope",
    "Health",
    "JobCheck",
    "JobError",
    "JobList",
    "JobMock",
    "JobProgress",
    "JobSubmit",
    "JobView",
    "NewUser",
    "NodeInfo",
    "OwnerJobList",
    "OwnerJobView",
    "Preview",
    "QueryResult",
    "QuerySpecBody",
    "ReleaseAnswer",
    "ReleaseRecord",
    "ReleaseRequest",
    "Releases",
    "Role",
    "SchemaBody",
    "SummaryRow",
    "UserChange",
    "UserRef",
    "UserToken",
    "UserView",
    "Users",
    "Wire",
]

Role = Literal["owner", "scientist"]
Timestamp = Annotated[str, Field(description="ISO 8601 time in UTC.")]
MaybeTimestamp = Annotated[str | None, Field(description="ISO 8601 time in UTC, or null.")]
JsonObject = dict[str, Any]


class Wire(BaseModel):
    """Base of every body: frozen, unknown fields ignored, ``to_dict``/``from_dict`` for JSON."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what goes on the wire)."""
        return self.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------- errors


class ErrorBody(Wire):
    code: str = Field(description="Stable error code, e.g. budget_exceeded (rds_kernel.errors).")
    message: str = Field(description="What happened, why, and what to do next.")
    detail: JsonObject = Field(default_factory=dict, description="Machine-readable facts.")


class ErrorEnvelope(Wire):
    """Every error the node answers (4xx and 5xx): ``{"error": {"code", "message", "detail"}}``."""

    error: ErrorBody


# ---------------------------------------------------------------- node and datasets


class Health(Wire):
    status: Literal["ok"] = "ok"


class UserRef(Wire):
    name: str
    role: Role


class NodeInfo(Wire):
    """``GET /v1/node``: the node, its versions, and who you are on it."""

    name: str = Field(description="The node's name, as its owner set it.")
    version: str = Field(description="rds_kernel's version on the node.")
    opendp_version: str
    polars_version: str
    spec_version: int = Field(description="The version of the query spec the node reads.")
    user: UserRef


class DatasetSummary(Wire):
    name: str
    description: str
    columns: int = Field(description="How many columns the schema declares.")
    public_row_count: int | None = None


class DatasetList(Wire):
    """``GET /v1/datasets``."""

    datasets: list[DatasetSummary]


Bound = int | float | str  # numbers, or ISO dates for date columns


class ColumnSchema(Wire):
    """One column of a public schema (absent keys are left out of the answer, not null)."""

    type: Literal["int", "float", "bool", "category", "string", "date"]
    nullable: bool
    bounds: tuple[Bound, Bound] | None = Field(None, description="Public [lower, upper].")
    categories: list[str] | None = Field(None, description="Public keys of a category column.")
    description: str | None = None
    null_rate: float | None = Field(None, description="A hint for the mock data, 0 to 1.")


class SchemaBody(Wire):
    """A dataset's public schema, as in its owner's schema file (``rds_kernel.schema``)."""

    name: str
    description: str
    columns: dict[str, ColumnSchema]
    public_row_count: int | None = None
    identifier: str | None = Field(None, description="The column that identifies a person.")
    max_contributions: int | None = Field(None, description="Rows per person (with identifier).")


class DatasetSchema(Wire):
    """``GET /v1/datasets/{name}``."""

    model_config = ConfigDict(populate_by_name=True)
    name: str
    # `schema` would shadow BaseModel.schema(): the attribute is `schema_`, the key "schema"
    schema_: SchemaBody = Field(alias="schema")


# ---------------------------------------------------------------- budgets


class Cost(Wire):
    """A privacy loss: ε and δ."""

    epsilon: float
    delta: float


class BudgetLine(Wire):
    """Total, spent and remaining privacy loss (ε, δ) of one budget scope."""

    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float
    delta_total: float
    delta_spent: float
    delta_remaining: float

    @classmethod
    def of(
        cls, epsilon_total: float, delta_total: float, epsilon_spent: float, delta_spent: float
    ) -> BudgetLine:
        """The line of a scope from its totals and what was spent (remaining = the difference)."""
        return cls(
            epsilon_total=epsilon_total,
            epsilon_spent=epsilon_spent,
            epsilon_remaining=epsilon_total - epsilon_spent,
            delta_total=delta_total,
            delta_spent=delta_spent,
            delta_remaining=delta_total - delta_spent,
        )


class Budget(BudgetLine):
    """A scientist's privacy budget on one node: the node-wide line, and per-dataset caps.

    ``GET /v1/budget`` (and inside every preview and release answer). ``per_dataset`` holds
    the caps the owner set for you on single datasets (datasets without one are left out).
    """

    user: str
    per_dataset: dict[str, BudgetLine] = Field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"{self.user}: ε {self.epsilon_remaining:g} left of {self.epsilon_total:g} "
            f"(spent {self.epsilon_spent:g}), δ {self.delta_remaining:g} left of "
            f"{self.delta_total:g}"
        )


# ---------------------------------------------------------------- queries


class QuerySpecBody(Wire):
    """The query spec (see ``rds_kernel.spec``; the node validates it strictly)."""

    model_config = ConfigDict(extra="allow")
    dataset: str
    epsilon: float
    aggregates: list[JsonObject]


class ReleaseRequest(Wire):
    """``POST /v1/queries``."""

    request_id: str = Field(description="Chosen by the client; reuse it only to retry.")
    spec: QuerySpecBody = Field(description="The query spec (see rds_kernel.spec).")


class SummaryRow(Wire):
    """One aggregate of a query: its mechanism, noise scale and ± accuracy at 95%."""

    aggregate: str
    statistic: str
    mechanism: str
    scale: float | None
    accuracy: float | None
    threshold: int | None = None
    note: str | None = None


class Preview(Wire):
    """``POST /v1/queries/preview``: what a release would cost and how accurate it would be."""

    dataset: str
    requested: Cost
    cost: Cost = Field(description="The exact cost a release would be charged.")
    summary: list[SummaryRow]
    budget: Budget = Field(description="Your budget now, before any release.")


class QueryResult(Wire):
    """Released values: one row per group (or one row), one column per aggregate."""

    columns: list[str]
    rows: list[list[Any]]
    accuracy: dict[str, float | None] = Field(
        default_factory=dict, description="± at 95% per aggregate (null: none in closed form)."
    )
    alpha: float | None = None
    epsilon: float | None = None
    delta: float | None = None
    threshold: int | None = None


class ReleaseAnswer(Wire):
    """``POST /v1/queries``: a released answer, charged once per ``request_id``."""

    request_id: str
    node: str
    dataset: str
    spec: JsonObject
    cost: Cost = Field(description="What was charged (at most what was asked for).")
    summary: list[SummaryRow]
    result: QueryResult
    replayed: bool = Field(description="A stored answer returned again, charged nothing.")
    created_at: MaybeTimestamp = None
    budget: Budget = Field(description="Your budget right after the charge.")


class ReleaseRecord(Wire):
    request_id: str
    dataset: str
    epsilon: float
    delta: float
    created_at: Timestamp
    spec: JsonObject | None = None


class Releases(Wire):
    """``GET /v1/releases``: your releases, newest first."""

    releases: list[ReleaseRecord]


# ---------------------------------------------------------------- owner administration


class UserView(Wire):
    name: str
    role: Role
    disabled: bool
    created_at: Timestamp


class Users(Wire):
    """``GET /v1/admin/users``."""

    users: list[UserView]


class UserToken(Wire):
    """A user and their new API token, shown this once."""

    user: UserView
    token: str


class UserChange(Wire):
    """A user after a change (disabled or enabled)."""

    user: UserView


_KEEP_DELTA = "Omitted: the δ already set stays (0 where none was)."


class NewUser(Wire):
    """``POST /v1/admin/users``."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role = "scientist"
    epsilon: float | None = Field(None, ge=0, allow_inf_nan=False)
    delta: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)


class BudgetUpdate(Wire):
    """``PUT /v1/admin/budgets/{user}``."""

    epsilon: float = Field(ge=0, allow_inf_nan=False)
    delta: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False, description=_KEEP_DELTA)
    dataset: str | None = Field(None, description="Cap for one dataset instead of the total.")


class CapUpdate(Wire):
    """``PUT /v1/admin/caps/{dataset}``."""

    epsilon: float = Field(ge=0, allow_inf_nan=False)
    delta: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False, description=_KEEP_DELTA)


class Caps(Wire):
    """``GET /v1/admin/caps``: each capped dataset's cap for all scientists together."""

    caps: dict[str, BudgetLine]


class AuditEntry(Wire):
    id: int
    created_at: Timestamp
    actor: str
    action: str
    detail: JsonObject


class AuditLog(Wire):
    """``GET /v1/admin/audit``: the latest entries, newest first."""

    audit: list[AuditEntry]


# ---------------------------------------------------------------- code jobs


class JobSubmit(Wire):
    """``POST /v1/jobs``."""

    request_id: str = Field(description="Chosen by the client; reuse it only to retry.")
    # checked by the service (not here), so that a refusal is audited like every other
    kind: str = Field(description="dp: an automatic DP answer; reviewed: approved by the owner.")
    dataset: str
    source: str = Field(description="The function's source text (never pickled code).")
    entry: str = Field(description="The name of the function in the source.")
    params: JsonObject | None = Field(
        None,
        description="dp: {bounds, epsilon, partitions, default?, scalar?, run_seconds?}; the "
        "partitions run one at a time on a fixed timetable of run_seconds (default 1) + 0.4 s "
        "each, after the node's start-up",
    )
    message: str = Field("", description="reviewed: what the job does and why, for the owner.")


class JobProgress(Wire):
    done: int
    total: int


class JobError(Wire):
    code: str | None
    message: str


class JobMock(Wire):
    """A reviewed job's run on the public mock data: all of it is the scientist's to see."""

    ok: bool
    output: JsonObject | None = None
    log: str | None = None
    error: str | None = None


class JobView(Wire):
    """A job as its scientist sees it (``GET /v1/jobs/{id}``).

    A DP job shows no progress and no ``updated_at`` (null): only its status and, while it
    runs, ``finishes_at``, the end of a timetable fixed before any data was read.
    """

    id: str
    request_id: str
    kind: Literal["dp", "reviewed"]
    dataset: str
    entry: str
    message: str
    params: JsonObject
    status: str = Field(
        description="dp: queued, running, done, failed; reviewed: submitted, mock_running, "
        "pending_review, approved, running, output_review, released, denied, failed"
    )
    progress: JobProgress | None
    finishes_at: MaybeTimestamp
    mock: JobMock | None
    result: JsonObject | None = Field(description="Once released: the DP answer or the output.")
    error: JobError | None
    review_note: str | None
    created_at: Timestamp
    updated_at: MaybeTimestamp


class JobCheck(Wire):
    check: str
    ok: bool
    detail: str


class OwnerJobView(JobView):
    """A job as its node's owner sees it (``GET /v1/admin/jobs/{id}``): everything."""

    updated_at: Timestamp  # always known to the owner
    heartbeat_at: MaybeTimestamp
    user: str
    source: str
    output: JsonObject | None
    checks: list[JobCheck] | None
    log: str | None
    reviewer: str | None
    spec_hash: str


class JobList(Wire):
    """``GET /v1/jobs``: your jobs, newest first."""

    jobs: list[JobView]


class OwnerJobList(Wire):
    """``GET /v1/admin/jobs``."""

    jobs: list[OwnerJobView]


class Decision(Wire):
    """The owner's decision on a job or a budget request."""

    note: str | None = Field(None, max_length=2000, description="Shown to the scientist.")


class BudgetAsk(Wire):
    """``POST /v1/budget/requests``: ask the owner for more budget, saying why."""

    epsilon: float = Field(ge=0, allow_inf_nan=False)
    delta: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    reason: str = Field(min_length=1, max_length=2000)


class BudgetRequest(Wire):
    """A request for more budget, with the owner's decision once there is one."""

    id: int
    user: str
    epsilon: float
    delta: float
    reason: str
    status: str = Field(description="pending, granted or denied.")
    decided_by: str | None
    note: str | None
    created_at: Timestamp
    decided_at: MaybeTimestamp


class BudgetRequests(Wire):
    """``GET /v1/budget/requests`` (yours) and ``GET /v1/admin/budget/requests`` (all)."""

    requests: list[BudgetRequest]
