"""`GET /runs`: the materialization history (what `almanac runs --json` prints), read from
the registry in a worker thread, off the event loop that serves online reads."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from almanac.errors import AccessDeniedError
from almanac.serving import access
from almanac.serving.encode import dumps
from almanac.serving.errors import single_query_values
from almanac.serving.handlers import ServingState
from almanac.serving.schemas import ErrorResponse


class RunInfo(BaseModel):
    view: str
    started_at: datetime
    start: datetime | None
    end: datetime
    rows: int
    seconds: float
    outcome: str  # success | skipped | refused | failed
    error: str
    trigger: str  # manual | schedule
    host: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "Missing or invalid API key (when keys are configured)",
    },
    403: {
        "model": ErrorResponse,
        "description": "No permission to describe the view (with server.auth)",
    },
    404: {"model": ErrorResponse, "description": "Unknown view (close names listed)"},
    422: {"model": ErrorResponse, "description": "Invalid request (a time that is not ISO 8601)"},
}


def operations_router(state: ServingState) -> APIRouter:
    router = APIRouter(tags=["operations"], dependencies=[Depends(single_query_values)])

    @router.get("/runs", response_model=list[RunInfo], responses=_ERRORS)
    async def runs(
        view: str | None = Query(None, description="Only this view's runs."),
        since: str | None = Query(None, description="Runs started at or after (ISO 8601)."),
        limit: int = Query(100, ge=1, le=10_000, description="At most this many, newest first."),
    ) -> Response:
        """Every materialization, manual or scheduled, newest first: its window, rows,
        duration, outcome and error."""

        def newest() -> list[dict[str, Any]]:
            stored = state.catalog.online_views()  # views, and write-time on-demand views
            if view is not None and access.policy(state) is not None and not (view in stored and access.visible(state, "view", view)):  # fmt: skip
                raise AccessDeniedError(f"may not describe feature view '{view}'")
            runs = state.store.runs(view, since=since, limit=limit)
            return [r.to_dict() for r in runs if r.view in stored and access.visible(state, "view", r.view)]  # fmt: skip

        return Response(dumps(await asyncio.to_thread(newest)), media_type="application/json")

    return router
