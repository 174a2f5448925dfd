"""Request-time features: request sources and on-demand views.

Some features only exist when a prediction is asked for (the amount of the transaction
being scored) or combine such values with stored features (its ratio to the customer's
30-day average). They are declared once, here, and computed the same way offline (after
the point-in-time join, on the joined rows) and online (after the one-round-trip read):

* ``RequestSource(name="txn", schema=[Field("amount", Float64)])``: fields the caller
  sends: columns of the entity dataframe offline, `request_data` online.
* ``OnDemandView(name="ratio", sources=[txn, customer_stats],
  expressions={"amount_vs_avg": "amount / nullif(avg_amount_30d, 0)"})``: features
  computed by the expression language (`almanac.semantics.expressions`; no user Python
  at serve time). `schema` may declare the output types; otherwise they are inferred.
* ``@on_demand_view(sources=[...], schema=[...])`` on a plain function of a batch (a
  pandas DataFrame by default; `mode="arrow" | "polars" | "python"`): the function is
  referenced by import path, never pickled, and the hash of its source text is part of
  the definition, so an edit shows in `plan` and running an edited function unapplied
  is refused.

By default a view is computed whenever it is read. ``write_to_online=True`` computes it
once, when its one source feature view's rows are written online (materialization,
push, stream, write-to-online-store), and stores the result under the view's name, keyed
and timed like that view's rows; training sets still compute it after the join, with the
same code. For functions too slow to run per request.

`sources` lists request sources, feature views (every feature of the view becomes an
input column named by the feature), aggregation views and other on-demand views: a DAG
checked by the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field as PydanticField
from pydantic import PrivateAttr, field_validator, model_serializer, model_validator

from almanac.definitions.base import Definition, Name, check_name, drop_defaults
from almanac.definitions.feature_view import Field, distinct_fields
from almanac.definitions.transformations import PythonTransformation
from almanac.errors import DefinitionError

OnDemandMode = Literal["pandas", "arrow", "polars", "python"]


class RequestSource(Definition):
    """Typed fields sent with each request (and found in the entity dataframe offline)."""

    kind: ClassVar[str] = "request_source"

    name: Name
    schema_: list[Field] = PydanticField(alias="schema")
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = {}

    model_config = Definition.model_config | {"populate_by_name": True}

    @property  # shadows pydantic's deprecated `BaseModel.schema()` classmethod, on purpose
    def schema(self) -> list[Field]:  # type: ignore[override]
        return self.schema_

    @property
    def features(self) -> list[Field]:
        return self.schema_

    @field_validator("schema_")
    @classmethod
    def _schema(cls, schema: list[Field]) -> list[Field]:
        return distinct_fields(schema, "a request source", "field")


class OnDemandView(Definition):
    """Features computed at request time from request fields and other views' features.

    Exactly one of `expressions` (feature name → expression text) and `function` (a
    Python function over batches; use the `on_demand_view` decorator) says how."""

    kind: ClassVar[str] = "on_demand_view"

    name: Name
    sources: list[Name]
    schema_: list[Field] = PydanticField([], alias="schema")
    expressions: dict[str, str] = {}
    function: PythonTransformation | None = None
    # Computed when its source view's rows are written online, and stored (see above).
    write_to_online: bool = False
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = {}

    # The source objects the user passed, so that a repo loader registers them too.
    _source_objects: list[Definition] = PrivateAttr(default_factory=list)

    model_config = Definition.model_config | {"populate_by_name": True}

    def __init__(self, /, **data: Any) -> None:
        items = data.get("sources")
        objects: list[Definition] = []
        if isinstance(items, list | tuple):
            objects = [item for item in items if isinstance(item, Definition)]
            data["sources"] = [getattr(item, "name", item) for item in items]
        super().__init__(**data)
        self._source_objects = objects

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        defaults: dict[str, Any] = {
            "expressions": {},
            "function": None,
            "schema": [],
            "write_to_online": False,
        }
        return drop_defaults(handler(self), defaults)

    @property  # shadows pydantic's deprecated `BaseModel.schema()` classmethod, on purpose
    def schema(self) -> list[Field]:  # type: ignore[override]
        return self.schema_

    @property
    def source_objects(self) -> list[Definition]:
        return list(self._source_objects)

    @property
    def python_function(self) -> Callable[..., Any] | None:
        """The decorated function itself (what `function` refers to), when known here."""
        return None if self.function is None else self.function._function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A function view stays callable, so it can be tested as the plain function."""
        function = self.python_function
        if function is None:
            raise TypeError(f"on-demand view '{self.name}' is not a function view")
        return function(*args, **kwargs)

    @field_validator("sources")
    @classmethod
    def _sources(cls, sources: list[str]) -> list[str]:
        if not sources:
            raise ValueError("an on-demand view needs at least one source")
        if len(set(sources)) != len(sources):
            raise ValueError("a source is listed twice")
        return sources

    @field_validator("expressions")
    @classmethod
    def _expressions(cls, expressions: dict[str, str]) -> dict[str, str]:
        for name, text in expressions.items():
            check_name(name)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"the expression of '{name}' is empty")
        return expressions

    @model_validator(mode="after")
    def _one_way(self) -> OnDemandView:
        if bool(self.expressions) == (self.function is not None):
            raise ValueError("give either expressions or a function (on_demand_view), not both")
        names = [f.name for f in self.schema_]
        if len(set(names)) != len(names):
            raise ValueError("a feature is declared twice in schema")
        if self.function is not None and not self.schema_:
            raise ValueError("a function view needs a schema: the features it returns")
        if self.expressions and self.schema_ and set(names) != set(self.expressions):
            missing = sorted(set(self.expressions) ^ set(names))
            raise ValueError(
                f"schema and expressions must name the same features (differ in: {', '.join(missing)})"
            )
        return self


def on_demand_view(
    *,
    sources: Sequence[Any],
    schema: Sequence[Field],
    mode: OnDemandMode = "pandas",
    name: str | None = None,
    write_to_online: bool = False,
    description: str = "",
    owner: str = "",
    tags: dict[str, str] | None = None,
) -> Callable[[Callable[..., Any]], OnDemandView]:
    """Declare an on-demand view computed by the decorated function.

    The function takes one batch of rows (input columns named by the request fields and
    the input views' features) and returns the new features: a dict of columns or a
    frame of the same kind, with exactly the rows it was given. The result is the view
    (named after the function unless `name` says otherwise); calling it calls the
    function, so it stays testable on its own."""
    if mode not in ("pandas", "arrow", "polars", "python"):
        raise DefinitionError(
            f"on_demand_view: field 'mode': unknown mode {mode!r} (known: pandas, arrow, "
            "polars, python)"
        )

    def make(function: Callable[..., Any]) -> OnDemandView:
        reference = PythonTransformation.of(function, mode)
        return OnDemandView(
            name=name or function.__name__, sources=list(sources), schema=list(schema),
            function=reference, write_to_online=write_to_online, description=description,
            owner=owner, tags=tags or {},
        )  # fmt: skip

    return make
