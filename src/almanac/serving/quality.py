"""`/quality/...`: the quality verbs as JSON (what `almanac stats`, `drift`, `validate`
and `freshness --json` print). They read offline data, so each runs in a worker thread,
off the event loop that serves online reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from almanac.config import RepoConfig
from almanac.errors import AccessDeniedError
from almanac.quality import checks, results
from almanac.quality.drift import FeatureDrift
from almanac.quality.freshness import ViewFreshness, freshness, reported_views
from almanac.quality.skew import skew
from almanac.quality.statistics import FeatureStatistics
from almanac.semantics.times import to_utc
from almanac.serving import access
from almanac.serving.encode import dumps
from almanac.serving.errors import single_query_values
from almanac.serving.handlers import ServingState


def _errors() -> dict[int | str, dict[str, Any]]:
    """The error answers a quality route documents (the shape of every error's body)."""
    from almanac.serving.schemas import ErrorResponse

    return {
        code: {"model": ErrorResponse, "description": text}
        for code, text in [
            (401, "Missing or invalid API key (when keys are configured)"),
            (403, "No permission grants the action on the view or service (with server.auth)"),
            (404, "Unknown view (close names listed)"),
            (422, "Invalid request (a time, a window), or a view with nothing to check"),
        ]
    }


_NOT_FOUND = _errors()
_START = Query(None, description="Earliest event time (ISO 8601); default: the first.")
_END = Query(None, description="Latest event time (ISO 8601); default: the last.")


@dataclass
class ExpectationResult:
    at: datetime
    view: str
    batch: str
    entry: str
    expectation: str
    observed: int
    rows: int
    passed: bool
    policy: str


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
    router = APIRouter(
        prefix="/quality", tags=["quality"], dependencies=[Depends(single_query_values)]
    )

    async def run(function: Any, *args: Any) -> Response:
        if access.policy(state) is not None and args and isinstance(args[0], str):
            name = args[0]  # the view (or, for skew, the feature service)
            kind = "service" if function is skew else "view"
            known = state.catalog.services if kind == "service" else state.catalog.all_views()
            if name not in known:
                raise AccessDeniedError(f"may not read_offline {kind} '{name}'")
            if kind == "service":
                access.require(state, "read_offline", service=name)
            else:  # feature-level: a view's statistics describe each of its features
                view = state.catalog.view(name)
                access.require_features(state, "read_offline", [(name, f.name) for f in view.features] or [(name, "*")])  # fmt: skip
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
        reference: str | None = Query(
            None, description="The reference window START..END (ISO 8601)."
        ),
        current: str | None = Query(None, description="The current window START..END (ISO 8601)."),
        reference_dataset: str | None = Query(
            None, description="A saved dataset as the reference."
        ),
        current_dataset: str | None = Query(None, description="A saved dataset as the current."),
        current_served: str | None = Query(
            None, description="The values served in START..END (the serving log) as the current."
        ),
    ) -> Response:
        """PSI, Jensen–Shannon and KS of each feature between two samples: windows of the
        view's offline rows, saved datasets, or the values served (one per side)."""
        samples = (
            checks.sample(reference, reference_dataset, "reference / reference_dataset"),
            checks.sample(
                current,
                current_dataset,
                "current / current_dataset / current_served",
                current_served,
            ),
        )
        return await run(checks.feature_drift, view, *samples)

    @router.get("/results", response_model=list[ExpectationResult], responses=_NOT_FOUND)
    async def expectation_results(
        view: str | None = Query(None, description="Only this view's results."),
        since: str | None = Query(None, description="Only results from this time (ISO 8601)."),
        failed: bool = Query(False, description="Only the failed ones."),
        limit: int = Query(100, ge=1, le=10_000, description="At most this many, newest first."),
    ) -> Response:
        """The recorded results of expectations, newest first: one per expectation per
        batch checked (push, write, materialization, validate)."""

        def newest(config: RepoConfig) -> list[dict[str, Any]]:
            start = None if since is None else to_utc(since, "since")
            rows: list[dict[str, Any]] = results.read(config, view, start, failed).rows.slice(0, limit).to_pylist()  # fmt: skip
            if access.policy(state) is not None:
                rows = [r for r in rows if r["view"] in state.catalog.all_views() and access.allowed(state, "read_offline", view=r["view"])]  # fmt: skip
            return rows

        body = await asyncio.to_thread(newest, state.store.config)
        return Response(dumps(body), media_type="application/json")

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
        if access.policy(state) is not None:  # only views the caller may describe
            known = reported_views(state.catalog)
            for name in view or []:
                if name not in known or not access.visible(state, "view", name):
                    raise AccessDeniedError(f"may not describe view '{name}'")
            view = view or [n for n in known if access.visible(state, "view", n)]
            if not view:
                return Response(b"[]", media_type="application/json")
        return await run(freshness, view)

    return router
