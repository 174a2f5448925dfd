"""Rule 5 across definition edits (issue 11, item 1): after any edit of a feature repo,
`apply` + `materialize_incremental(N)` leave every online value equal to
`get_historical_features` at (entity, N) — for a plain FeatureView and an
AggregationView, on SQLite and on a real Redis.

An edit that can change a view's values (the source object it reads, that source's
path, query or time columns, its features, dtypes, transformation, aggregations, tile,
or `online`) clears what the online store holds for the view in the same apply; an edit
that cannot (description, owner and tags of a view, a field or a source; TTL; cadence)
keeps it, watermark included."""

from __future__ import annotations

import copy
import itertools
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac.errors import InputError
from almanac.ports.online import Watermark
from almanac.starter import create_starter_repo
from almanac.store import FeatureStore
from conftest import assert_online_equals_historical

BASE = datetime(2025, 3, 1, tzinfo=UTC)
ACCOUNTS = [1, 2, 3, 4]  # account 4 never has a row
MINUTES = [0, 10, 30, 60, 90, 120, 150, 180, 240]
FILES = ("a", "b", "c")  # data/a.parquet, data/b.parquet, data/c.parquet: different rows

# ---- the repo: a state rendered as features.py ------------------------------------------

SQL_QUERIES = [
    "SELECT * FROM read_parquet('data/a.parquet')",
    "SELECT * REPLACE (score * 2 AS score) FROM read_parquet('data/a.parquet')",
    "SELECT * REPLACE ('v2_' || label AS label) FROM read_parquet('data/b.parquet')",
]
FILE_PATHS = {"fa": ["data/a.parquet", "data/c.parquet"], "fb": ["data/b.parquet"]}
TIMESTAMPS = ["event_timestamp", "alt_ts"]
CREATED = [None, "created", "created2"]
# What a plain view may declare for each column (what DuckDB casts the data to).
DTYPES = {
    "score": ["Float64", "Float32", "Int64", "String"],
    "amount": ["Float64", "Float32"],
    "count": ["Int64", "Int32", "Float64", "String"],
    "label": ["String"],
}
VIEW_TRANSFORMATIONS = [
    None,
    "SELECT * REPLACE (score + 1 AS score) FROM source",
    "SELECT * FROM source WHERE count IS NULL OR count % 2 = 0",
]
AGG_TRANSFORMATIONS = [
    None,
    "SELECT * REPLACE (amount + 1 AS amount) FROM source",
    "SELECT * FROM source WHERE account_id <> 2",
]
# The aggregations an AggregationView may hold: (function, column) → window choices.
AGGREGATIONS = [
    ("count", None, [["1h", "1d"], ["30m"], ["2h"]]),
    ("sum", "amount", [["30m", "2h"], ["1d"]]),
    ("max", "score", [["1h"], ["30m", "1d"]]),
    ("count_distinct", "label", [["1d"], ["1h"]]),
    ("last", "label", [["2h"], ["30m"]]),
    ("sum", "count", [["1h"], ["1d"]]),
    ("mean", "amount", [["1d"], ["2h"]]),
    ("min", "score", [["30m", "1d"], ["1h"]]),
]
DOCS = [
    {"description": "", "owner": "", "tags": {}},
    {"description": "Edited.", "owner": "ml@example.com", "tags": {"team": "ml"}},
    {"description": "Edited again.", "owner": "", "tags": {"tier": "gold"}},
]
TTLS = ["30m", "2h", "1d"]  # the view's TTL: None or an index here

INITIAL: dict[str, Any] = {
    "sources": {
        "fa": {"path": 0, "ts": 0, "created": 1, "doc": 0},
        "fb": {"path": 0, "ts": 0, "created": 0, "doc": 0},
        "sq": {"query": 0, "ts": 0, "created": 1, "doc": 0},
    },
    "fv": {
        "source": "fa",
        "schema": {"score": "Float64", "label": "String"},
        "ttl": None,
        "transformation": 0,
        "online": True,
        "doc": 0,
        "field_doc": 0,
        "cadence": None,
    },
    "agg": {
        "source": "fb",
        "aggregations": {0: 0, 1: 0},  # index in AGGREGATIONS → window choice
        "count_dtype": "Int64",
        "tile": None,
        "transformation": 0,
        "online": True,
        "doc": 0,
        "cadence": None,
    },
}

