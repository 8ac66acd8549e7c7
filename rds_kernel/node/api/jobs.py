"""HTTP routes of code jobs and budget top-up requests. They parse, call the job service, render.

Scientists: ``POST /v1/jobs``, ``GET /v1/jobs``, ``GET /v1/jobs/{id}``, ``POST|GET
/v1/budget/requests``. The owner: ``GET /v1/admin/jobs[/{id}]``, ``POST
/v1/admin/jobs/{id}/approve|deny``, ``GET /v1/admin/budget/requests``, ``POST
/v1/admin/budget/requests/{id}/grant|deny``. A scientist sees only their own jobs, and of
those never the private output before release, nor the runs' logs.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations of the routes.

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query
from pydantic import BaseModel, Field

from rds_kernel.node.jobs.service import JobService
from rds_kernel.node.service import NodeService
from rds_kernel.node.store.records import User

__all__ = ["jobs_router"]


class JobSubmit(BaseModel):
    request_id: str = Field(description="Chosen by the client; reuse it only to retry.")
    # checked by the service (not here), so that a refusal is audited like every other
    kind: str = Field(description="dp: an automatic DP answer; reviewed: approved by the owner.")
    dataset: str
    source: str = Field(description="The function's source text (never pickled code).")
    entry: str = Field(description="The name of the function in the source.")
    params: dict[str, Any] | None = Field(
        None,
        description="dp: {bounds, epsilon, partitions, default?, scalar?, run_seconds?}; the "
        "partitions run one at a time on a fixed timetable of run_seconds (default 1) + 0.4 s "
        "each, after the node's start-up",
    )
    message: str = Field("", description="reviewed: what the job does and why, for the owner.")


class BudgetAsk(BaseModel):
    epsilon: float = Field(ge=0, allow_inf_nan=False)
    delta: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    reason: str = Field(min_length=1, max_length=2000)


class Decision(BaseModel):
    note: str | None = Field(None, max_length=2000, description="Shown to the scientist.")


def jobs_router(
    service: NodeService,
    current_user: Callable[..., User],
    owner: Callable[..., User],
) -> APIRouter:
    """The routes, bound to ``service`` and the app's two authentication dependencies."""
    jobs = JobService(service)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        jobs.resume()
        yield
        jobs.close()

    router = APIRouter(lifespan=lifespan)
    Who = Annotated[User, Depends(current_user)]
    Owner = Annotated[User, Depends(owner)]
    Limit = Annotated[int, Query(ge=1, le=1000)]
    Status = Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")]
    RequestId = Annotated[int, Path(ge=1, le=2**31 - 1)]

    @router.post("/v1/jobs", tags=["jobs"])
    def submit(body: JobSubmit, user: Who) -> dict[str, Any]:
        return jobs.submit(user, body.model_dump()).public()

    @router.get("/v1/jobs", tags=["jobs"])
    def list_jobs(user: Who, limit: Limit = 100) -> dict[str, Any]:
        return {"jobs": [j.public() for j in jobs.jobs(user, limit)]}

    @router.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job(job_id: str, user: Who) -> dict[str, Any]:
        return jobs.job(user, job_id).public()

    @router.post("/v1/budget/requests", tags=["budget"], status_code=201)
    def ask(body: BudgetAsk, user: Who) -> dict[str, Any]:
        return jobs.requests.ask(user, body.epsilon, body.delta, body.reason)

    @router.get("/v1/budget/requests", tags=["budget"])
    def my_requests(user: Who, limit: Limit = 100) -> dict[str, Any]:
        return {"requests": jobs.requests.list(user=user, limit=limit)}

    @router.get("/v1/admin/jobs", tags=["admin"])
    def all_jobs(user: Owner, status: Status = None, limit: Limit = 100) -> dict[str, Any]:
        found = jobs.store.list(statuses=[status] if status else [], limit=limit)
        return {"jobs": [j.owner() for j in found]}

    @router.get("/v1/admin/jobs/{job_id}", tags=["admin"])
    def owner_job(job_id: str, user: Owner) -> dict[str, Any]:
        return jobs.store.get(job_id).owner()

    @router.post("/v1/admin/jobs/{job_id}/approve", tags=["admin"])
    def approve(job_id: str, body: Decision, user: Owner) -> dict[str, Any]:
        return jobs.approve(job_id, actor=user.name, note=body.note).owner()

    @router.post("/v1/admin/jobs/{job_id}/deny", tags=["admin"])
    def deny(job_id: str, body: Decision, user: Owner) -> dict[str, Any]:
        return jobs.deny(job_id, actor=user.name, reason=body.note).owner()

    @router.get("/v1/admin/budget/requests", tags=["admin"])
    def requests(user: Owner, status: Status = None, limit: Limit = 100) -> dict[str, Any]:
        return {"requests": jobs.requests.list(status=status, limit=limit)}

    @router.post("/v1/admin/budget/requests/{request_id}/grant", tags=["admin"])
    def grant(request_id: RequestId, body: Decision, user: Owner) -> dict[str, Any]:
        return jobs.requests.grant(request_id, actor=user.name, note=body.note)

    @router.post("/v1/admin/budget/requests/{request_id}/deny", tags=["admin"])
    def deny_request(request_id: RequestId, body: Decision, user: Owner) -> dict[str, Any]:
        return jobs.requests.deny(request_id, actor=user.name, note=body.note)

    return router
