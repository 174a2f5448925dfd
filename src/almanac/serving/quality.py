"""`/quality/...`: the quality verbs as JSON (what `almanac stats`, `drift`, `validate`
and `freshness --json` print). They read offline data, so each runs in a worker thread,
off the event loop that serves online reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Query, Response

from almanac.quality import checks
from almanac.quality.drift import FeatureDrift
from almanac.quality.freshness import ViewFreshness, freshness
from almanac.quality.skew import skew
from almanac.quality.statistics import FeatureStatistics
from almanac.serving.encode import dumps
from almanac.serving.handlers import ServingState


def _errors() -> dict[int | str, dict[str, Any]]:
    """The error answers a quality route documents (the shape of every error's body)."""
    from almanac.serving.schemas import ErrorResponse

    return {
        code: {"model": ErrorResponse, "description": text}
        for code, text in [
            (401, "Missing or invalid API key (when keys are configured)"),
            (404, "Unknown view (close names listed)"),
            (422, "Invalid request (a time, a window), or a view with nothing to check"),
        ]
    }


_NOT_FOUND = _errors()
_START = Query(None, description="Earliest event time (ISO 8601); default: the first.")
_END = Query(None, description="Latest event time (ISO 8601); default: the last.")


@dataclass
class FeatureSkewInfo:
    feature: str
    compared: int
    mismatches: int
    missing: int
    extra: int
    rate: float
    examples: list[dict[str, Any]]


@dataclass
class SkewReportInfo:
    feature_service: str
    rows: int
    features: list[FeatureSkewInfo]


def quality_router(state: ServingState) -> APIRouter:
    router = APIRouter(prefix="/quality", tags=["quality"])

    async def run(function: Any, *args: Any) -> Response:
        result = await asyncio.to_thread(function, state.store, *args)
        items = result if isinstance(result, list) else [result]
        body = [item.to_dict() for item in items]
        return Response(dumps(body if isinstance(result, list) else body[0]), media_type="application/json")  # fmt: skip

    @router.get("/stats/{view}", response_model=list[FeatureStatistics], responses=_NOT_FOUND)
    async def stats(view: str, start: str | None = _START, end: str | None = _END) -> Response:
        """Statistics of each feature of a view over its offline rows."""
        return await run(checks.statistics, view, start, end)

    @router.get("/drift/{view}", response_model=list[FeatureDrift], responses=_NOT_FOUND)
    async def drift(
        view: str,
        reference: str = Query(description="The reference window START..END (ISO 8601)."),
        current: str = Query(description="The current window START..END (ISO 8601)."),
    ) -> Response:
        """PSI, Jensen–Shannon and KS of each feature between two windows."""
        windows = checks.parse_window(reference, "reference"), checks.parse_window(current, "current")  # fmt: skip
        return await run(checks.feature_drift, view, *windows)

    @router.get("/validate/{view}", response_model=checks.ValidationReport, responses=_NOT_FOUND)
    async def validate(view: str, start: str | None = _START, end: str | None = _END) -> Response:
        """A view's expectations over its offline rows."""
        return await run(checks.validate, view, start, end)

    @router.get("/skew/{feature_service}", response_model=SkewReportInfo, responses=_NOT_FOUND)
    async def skew_report(
        feature_service: str, start: str | None = _START, end: str | None = _END
    ) -> Response:
        """The logged online reads of a feature service replayed offline, compared."""
        return await run(skew, feature_service, start, end)

    @router.get("/freshness", response_model=list[ViewFreshness], responses=_NOT_FOUND)
    async def view_freshness(
        view: list[str] | None = Query(None, description="Views (default: all); repeat."),
    ) -> Response:
        """Each view's newest event and online lag against its freshness SLO."""
        return await run(freshness, view)

    return router