HEADER = """\
from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, FileSource,
                     Float32, Float64, Int32, Int64, SqlSource, String)

account = Entity(name="account", join_keys=["account_id"], dtype=Int64)
"""


def _doc(index: int) -> str:
    doc = DOCS[index]
    return f"description={doc['description']!r}, owner={doc['owner']!r}, tags={doc['tags']!r}"


def render(state: dict[str, Any]) -> str:
    lines = [HEADER]
    for name, source in state["sources"].items():
        times = (
            f"timestamp_field={TIMESTAMPS[source['ts']]!r}, "
            f"created_timestamp_field={CREATED[source['created']]!r}, {_doc(source['doc'])}"
        )
        if name == "sq":
            lines.append(f"{name} = SqlSource(name={name!r}, query={SQL_QUERIES[source['query']]!r}, {times})")  # fmt: skip
        else:
            path = FILE_PATHS[name][source["path"]]
            lines.append(f"{name} = FileSource(name={name!r}, path={path!r}, {times})")
    fv = state["fv"]
    field_doc = DOCS[fv["field_doc"]]["description"]
    schema = ", ".join(
        f"Field({f!r}, {d}, description={field_doc!r})" for f, d in fv["schema"].items()
    )
    ttl = None if fv["ttl"] is None else TTLS[fv["ttl"]]
    lines.append(
        f"fv = FeatureView(name='fv', entities=[account], source={fv['source']}, "
        f"schema=[{schema}], ttl={ttl!r}, online={fv['online']}, "
        f"materialize_every={fv['cadence']!r}, "
        f"transformation={VIEW_TRANSFORMATIONS[fv['transformation']]!r}, {_doc(fv['doc'])})"
    )
    agg = state["agg"]
    aggregations = ", ".join(
        f"Aggregation(function={AGGREGATIONS[i][0]!r}, column={AGGREGATIONS[i][1]!r}, "
        f"windows={AGGREGATIONS[i][2][w]!r})"
        for i, w in sorted(agg["aggregations"].items())
    )
    columns = (
        f"[Field('amount', Float64), Field('score', Float64), "
        f"Field('count', {agg['count_dtype']}), Field('label', String)]"
    )
    lines.append(
        f"agg = AggregationView(name='agg', entities=[account], source={agg['source']}, "
        f"aggregations=[{aggregations}], columns={columns}, tile={agg['tile']!r}, "
        f"online={agg['online']}, materialize_every={agg['cadence']!r}, "
        f"transformation={AGG_TRANSFORMATIONS[agg['transformation']]!r}, {_doc(agg['doc'])})"
    )
    return "\n".join(lines) + "\n"


# ---- edits: (name, k) → a new state; k picks among the choices --------------------------


def _other(choices: list[Any], current: Any, k: int) -> Any:
    others = [c for c in choices if c != current]
    return others[k % len(others)]


def _edit_view_source(state: dict[str, Any], view: str, k: int) -> None:
    state[view]["source"] = _other(["fa", "fb", "sq"], state[view]["source"], k)


def _edit_fv_add(state: dict[str, Any], k: int) -> None:
    schema = state["fv"]["schema"]
    absent = [c for c in DTYPES if c not in schema]
    if absent:
        column = absent[k % len(absent)]
        schema[column] = DTYPES[column][k % len(DTYPES[column])]


def _edit_fv_remove(state: dict[str, Any], k: int) -> None:
    schema = state["fv"]["schema"]
    if len(schema) > 1:
        del schema[list(schema)[k % len(schema)]]


def _edit_fv_rename(state: dict[str, Any], k: int) -> None:
    # A feature under another name (another column of the data), in the same place.
    schema = state["fv"]["schema"]
    absent = [c for c in DTYPES if c not in schema]
    if absent:
        old = list(schema)[k % len(schema)]
        new = absent[k % len(absent)]
        state["fv"]["schema"] = {
            (new if f == old else f): (DTYPES[new][0] if f == old else d) for f, d in schema.items()
        }


