"""A feature service's fitted transforms, end to end: fitted on a training set, stored
as registry versions, applied the same offline, in the SDK and over HTTP (bit-equal
matrices), with out-of-fold target encoding on the very rows they were fitted on,
unseen categories, refits as new versions, and a changed definition refused until
refitted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.errors import DefinitionError, InputError
from almanac.serving.app import create_app

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
FEATURES_PY = """
from almanac import (Entity, FeatureService, FeatureView, Field, Float64, Impute, Int64, OneHot,
                     PushSource, StandardScaler, String, TargetEncoder)

customer = Entity(name="customer", join_keys=["customer_id"], dtype=Int64)
stats = FeatureView(name="stats", entities=[customer], source=PushSource(name="events"),
                    schema=[Field("amount", Float64), Field("tier", String), Field("city", String)])
fraud = FeatureService(name="fraud", features=[stats], transforms=[
    Impute("stats:amount", strategy="median"), StandardScaler("stats:amount"),
    OneHot("stats:tier"), TargetEncoder("stats:city", target="is_fraud", folds=3)])
"""
CUSTOMERS = 30


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    (tmp_path / "almanac.yaml").write_text("project: fitted\n")
    (tmp_path / "features.py").write_text(FEATURES_PY)
    rng = np.random.default_rng(7)
    ids = list(range(1, CUSTOMERS + 1))
    amounts = [None if i % 7 == 0 else float(v) for i, v in zip(ids, rng.normal(100, 30, CUSTOMERS), strict=True)]  # fmt: skip
    with FeatureStore(tmp_path) as made:
        made.apply()
        made.push("events", {
            "customer_id": ids, "event_timestamp": [T0] * CUSTOMERS, "amount": amounts,
            "tier": [["gold", "silver", "bronze", None][i % 4] for i in ids],
            "city": [["paris", "lyon", "nice"][i % 3] for i in ids],
        })  # fmt: skip
        yield made


def labels(at: datetime, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, CUSTOMERS + 1, 60)
    return pd.DataFrame({"customer_id": ids, "event_timestamp": [at] * len(ids), "is_fraud": rng.integers(0, 2, len(ids))})  # fmt: skip


def test_offline_online_and_http_apply_the_same_fit(store: FeatureStore) -> None:
    train = labels(T0 + timedelta(hours=1))
    training = store.get_historical_features(train, feature_service="fraud").to_pandas()
    fitted = store.fit_transforms("fraud", training)
    assert fitted.version == 1
    # Other rows (later, as a model is served): the full-data encoding, the same matrix
    # offline as online for each customer, over HTTP too.
    ids = list(range(1, CUSTOMERS + 1))
    later = pd.DataFrame({"customer_id": ids, "event_timestamp": [T0 + timedelta(days=1)] * len(ids)})  # fmt: skip
    offline = store.get_historical_features(later, feature_service="fraud", transformed=True)
    online = store.get_online_features(feature_service="fraud", entity_rows=[{"customer_id": i} for i in ids], transformed=True)  # fmt: skip
    assert offline.columns == online.columns
    # The one-hot columns stand where the feature stood, the unknown bucket last.
    assert online.columns[0] == "amount" and online.columns[-2:] == ["tier=__unknown__", "city"]
    assert sorted(online.columns[1:4]) == ["tier=bronze", "tier=gold", "tier=silver"]
    assert np.array_equal(offline.to_numpy(), online.to_numpy())
    scaled = online.to_numpy()[:, 0]
    assert not np.isnan(scaled).any()  # imputed, then scaled
    assert abs(scaled.mean()) < 1.0
    with TestClient(create_app(store.repo_path)) as client:
        answer = client.post("/get-online-features", json={"feature_service": "fraud", "entities": {"customer_id": ids}, "transformed": True})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    http = {n: r["values"] for n, r in zip(body["metadata"]["feature_names"], body["results"], strict=True)}  # fmt: skip
    for i, name in enumerate(online.columns):
        assert http[name] == list(online.to_numpy()[:, i]), name
    # Null tier is unknown: the unknown column is 1 for it.
    tiers = store.get_online_features(["stats:tier"], [{"customer_id": i} for i in ids]).to_dict()["tier"]  # fmt: skip
    unknown = online.to_dict()["tier=__unknown__"]
    assert unknown == [1.0 if t is None else 0.0 for t in tiers]


def test_target_encoding_is_out_of_fold_on_the_training_rows(store: FeatureStore) -> None:
    train = labels(T0 + timedelta(hours=1))
    training = store.get_historical_features(train, feature_service="fraud").to_pandas()
    store.fit_transforms("fraud", training)
    on_training = store.get_historical_features(train, feature_service="fraud", transformed=True).to_pandas()  # fmt: skip
    # The same rows in another order are other rows: they get the full-data encoding.
    shuffled = train.iloc[::-1].reset_index(drop=True)
    elsewhere = store.get_historical_features(shuffled, feature_service="fraud", transformed=True).to_pandas()[::-1].reset_index(drop=True)  # fmt: skip
    assert (on_training["amount"] == elsewhere["amount"]).all()  # only target encoders differ
    assert not np.array_equal(on_training["city"].to_numpy(), elsewhere["city"].to_numpy())
    # Out of fold by hand: row i's encoding is learned from the rows of the other folds.
    smoothing, folds = 10.0, 3
    y = train["is_fraud"].to_numpy(dtype=float)
    cities = training["city"].to_numpy()
    for i in range(len(train)):
        others = np.arange(len(train)) % folds != i % folds
        prior = y[others].mean()
        same = others & (cities == cities[i])
        expected = (y[same].sum() + smoothing * prior) / (same.sum() + smoothing)
        assert on_training["city"][i] == pytest.approx(expected, rel=1e-12)
    # Streaming the training set in batches gives the same values.
    streamed = store.get_historical_features(train, feature_service="fraud", transformed=True).to_arrow_batches(7).read_all()  # fmt: skip
    assert streamed.column("city").to_pylist() == on_training["city"].tolist()


def test_refits_are_versions_and_edits_need_a_refit(store: FeatureStore) -> None:
    first = store.get_historical_features(labels(T0 + timedelta(hours=1)), feature_service="fraud").to_pandas()  # fmt: skip
    second = first.assign(is_fraud=1 - first["is_fraud"])
    assert store.fit_transforms("fraud", first).version == 1
    assert store.fit_transforms("fraud", second).version == 2
    rows = [{"customer_id": 3}]
    latest = store.get_online_features(feature_service="fraud", entity_rows=rows, transformed=True).to_dict()  # fmt: skip
    v2 = store.get_online_features(feature_service="fraud", entity_rows=rows, transformed=True, transforms_version=2).to_dict()  # fmt: skip
    v1 = store.get_online_features(feature_service="fraud", entity_rows=rows, transformed=True, transforms_version=1).to_dict()  # fmt: skip
    assert latest == v2
    assert v1["city"] != v2["city"] and v1["amount"] == v2["amount"]
    with pytest.raises(InputError, match="has no fitted transforms of version 3"):
        store.get_online_features(feature_service="fraud", entity_rows=rows, transformed=True, transforms_version=3)  # fmt: skip
    # An unseen category after the fit: the unknown column, and the prior.
    store.push("events", {"customer_id": [99], "event_timestamp": [T0], "amount": [1.0], "tier": ["platinum"], "city": ["oslo"]})  # fmt: skip
    unseen = store.get_online_features(feature_service="fraud", entity_rows=[{"customer_id": 99}], transformed=True).to_dict()  # fmt: skip
    assert unseen["tier=__unknown__"] == [1.0] and unseen["tier=gold"] == [0.0]
    assert unseen["city"] == [pytest.approx(second["is_fraud"].mean())]
    # Another transform in the service: the stored fit no longer matches it.
    features = store.repo_path / "features.py"
    features.write_text(features.read_text().replace('OneHot("stats:tier")', 'OneHot("stats:tier", max_categories=2)'))  # fmt: skip
    store.apply()
    with pytest.raises(InputError, match="changed since version 2 was fitted; fit them again"):
        store.get_online_features(feature_service="fraud", entity_rows=rows, transformed=True)


def test_bad_transform_definitions_are_refused_at_plan(tmp_path: Path) -> None:
    (tmp_path / "almanac.yaml").write_text("project: fitted\n")
    (tmp_path / "features.py").write_text(FEATURES_PY.replace('StandardScaler("stats:amount")', 'StandardScaler("stats:amont")'))  # fmt: skip
    with FeatureStore(tmp_path) as store, pytest.raises(DefinitionError, match="unknown feature of the service 'stats:amont'"):  # fmt: skip
        store.plan()
