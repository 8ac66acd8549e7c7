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
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query

from rds_kernel import wire
from rds_kernel.node.jobs.service import JobService
from rds_kernel.node.service import NodeService
from rds_kernel.node.store.records import User

__all__ = ["jobs_router"]


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
    def submit(body: wire.JobSubmit, user: Who) -> wire.JobView:
        return jobs.submit(user, body.model_dump()).public_view()

    @router.get("/v1/jobs", tags=["jobs"])
    def list_jobs(user: Who, limit: Limit = 100) -> wire.JobList:
        return wire.JobList(jobs=[j.public_view() for j in jobs.jobs(user, limit)])

    @router.get("/v1/jobs/{job_id}", tags=["jobs"])
    def job(job_id: str, user: Who) -> wire.JobView:
        return jobs.job(user, job_id).public_view()

    @router.post("/v1/budget/requests", tags=["budget"], status_code=201)
    def ask(body: wire.BudgetAsk, user: Who) -> wire.BudgetRequest:
        return wire.BudgetRequest.model_validate(
            jobs.requests.ask(user, body.epsilon, body.delta, body.reason)
        )

    @router.get("/v1/budget/requests", tags=["budget"])
    def my_requests(user: Who, limit: Limit = 100) -> wire.BudgetRequests:
        return wire.BudgetRequests.model_validate(
            {"requests": jobs.requests.list(user=user, limit=limit)}
        )

    @router.get("/v1/admin/jobs", tags=["admin"])
    def all_jobs(user: Owner, status: Status = None, limit: Limit = 100) -> wire.OwnerJobList:
        found = jobs.store.list(statuses=[status] if status else [], limit=limit)
        return wire.OwnerJobList(jobs=[j.owner_view() for j in found])

    @router.get("/v1/admin/jobs/{job_id}", tags=["admin"])
    def owner_job(job_id: str, user: Owner) -> wire.OwnerJobView:
        return jobs.store.get(job_id).owner_view()

    @router.post("/v1/admin/jobs/{job_id}/approve", tags=["admin"])
    def approve(job_id: str, body: wire.Decision, user: Owner) -> wire.OwnerJobView:
        return jobs.approve(job_id, actor=user.name, note=body.note).owner_view()

    @router.post("/v1/admin/jobs/{job_id}/deny", tags=["admin"])
    def deny(job_id: str, body: wire.Decision, user: Owner) -> wire.OwnerJobView:
        return jobs.deny(job_id, actor=user.name, reason=body.note).owner_view()

    @router.get("/v1/admin/budget/requests", tags=["admin"])
    def requests(user: Owner, status: Status = None, limit: Limit = 100) -> wire.BudgetRequests:
        return wire.BudgetRequests.model_validate(
            {"requests": jobs.requests.list(status=status, limit=limit)}
        )

    @router.post("/v1/admin/budget/requests/{request_id}/grant", tags=["admin"])
    def grant(request_id: RequestId, body: wire.Decision, user: Owner) -> wire.BudgetRequest:
        return wire.BudgetRequest.model_validate(
            jobs.requests.grant(request_id, actor=user.name, note=body.note)
        )

    @router.post("/v1/admin/budget/requests/{request_id}/deny", tags=["admin"])
    def deny_request(request_id: RequestId, body: wire.Decision, user: Owner) -> wire.BudgetRequest:
        return wire.BudgetRequest.model_validate(
            jobs.requests.deny(request_id, actor=user.name, note=body.note)
        )

    return router