def _edit_fv_dtype(state: dict[str, Any], k: int) -> None:
    schema = state["fv"]["schema"]
    changeable = [f for f in schema if len(DTYPES[f]) > 1]
    if changeable:
        feature = changeable[k % len(changeable)]
        schema[feature] = _other(DTYPES[feature], schema[feature], k)


def _edit_agg_toggle(state: dict[str, Any], k: int) -> None:
    aggregations = state["agg"]["aggregations"]
    index = k % len(AGGREGATIONS)
    if index not in aggregations:
        aggregations[index] = 0
    elif len(aggregations) > 1:
        del aggregations[index]


def _edit_agg_windows(state: dict[str, Any], k: int) -> None:
    aggregations = state["agg"]["aggregations"]
    index = sorted(aggregations)[k % len(aggregations)]
    choices = list(range(len(AGGREGATIONS[index][2])))
    aggregations[index] = _other(choices, aggregations[index], k)


def _edit_source_field(state: dict[str, Any], source: str, field: str, k: int) -> None:
    count = {
        "path": len(FILE_PATHS.get(source, [])),
        "query": len(SQL_QUERIES),
        "ts": len(TIMESTAMPS),
        "created": len(CREATED),
        "doc": len(DOCS),
    }[field]
    spec = state["sources"][source]
    spec[field] = _other(list(range(count)), spec[field], k)


def _cycle(view: str, field: str, choices: list[Any]) -> Any:
    """An edit that sets a view's `field` to another of `choices`."""

    def edit(state: dict[str, Any], k: int) -> None:
        state[view][field] = _other(choices, state[view][field], k)

    return edit


def _source(source: str, field: str) -> Any:
    return lambda state, k: _edit_source_field(state, source, field, k)


# Each edit: (what it does to the state, whether it may change the values a view serves).
VALUE_EDITS = {
    "fv.source": lambda s, k: _edit_view_source(s, "fv", k),
    "fv.add_feature": _edit_fv_add,
    "fv.remove_feature": _edit_fv_remove,
    "fv.rename_feature": _edit_fv_rename,
    "fv.dtype": _edit_fv_dtype,
    "fv.transformation": _cycle("fv", "transformation", [0, 1, 2]),
    "fv.online": _cycle("fv", "online", [True, False]),
    "agg.source": lambda s, k: _edit_view_source(s, "agg", k),
    "agg.aggregation": _edit_agg_toggle,
    "agg.windows": _edit_agg_windows,
    "agg.column_dtype": _cycle("agg", "count_dtype", ["Int64", "Float64"]),
    "agg.tile": _cycle("agg", "tile", [None, "30m"]),
    "agg.transformation": _cycle("agg", "transformation", [0, 1, 2]),
    "agg.online": _cycle("agg", "online", [True, False]),
    "fa.path": _source("fa", "path"),
    "sq.query": _source("sq", "query"),
    **{f"{s}.{f}": _source(s, f) for s in ("fa", "fb", "sq") for f in ("ts", "created")},
}
COSMETIC_EDITS = {
    "fv.doc": _cycle("fv", "doc", [0, 1, 2]),
    "fv.field_doc": _cycle("fv", "field_doc", [0, 1, 2]),
    "fv.ttl": _cycle("fv", "ttl", [None, 0, 1, 2]),
    "fv.cadence": _cycle("fv", "cadence", [None, "1h", "1d"]),
    "agg.doc": _cycle("agg", "doc", [0, 1, 2]),
    "agg.cadence": _cycle("agg", "cadence", [None, "1h", "1d"]),
    **{f"{s}.doc": _source(s, "doc") for s in ("fa", "fb", "sq")},
}
EDITS: dict[str, tuple[Any, bool]] = {
    **{name: (edit, True) for name, edit in VALUE_EDITS.items()},
    **{name: (edit, False) for name, edit in COSMETIC_EDITS.items()},
}


