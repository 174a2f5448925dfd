"""`FeatureStore`: the one object users hold.

It reads the repo's config, keeps a cached view of the registry, and hands each verb to
the module that owns it: definitions and the registry (`plan`, `apply`), the offline
engine (`get_historical_features`, `write_to_offline_store`), the online store
(`get_online_features`), materialization and ingestion. Backends are created lazily,
so a command only connects to what it uses. The data-quality and materialization verbs
are inherited from mixins beside this module (`store_quality`, `store_materialize`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from almanac.config import RepoConfig, load_config
from almanac.definitions.sources import PushSource
from almanac.errors import ConcurrentApplyError, InputError, NotFoundError, redact
from almanac.registry.catalog import KINDS, Catalog, FeatureRef
from almanac.store_materialize import MaterializationVerbs
from almanac.store_quality import QualityVerbs

if TYPE_CHECKING:
    from almanac.offline.compaction import Compaction
    from almanac.online.context import Context
    from almanac.online.response import OnlineResponse
    from almanac.ports.offline import OfflineEngine, RetrievalJob
    from almanac.ports.online import OnlineStore
    from almanac.quality.serving_log import ServingLog
    from almanac.registry.diff import Plan
    from almanac.registry.store import CachedRegistry
    from almanac.security.access import AccessPolicy, Target
    from almanac.security.operations import OperationGuard
    from almanac.transforms.artifacts import FittedCache, FittedVersion
    from almanac.transforms.ondemand import OnDemandPlan


class FeatureStore(QualityVerbs, MaterializationVerbs):
    """The handle on a repo's feature store. Its data-quality verbs (`statistics`, `drift`,
    `validate`, `report`...) are in `store_quality`, its materialization verbs
    (`materialize`, `materialize_incremental`, `runs`, `run_due`) in `store_materialize`."""

    def __init__(self, repo_path: str | Path = ".", *, config: RepoConfig | None = None) -> None:
        self.config = config or load_config(repo_path)
        self.repo_path = self.config.repo_path
        self.project = self.config.project

    # ---- registry --------------------------------------------------------------------

    @cached_property
    def registry(self) -> CachedRegistry:
        from almanac.registry.store import CachedRegistry, open_registry

        backend = open_registry(self.config.resolve_url(self.config.registry.url), self.project)
        return CachedRegistry(backend, refresh_seconds=self.config.registry.refresh_seconds)

    @property
    def catalog(self) -> Catalog:
        """The applied definitions (refreshed when another process applies)."""
        return self.registry.catalog()

    def load_repo(self) -> Catalog:
        """The definitions the repo's Python modules declare now (not yet applied)."""
        from almanac.repo import load_definitions

        return load_definitions(self.repo_path, self.config.definitions)

    def plan(self, *, prune: bool = False) -> Plan:
        """What `apply` would change. New and changed views are checked against their
        sources' schemas too: a column the data does not have is a definition error.

        A registered object the repo does not declare is deleted only if this repo
        applied it before (it was removed from the repo since); another author's is kept
        (`Plan.kept`) unless `prune`."""
        from almanac.registry.diff import make_plan
        from almanac.repo import applied_objects

        owned = None if prune else applied_objects(self.repo_path, self._registry_key)
        plan = make_plan(self.registry.catalog(fresh=True), self.load_repo(), owned)
        touched = {(c.kind, c.name) for c in plan.changes if c.action != "delete"}
        changed = [
            name
            for name, view in plan.target.all_views().items()
            if ("feature_view", name) in touched
            or ("aggregation_view", name) in touched
            or ("source", view.source) in touched
        ]
        if changed:
            # A dialect the engine cannot run is refused before any query is tried.
            self.offline.check_dialect(plan.target, changed)
            self.offline.check_views(plan.target, changed)
        return plan

    def apply(self, plan: Plan | None = None, *, prune: bool = False) -> Plan:
        """Apply the repo's definitions atomically; returns what changed (see `plan` for
        what is deleted and what is kept).

        Online values of views whose values change (another source, keys, features,
        types, transformation...) or that are deleted are cleared first, with their
        watermarks, so that values of another definition are never served; if the online
        store cannot be reached, nothing is applied. With `access.principal`, each change
        needs the `apply` action (from the permissions already applied)."""
        from almanac.repo import guard_writes

        guard_writes("apply")
        plan = plan or self.plan(prune=prune)
        changes = [f"{c.kind}:{c.name}" for c in plan.changes]
        with self._guard.operation(self.catalog, "apply", ["apply"], lambda policy: _applied(policy, plan), changes=changes):  # fmt: skip
            self._apply(plan)
        return plan

    def _apply(self, plan: Plan) -> None:
        from almanac.online.layouts import forget
        from almanac.repo import record_applied

        stale = plan.views_with_stale_online_data()
        if stale and self.registry.backend.version() != plan.base_version:
            # Another apply landed since the plan: fail before clearing anything.
            raise ConcurrentApplyError(
                f"the registry changed while this apply was prepared (version "
                f"{plan.base_version} → {self.registry.backend.version()}); run `almanac plan` "
                "again and re-apply"
            )
        for view in stale:
            self.online.delete_view(self.project, view)  # its watermark too
            forget(self.online, self.project, view)
        self.registry.apply(plan)
        kept = set(plan.kept)
        declared = [
            obj for kind in KINDS for name, obj in plan.target.of_kind(kind).items()
            if (kind, name) not in kept
        ]  # fmt: skip
        record_applied(
            self.repo_path, self._registry_key, Catalog.from_definitions(declared, validate=False)
        )

    @property
    def _registry_key(self) -> str:
        """Names this repo's registry (and project) in what the repo remembers of it."""
        return f"{redact(self.config.resolve_url(self.config.registry.url))}#{self.project}"

    # ---- offline -----------------------------------------------------------------------

    @cached_property
    def offline(self) -> OfflineEngine:
        from almanac.offline import open_offline_engine

        return open_offline_engine(self.config)

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | None = None,
        *,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        timestamp_field: str = "event_timestamp",
        save_as: str | None = None,
        transformed: bool = False,
        transforms_version: int | None = None,
    ) -> RetrievalJob:
        """Point-in-time correct feature values for each row of `entity_df`.

        `entity_df` is pandas, Polars, Arrow, a dict of columns, a Parquet path or SQL
        text, with the entities' join keys and an `event_timestamp` column (or the one
        named `timestamp_field`). Its other columns (labels) pass through untouched.

        `save_as` computes the set now and keeps it, with the registry version and
        each feature's statistics, as a saved dataset: the reference that later data
        is compared with (`drift(..., reference="NAME")`; see `almanac.quality.datasets`).

        On-demand features are computed on the joined rows, their request fields read
        from `entity_df`'s columns. `transformed=True` applies the feature service's
        fitted transforms (`fit_transforms`; the latest fit, or `transforms_version`):
        on the very rows they were fitted on, target encoders give out-of-fold values.
        """
        catalog = self.catalog
        refs = catalog.resolve(features, feature_service, full_feature_names)
        on_demand = _on_demand_plan(catalog, refs)
        stored = refs if on_demand is None else on_demand.base
        # An on-demand feature needs access to itself and to what it is computed from.
        pairs = list(dict.fromkeys((r.view, r.field.name) for r in [*refs, *stored]))
        with self._guard.operation(catalog, "get_historical_features", ["read_offline"], lambda policy: policy.feature_targets(pairs), features=[r.ref for r in refs]):  # fmt: skip
            job = self.offline.get_historical_features(catalog, entity_df, stored, timestamp_field)
            if on_demand is not None or transformed:
                # Imported only when used: it imports pandas (0.3-1 s of a cold process).
                from almanac.transforms import training_sets
            if on_demand is not None:
                job = training_sets.with_on_demand(job, on_demand, self.offline.expression_evaluator(), self.repo_path)  # fmt: skip
            if transformed:
                chosen, columns = self._fitted_entry(_service_of(feature_service), transforms_version)  # fmt: skip
                job = training_sets.transformed(job, chosen, columns, timestamp_field)
        if save_as is None:
            return job
        from almanac.quality.datasets import save

        _, saved = save(
            self.config, save_as, job, refs, project=self.project,
            registry_version=self.registry.backend.version(),
            feature_service=feature_service, timestamp_field=timestamp_field,
        )  # fmt: skip
        return saved

    def fit_transforms(
        self, feature_service: str, training_df: Any, *, timestamp_field: str = "event_timestamp"
    ) -> FittedVersion:
        """Fit the feature service's `transforms` on a training set (its features under
        their output names, its label columns as target encoders name them) and record
        them in the registry as a new version: what `transformed=True` applies, offline
        and online, until the next fit."""
        from almanac.offline.frames import to_arrow
        from almanac.transforms.artifacts import fit_service

        catalog = self.catalog
        table = to_arrow(training_df, "training_df")
        with self._guard.operation(catalog, "fit_transforms", ["apply"], lambda policy: [policy.service_target(feature_service)], service=feature_service):  # fmt: skip
            fitted = fit_service(catalog, self.registry.state, feature_service, table, timestamp_field)  # fmt: skip
        self._fitted.clear()
        return fitted

    def fitted_transforms(self, feature_service: str, version: int | None = None) -> FittedVersion:
        """A service's fitted transforms (the latest fit, or `version`), kept in memory for
        as long as the registry view (`registry.refresh_seconds`)."""
        return self._fitted_entry(feature_service, version)[0]

    def _fitted_entry(self, service: str, version: int | None) -> tuple[FittedVersion, dict[str, str]]:  # fmt: skip
        return self._fitted.get(self.catalog, service, version)

    @cached_property
    def _fitted(self) -> FittedCache:
        from almanac.transforms.artifacts import FittedCache

        return FittedCache(lambda: self.registry.state, self.config.registry.refresh_seconds)

    def write_to_offline_store(self, view: str, df: Any) -> int:
        """Append rows to a view's offline dataset (atomic; columns, types and the
        view's expectations checked first)."""
        from almanac.ingest.push import write_to_offline_store
        from almanac.repo import guard_writes

        guard_writes("write_to_offline_store")
        with self._guard.operation(self.catalog, "write_to_offline_store", ["write_offline"], lambda policy: [policy.view_target(view)], view=view) as notes:  # fmt: skip
            notes["rows"] = write_to_offline_store(self, view, df)
        return int(notes["rows"])

    # ---- online ------------------------------------------------------------------------

    @cached_property
    def online(self) -> OnlineStore:
        from almanac.online import open_online_store

        return open_online_store(self.config)

    def get_online_features(
        self,
        features: Sequence[str] | None = None,
        entity_rows: Sequence[dict[str, Any]] | dict[str, Sequence[Any]] | None = None,
        *,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        now: datetime | None = None,
        request_data: dict[str, Any] | None = None,
        transformed: bool = False,
        transforms_version: int | None = None,
    ) -> OnlineResponse:
        """Latest values for each entity row, with statuses and event timestamps.
        `now` (default: the clock) is the read time that TTLs and aggregation windows
        are measured from; pass one to replay what was served at that moment.
        `request_data` gives the request fields of on-demand features (``{"amount":
        [129.0]}``: one value per entity row; or put them in the entity rows).
        `transformed=True` applies the feature service's fitted transforms, as
        `get_historical_features` does."""
        from almanac.online.retrieval import get_online_features, read_features

        if self._guard.principal is not None:
            # What the read's cached plan reads and computes (as the server checks it).
            catalog = self.catalog
            pairs = read_features(catalog, features, feature_service, full_feature_names)
            self._guard.require_features(catalog, "read_online", list(pairs))
        response = get_online_features(
            self, features, entity_rows, feature_service=feature_service,
            full_feature_names=full_feature_names, now=now, request_data=request_data,
        )  # fmt: skip
        if self._serving_log is not None and response.read_time is not None:
            self._serving_log.record(
                response, response.read_time, features, feature_service, full_feature_names
            )
        if transformed:
            response = self.transform_response(response, feature_service, transforms_version)
        return response

    def transform_response(self, response: OnlineResponse, feature_service: str | None, version: int | None = None) -> OnlineResponse:  # fmt: skip
        """An online response with the feature service's fitted transforms applied."""
        from almanac.online.fitted import transformed

        chosen, columns = self._fitted_entry(_service_of(feature_service), version)
        return transformed(response, chosen.fitted, columns)

    @cached_property
    def _serving_log(self) -> ServingLog | None:
        """The SDK's own serving log (`online.log_sample_rate`; off by default)."""
        rate = self.config.online.log_sample_rate
        if rate <= 0:
            return None
        from almanac.quality.parquet_log import retention_of
        from almanac.quality.serving_log import ServingLog, log_folder

        keep = retention_of(self.config.offline.log_retention_days)
        return ServingLog(log_folder(self.config), rate, retention=keep)

    def get_context(
        self,
        feature_service: str,
        entity: dict[str, Any],
        *,
        placeholder: str | None = None,
        request_data: dict[str, Any] | None = None,
    ) -> Context:
        """One entity's features rendered by the service's prompt template (or a plain
        `name: value` list when it has none), for an LLM; `request_data` gives the request
        fields of its on-demand features."""
        from almanac.online.context import check_entity, render_context

        check_entity(entity)
        service = self.catalog.service(feature_service)
        response = self.get_online_features(
            entity_rows=[dict(entity)], feature_service=feature_service, request_data=request_data
        )
        missing = self.config.server.missing_placeholder if placeholder is None else placeholder
        return render_context(service, entity, response, missing)

    # ---- ingestion -----------------------------------------------------------------------

    def push(
        self,
        push_source: str,
        df: Any,
        to: str = "online_and_offline",
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """Validate rows sent to a push source and write them (all or nothing) to the
        online store, the offline store, or both (`to`: online | offline |
        online_and_offline). The default writes both, so training sets see what was
        served; an online-only push is outside the no-skew guarantee. Returns the number
        of rows accepted. A push retried with the same `idempotency_key` counts once."""
        from almanac.ingest.push import push
        from almanac.repo import guard_writes

        guard_writes("push")
        actions = {"online": ["write_online"], "offline": ["write_offline"]}.get(to, ["write_online", "write_offline"])  # fmt: skip
        with self._guard.operation(self.catalog, "push", actions, lambda policy: [policy.source_target(push_source)], source=push_source, to=to) as notes:  # fmt: skip
            notes["rows"] = push(self, push_source, df, to, idempotency_key=idempotency_key)
        return int(notes["rows"])

    def compact(
        self,
        sources: Sequence[str] | None = None,
        *,
        min_age: timedelta | str = "1m",
        grace: timedelta | str = "10m",
    ) -> list[Compaction]:
        """Merge the small files of push and stream sources' offline logs (default: every
        push source) into one per run, in order: training sets are unchanged, and read
        fewer files. Files younger than `min_age` wait; replaced files are deleted by a
        compaction `grace` later (a query may still be reading them)."""
        from almanac.offline.compaction import compact

        catalog = self.catalog
        names = list(sources) if sources else [
            name for name, source in catalog.sources.items() if isinstance(source, PushSource)
        ]  # fmt: skip
        results = []
        for name in names:
            source = catalog.sources.get(name)
            if source is None:
                raise NotFoundError("source", name, catalog.sources)
            if not isinstance(source, PushSource):
                raise InputError(
                    f"source '{name}' is a {type(source).__name__}; only push and stream "
                    "sources' offline logs are Almanac's to compact"
                )
            target = functools.partial(_source_targets, name=name)
            with self._guard.operation(catalog, "compact", ["write_offline"], target, source=name) as notes:  # fmt: skip
                done = compact(self.config, source, min_age=_duration(min_age, "min_age"), grace=_duration(grace, "grace"))  # fmt: skip
                notes["rows"] = done.rows
            results.append(done)
        return results

    # ---- access ------------------------------------------------------------------------

    @cached_property
    def _guard(self) -> OperationGuard:
        """Checks operations run as `access.principal`, and audits them (`audit`)."""
        from almanac.security.operations import OperationGuard

        return OperationGuard(self.config)

    def close(self) -> None:
        for name in ("_serving_log", "_guard", "online", "offline", "registry"):
            backend = self.__dict__.pop(name, None)
            if backend is not None:
                backend.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _on_demand_plan(catalog: Catalog, refs: list[FeatureRef]) -> OnDemandPlan | None:
    if not catalog.on_demand_views:  # the planner brings pyarrow: only when needed
        return None
    from almanac.transforms.ondemand import plan_on_demand

    return plan_on_demand(catalog, refs)


def _service_of(feature_service: str | None) -> str:
    if feature_service is None:
        raise InputError("transformed=True applies a feature service's transforms: pass feature_service=")  # fmt: skip
    return feature_service


def _source_targets(policy: AccessPolicy, name: str) -> list[Target]:
    return [policy.source_target(name)]


def _applied(policy: AccessPolicy, plan: Plan) -> list[Target]:
    """What an apply changes, as targets (deleted objects as they were)."""
    targets = []
    for change in plan.changes:
        known = plan.target.of_kind(change.kind).get(change.name) or plan.base.of_kind(change.kind).get(change.name)  # fmt: skip
        targets.append(policy.definition_target(change.kind, change.name, known))
    return targets


def _duration(value: timedelta | str, name: str) -> timedelta:
    from almanac.definitions import parse_duration

    try:
        return parse_duration(value)
    except ValueError as error:
        raise InputError(f"{name}: {error}") from None
