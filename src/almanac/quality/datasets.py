"""Saved training sets: `get_historical_features(..., save_as="churn_train_v3")`.

A saved dataset keeps what a model was trained on, so that later data can be compared
with it (`almanac drift VIEW --reference-dataset NAME`): the training set itself (the
spine's columns and the feature values, Parquet), the features asked for, the registry
version the set was built under, and the statistics of each feature column
(`almanac.quality.statistics`), computed once when it is saved.

It lives in `<data_path>/.datasets/<name>/` (a hidden folder: no source scans it):
`data.parquet` and `dataset.json`. A dataset is written whole into a temporary folder
and renamed into place, so a failure leaves nothing behind, and a name is never
overwritten: a model's reference does not change under it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.errors import InputError, NotFoundError
from almanac.ports.retrieval import RetrievalJob
from almanac.quality.statistics import describe
from almanac.registry.catalog import FeatureRef

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DATA, META = "data.parquet", "dataset.json"


def datasets_folder(config: RepoConfig) -> Path:
    return config.resolve_path(config.offline.data_path) / ".datasets"


@dataclass
class DatasetFeature:
    ref: str  # "view:feature"
    column: str  # its column in the data (the output name)
    dtype: str


@dataclass
class SavedDataset:
    name: str
    created_at: str  # ISO 8601, UTC
    project: str
    registry_version: int
    feature_service: str | None
    timestamp_field: str
    rows: int
    features: list[DatasetFeature]
    statistics: list[dict[str, Any]] = field(default_factory=list)
    path: str = ""  # the data file (not stored: where it is now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def columns_of(self, view: str) -> dict[str, str]:
        """The data's columns holding `view`'s features: column → feature name."""
        return {f.column: f.ref.split(":", 1)[1] for f in self.features if f.ref.split(":", 1)[0] == view}  # fmt: skip

    def read(self, columns: list[str] | None = None) -> pa.Table:
        table: pa.Table = pq.read_table(self.path, columns=columns, memory_map=True)
        return table


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"dataset name {name!r}: use letters, digits, '_', '.' and '-' "
            "(at most 128, not starting with '.' or '-')"
        )
    return name


def save(
    config: RepoConfig,
    name: str,
    job: RetrievalJob,
    refs: list[FeatureRef],
    *,
    project: str,
    registry_version: int,
    feature_service: str | None,
    timestamp_field: str,
) -> tuple[SavedDataset, RetrievalJob]:
    """Compute `job`, keep it as the dataset `name`, and hand back a job over the saved
    rows (the same result, read from disk)."""
    check_name(name)
    root = datasets_folder(config)
    final = root / name
    if final.exists():
        raise InputError(f"a dataset named '{name}' is already saved ({final}); pick another name")  # fmt: skip
    temp = root / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        job.to_parquet(temp / DATA)
        columns = [ref.output_name for ref in refs]
        table = pq.read_table(temp / DATA, columns=columns, memory_map=True)
        statistics = describe(table, {ref.output_name: ref.field.dtype for ref in refs}) if refs else []  # fmt: skip
        dataset = SavedDataset(
            name=name,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            project=project,
            registry_version=registry_version,
            feature_service=feature_service,
            timestamp_field=timestamp_field,
            rows=table.num_rows,
            features=[DatasetFeature(r.ref, r.output_name, r.field.dtype) for r in refs],
            statistics=[s.to_dict() for s in statistics],
        )
        meta = {k: v for k, v in dataset.to_dict().items() if k != "path"}
        (temp / META).write_text(json.dumps(meta, indent=2, default=str))
        try:
            os.rename(temp, final)  # fails if another process saved the name meanwhile
        except OSError:
            raise InputError(f"a dataset named '{name}' is already saved ({final}); pick another name") from None  # fmt: skip
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    dataset.path = str(final / DATA)
    return dataset, _job_over(dataset, job)


def _job_over(dataset: SavedDataset, job: RetrievalJob) -> RetrievalJob:
    table = dataset.read()
    features = job.feature_schema
    entities = table.drop_columns(features.names)
    rows = table.select(features.names)
    return RetrievalJob(entities, features, lambda batch_rows: pa.RecordBatchReader.from_batches(features, rows.to_batches(batch_rows)))  # fmt: skip


def load(config: RepoConfig, name: str) -> SavedDataset:
    check_name(name)
    folder = datasets_folder(config) / name
    meta = folder / META
    if not meta.is_file():
        raise NotFoundError("dataset", name, [d.name for d in listed(config)])
    data = json.loads(meta.read_text())
    data["features"] = [DatasetFeature(**f) for f in data["features"]]
    return SavedDataset(**data, path=str(folder / DATA))


def listed(config: RepoConfig) -> list[SavedDataset]:
    """Every saved dataset, newest first."""
    root = datasets_folder(config)
    if not root.is_dir():
        return []
    found = [load(config, p.name) for p in root.iterdir() if (p / META).is_file() and not p.name.startswith(".")]  # fmt: skip
    return sorted(found, key=lambda d: d.created_at, reverse=True)


def delete(config: RepoConfig, name: str) -> None:
    dataset = load(config, name)  # NotFoundError if there is none
    shutil.rmtree(Path(dataset.path).parent)
