"""On-demand features and fitted transforms on a training set: a `DerivedJob` over the
engine's job, batch by batch (`almanac.ports.retrieval`), so that no engine needs to
know either, and the Arrow result stays lazy until asked for."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from almanac.ports.offline import ExpressionEvaluator
from almanac.ports.retrieval import DerivedJob, RetrievalJob
from almanac.transforms.artifacts import FittedVersion, fingerprint
from almanac.transforms.fitted import apply
from almanac.transforms.ondemand import OnDemandPlan, offline_derivation


def with_on_demand(
    job: RetrievalJob,
    plan: OnDemandPlan,
    evaluator: ExpressionEvaluator | None,
    repo_path: Path | None,
) -> RetrievalJob:
    """`job` (stored features under working names) with the on-demand features computed
    on its rows: the requested features, in order."""
    entity_columns = job.schema.names[: len(job.schema) - len(job.feature_schema)]
    schema, derive = offline_derivation(plan, entity_columns, evaluator, repo_path)
    return DerivedJob(job, schema, derive)


def transformed(
    job: RetrievalJob, chosen: FittedVersion, columns: dict[str, str], timestamp_field: str
) -> RetrievalJob:
    """`job` with a service's fitted transforms applied to its features. On the very rows
    they were fitted on (the identity columns hash to the fit's fingerprint), target
    encoders give out-of-fold values: then the job is computed whole, as folds follow
    row positions."""
    entities = job.schema.names[: len(job.schema) - len(job.feature_schema)]
    identity = list(chosen.identity)
    same_rows = all(c in entities for c in identity) and fingerprint(job.entity_table, identity, timestamp_field) == chosen.fingerprint  # fmt: skip
    features = job.feature_schema
    schema = apply(chosen.fitted, features.empty_table(), columns).schema

    def derive(table: pa.Table, offset: int) -> pa.Table:
        return apply(chosen.fitted, table.select(features.names), columns, out_of_fold=same_rows)  # fmt: skip

    return DerivedJob(job, schema, derive, whole=same_rows)