def edited(state: dict[str, Any], edit: str, k: int) -> dict[str, Any]:
    new = copy.deepcopy(state)
    EDITS[edit][0](new, k)
    return new


# ---- data -------------------------------------------------------------------------------

QUARTERS = st.integers(-32, 32).map(lambda q: q / 4)  # sums of these are exact
row = st.fixed_dictionaries({
    "account_id": st.sampled_from(ACCOUNTS[:-1]),
    "minute": st.sampled_from(MINUTES),
    "alt_minute": st.sampled_from(MINUTES),
    "created_minute": st.one_of(st.none(), st.sampled_from([0, 1, 2])),
    "created2_minute": st.one_of(st.none(), st.sampled_from([0, 1])),
    "score": st.one_of(st.none(), QUARTERS),
    "amount": st.one_of(st.none(), QUARTERS),
    "count": st.one_of(st.none(), st.integers(-50, 50)),
    "label": st.one_of(st.none(), st.text("ab", max_size=2)),
})  # fmt: skip


def _minutes(values: list[int | None]) -> pa.Array:
    return pa.array(
        [None if m is None else BASE + timedelta(minutes=m) for m in values],
        pa.timestamp("us", tz="UTC"),
    )


def write_data(repo: Path, files: dict[str, list[dict[str, Any]]]) -> None:
    for name, rows in files.items():
        table = pa.table({
            "account_id": pa.array([r["account_id"] for r in rows], pa.int64()),
            "event_timestamp": _minutes([r["minute"] for r in rows]),
            "alt_ts": _minutes([r["alt_minute"] for r in rows]),
            "created": _minutes([r["created_minute"] for r in rows]),
            "created2": _minutes([r["created2_minute"] for r in rows]),
            "score": pa.array([r["score"] for r in rows], pa.float64()),
            "amount": pa.array([r["amount"] for r in rows], pa.float64()),
            "count": pa.array([r["count"] for r in rows], pa.int64()),
            "label": pa.array([r["label"] for r in rows], pa.string()),
        })  # fmt: skip
        pq.write_table(table, repo / "data" / f"{name}.parquet")


# ---- the repo and the check ---------------------------------------------------------------

_projects = itertools.count()


@dataclass
class Repo:
    path: Path
    store: FeatureStore

    def write(self, state: dict[str, Any]) -> None:
        (self.path / "features.py").write_text(render(state))
        # Two edits of the same size within one second would otherwise import a stale .pyc.
        shutil.rmtree(self.path / "__pycache__", ignore_errors=True)

    def watermarks(self) -> dict[str, Watermark]:
        return self.store.online.watermarks(self.store.project)


def make_repo(folder: Path, online_url: str) -> Repo:
    """A fresh repo folder and registry, and a project of its own in the online store."""
    project = f"edits_{next(_projects)}"
    path = folder / project
    (path / "data").mkdir(parents=True)
    (path / "almanac.yaml").write_text(
        f"project: {project}\nregistry:\n  refresh_seconds: 0\n"
        f"online:\n  url: {online_url}\n  batch_size: 3\ndefinitions:\n  - features.py\n"
    )
    return Repo(path, FeatureStore(path))


def assert_offline_views_refused(store: FeatureStore) -> None:
    for view in store.catalog.all_views().values():
        if not view.online:
            feature = f"{view.name}:{view.feature_names[0]}"
            with pytest.raises(InputError, match="online=False"):
                store.get_online_features([feature], {"account_id": [1]})


def apply(repo: Repo, state: dict[str, Any], cosmetic: bool, context: str) -> None:
    before = repo.watermarks()
    repo.write(state)
    repo.store.apply()
    if cosmetic:
        # Documentation, TTL and cadence do not change what the store holds: nothing is
        # cleared, and the watermarks keep their time and their definition's fingerprint.
        assert repo.watermarks() == before, context


def materialize_and_check(repo: Repo, end: datetime, context: str) -> None:
    repo.store.materialize_incremental(end)
    assert_online_equals_historical(repo.store, end, {"account_id": ACCOUNTS}, context)
    assert_offline_views_refused(repo.store)


def step(repo: Repo, state: dict[str, Any], cosmetic: bool, end: datetime, context: str) -> None:
    """Apply `state`, materialize incrementally to `end`, check rule 5 at `end`."""
    apply(repo, state, cosmetic, context)
    materialize_and_check(repo, end, context)


# ---- the property -------------------------------------------------------------------------

SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
files = st.fixed_dictionaries({name: st.lists(row, min_size=1, max_size=8) for name in FILES})
edits = st.lists(
    st.tuples(st.sampled_from(sorted(EDITS)), st.integers(0, 5), st.sampled_from([0, 0, 30, 90])),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(data=files, first=st.sampled_from(MINUTES), edits=edits)
def test_online_equals_historical_after_every_definition_edit(
    tmp_path: Path,
    online_url: str,
    data: dict[str, list[dict[str, Any]]],
    first: int,
    edits: list[tuple[str, int, int]],
) -> None:
    repo = make_repo(tmp_path, online_url)
    try:
        write_data(repo.path, data)
        state, end = INITIAL, BASE + timedelta(minutes=first)
        step(repo, state, False, end, "initial")
        for number, (edit, k, advance) in enumerate(edits):
            # N stays put (the strictest case: nothing new to read) or moves on.
            state, end = edited(state, edit, k), end + timedelta(minutes=advance)
            step(repo, state, not EDITS[edit][1], end, f"after edit {number} {edit}({k})")
    finally:
        repo.store.close()


# ---- every edit once, on data where each one changes the values ---------------------------


def _fixed_row(
    offset: float, a: int, m: int, c: int, score: float | None, n: int, label: str | None
) -> dict[str, Any]:
    return {
        "account_id": a, "minute": m, "alt_minute": 240 - m, "created_minute": c,
        "created2_minute": 1 - c, "score": None if score is None else score + offset,
        "amount": None if score is None else score * 2 + offset, "count": n + int(offset),
        "label": label,
    }  # fmt: skip


# Two timestamp columns that order the rows differently, created times that break the
# event-time ties differently, values that every transformation and dtype moves, an
# event off the 30-minute tiles; the three files differ by an offset.
FIXED_ROWS = {
    name: [
        _fixed_row(offset, *values)
        for values in [
            (1, 0, 0, 1.25, 1, "a"), (1, 60, 1, -2.5, 2, "b"), (1, 60, 0, 3.75, 3, "ab"),
            (2, 30, 1, 0.5, 4, "ba"), (2, 30, 0, 7.25, 5, None), (2, 135, 0, None, 6, "a"),
            (3, 90, 0, 4.0, 7, "bb"), (3, 180, 1, -1.0, 8, "b"), (3, 180, 0, 2.0, 9, "a"),
        ]
    ]
    for name, offset in (("a", 0.0), ("b", 10.0), ("c", 20.0))
}  # fmt: skip
FIXED_END = BASE + timedelta(minutes=200)


def _historical(store: FeatureStore) -> pa.Table:
    views = list(store.catalog.all_views().values())
    features = [f"{v.name}:{f}" for v in views for f in v.feature_names]
    spine = pa.table({
        "account_id": pa.array(ACCOUNTS, pa.int64()),
        "event_timestamp": pa.array([FIXED_END] * len(ACCOUNTS), pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    return store.get_historical_features(spine, features, full_feature_names=True).to_arrow()


# Before an edit of a source, both views read it (the aggregation ignores created times:
# the plain view shows their edits); the choice of each edit that moves the fixed data.
PREPARE = {
    "sq": [("fv.source", 1), ("agg.source", 1)],
    "fb": [("fv.source", 0)],
    "agg.column_dtype": [("agg.aggregation", 5)],  # `sum` of the retyped column
}
CHOICE = {"fv.dtype": 2}  # Float64 → String (quarters are exact in Float32 too)


def _edited_views(state: dict[str, Any], edit: str) -> set[str]:
    """The views an edit is about: the view it names, or those reading the source."""
    target = edit.split(".")[0]
    if target in ("fv", "agg"):
        return {target}
    return {view for view in ("fv", "agg") if state[view]["source"] == target}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_edit_alone_at_the_same_end(tmp_path: Path, online_url: str, edit: str) -> None:
    """Each edit, applied after a full materialization and followed by an incremental run
    to the same end (nothing new to read): the apply clears exactly the views whose
    values it changes (watermarks included), and online serves the edited values."""
    repo = make_repo(tmp_path, online_url)
    try:
        write_data(repo.path, FIXED_ROWS)
        state = INITIAL
        for prepare, k in PREPARE.get(edit, PREPARE.get(edit.split(".")[0], [])):
            state = edited(state, prepare, k)
        step(repo, state, False, FIXED_END, "initial")
        before, marks = _historical(repo.store), repo.watermarks()
        assert set(marks) == {"fv", "agg"}
        changed, cosmetic = edited(state, edit, CHOICE.get(edit, 0)), not EDITS[edit][1]
        assert changed != state
        apply(repo, changed, cosmetic, edit)
        if not cosmetic:
            # Cleared in the same apply; the views the edit does not touch keep theirs.
            cleared = _edited_views(state, edit)
            assert cleared
            assert repo.watermarks() == {v: m for v, m in marks.items() if v not in cleared}
        materialize_and_check(repo, FIXED_END, edit)
        if edit.endswith(".online"):  # switched off, then on again
            step(repo, state, False, FIXED_END, f"{edit} back on")
            assert set(repo.watermarks()) == {"fv", "agg"}
        elif not cosmetic:
            # The edit is observable: training data changed, so stale online data would show.
            assert not _historical(repo.store).equals(before), edit
    finally:
        repo.store.close()


# ---- the exact scenario of the issue --------------------------------------------------------

STARTER_END = datetime(2025, 6, 1, tzinfo=UTC)
V2_SOURCE = """
watch_events_v2 = SqlSource(
    name="watch_events_v2",
    query="SELECT user_id, event_timestamp, 'v2_' || genre AS last_genre FROM read_parquet('data/watch_events.parquet')",
)
"""


def test_pointing_a_view_at_another_sql_source_serves_the_new_values(
    tmp_path: Path, online_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11, item 1: the starter repo's `user_last_genre` switched to a second
    SqlSource (`'v2_' || genre`): after apply and materialize_incremental, online serves
    `v2_…`, as training sets do."""
    repo = create_starter_repo(tmp_path / "starter", users=12, events=400, end=STARTER_END)
    monkeypatch.setenv("ALMANAC_ONLINE_URL", online_url)
    with FeatureStore(repo) as store:
        store.apply()
        store.materialize_incremental(STARTER_END)
        users = sorted(
            pq.read_table(repo / "data" / "watch_events.parquet")["user_id"].unique().to_pylist()
        )
        old = store.get_online_features(
            ["user_last_genre:last_genre"], {"user_id": users}, now=STARTER_END
        )
        assert all(v is not None and not v.startswith("v2_") for v in old.values["last_genre"])

        features = repo / "features.py"
        text = features.read_text().replace(
            "\nuser_last_genre = ", V2_SOURCE + "\nuser_last_genre = "
        )
        features.write_text(text.replace("source=watch_events,", "source=watch_events_v2,"))
        plan = store.plan()
        assert "user_last_genre" in plan.views_with_stale_online_data()
        store.apply(plan)
        result = store.materialize_incremental(STARTER_END)
        assert {r.view: r.rows for r in result.runs}["user_last_genre"] == len(users)

        online = store.get_online_features(
            ["user_last_genre:last_genre"], {"user_id": users}, now=STARTER_END
        ).values["last_genre"]
        spine = pa.table({"user_id": users, "event_timestamp": [STARTER_END] * len(users)})
        offline = store.get_historical_features(spine, ["user_last_genre:last_genre"])
        assert online == offline.to_arrow().to_pydict()["last_genre"]
        assert online == [f"v2_{v}" for v in old.values["last_genre"]]
