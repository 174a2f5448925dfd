"""On-demand views in the catalog: their inputs, their output types, and the checks.

An on-demand view reads columns from its `sources`: each field of a request source, each
feature of a feature view, aggregation view or other on-demand view, under its own name.
Here the catalog learns what those columns are (`inputs`), what the view produces
(`output_fields`: declared, or inferred from the expressions), and refuses at `plan`
what could only fail at serve time: unknown sources, cycles, two inputs of one name, an
expression over a column that is not there or of the wrong type, a declared type an
expression cannot produce, a write-time view (`write_to_online=True`) that does not read
exactly one online feature view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from almanac.definitions.feature_view import FeatureView, Field
from almanac.definitions.on_demand import OnDemandView
from almanac.errors import DefinitionError, NotFoundError

if TYPE_CHECKING:
    from almanac.registry.catalog import Catalog

# A declared type an expression's result may be cast to without losing meaning.
_WIDENINGS = {("int64", "float64"), ("int64", "float32"), ("float64", "float32"),
              ("int64", "int32")}  # fmt: skip


@dataclass(frozen=True)
class Input:
    """One input column of an on-demand view: where it comes from and its type."""

    name: str  # the column name the expression or function sees
    source: str  # a request source, a view or an on-demand view
    kind: str  # "request" | "view" | "on_demand"
    dtype: str

    @property
    def ref(self) -> str:
        return f"{self.source}:{self.name}"


def inputs(catalog: Catalog, view: OnDemandView) -> dict[str, Input]:
    """The view's input columns by name (a DefinitionError when two share a name)."""
    found: dict[str, Input] = {}
    for source in view.sources:
        for column in _source_columns(catalog, view, source):
            other = found.get(column.name)
            if other is not None:
                raise DefinitionError(
                    f"OnDemandView '{view.name}': field 'sources': '{column.name}' is both "
                    f"'{other.ref}' and '{column.ref}'; an input column must have one meaning "
                    "(rename one, or compute the view from one of them)"
                )
            found[column.name] = column
    return found


def _source_columns(catalog: Catalog, view: OnDemandView, source: str) -> list[Input]:
    if source in catalog.request_sources:
        fields = catalog.request_sources[source].features
        return [Input(f.name, source, "request", f.dtype) for f in fields]
    if source in catalog.on_demand_views:
        fields = catalog.on_demand_fields(source)
        return [Input(f.name, source, "on_demand", f.dtype) for f in fields]
    if source in catalog.views or source in catalog.aggregation_views:
        fields = catalog.view(source).features
        return [Input(f.name, source, "view", f.dtype) for f in fields]
    known = [*catalog.request_sources, *catalog.all_views(), *catalog.on_demand_views]
    raise DefinitionError(
        f"OnDemandView '{view.name}': field 'sources': "
        f"{NotFoundError('request source or view', source, known)}"
    )


def output_fields(catalog: Catalog, view: OnDemandView) -> list[Field]:
    """The view's features with their types: the declared schema, or (no schema) the
    types its expressions compute."""
    if view.schema_:
        return list(view.schema_)
    dtypes = {name: column.dtype for name, column in inputs(catalog, view).items()}
    return [Field(name, _expression_dtype(view, name, dtypes)) for name in view.expressions]


def _expression_dtype(view: OnDemandView, name: str, dtypes: dict[str, str]) -> str:
    # Imported here: the expression module brings pyarrow, which `almanac --help` avoids.
    from almanac.semantics.expressions import infer_dtype, parse

    try:
        return infer_dtype(parse(view.expressions[name]), dtypes)
    except DefinitionError as error:
        raise DefinitionError(f"OnDemandView '{view.name}': feature '{name}': {error}") from None


def check_on_demand(catalog: Catalog) -> None:
    """Every on-demand view resolves, is acyclic, and computes what it declares."""
    namespaces = {
        "a view": {*catalog.views, *catalog.aggregation_views},
        "an on-demand view": set(catalog.on_demand_views),
        "a request source": set(catalog.request_sources),
    }
    kinds = list(namespaces)
    for i, first in enumerate(kinds):
        for second in kinds[i + 1 :]:
            for name in sorted(namespaces[first] & namespaces[second]):
                raise DefinitionError(
                    f"{first} and {second} are both named '{name}'; views, on-demand "
                    "views and request sources share one namespace"
                )
    order(catalog, list(catalog.on_demand_views))  # refuses cycles
    for view in catalog.on_demand_views.values():
        if view.write_to_online:
            _check_write_time(catalog, view)
        columns = inputs(catalog, view)
        if view.expressions and view.schema_:
            _check_declared_types(catalog, view, columns)
        else:
            catalog.on_demand_fields(view.name)  # infers, and so checks, the expressions


def _check_write_time(catalog: Catalog, view: OnDemandView) -> None:
    """A write-time view is computed from the rows written online for one feature view,
    and stored keyed and timed like them: it can read nothing else."""
    label = f"OnDemandView '{view.name}': field 'sources'"
    source = view.sources[0]
    if len(view.sources) != 1 or source not in catalog.views:
        raise DefinitionError(
            f"{label}: a view with write_to_online=True is computed when one feature view's "
            f"rows are written online, so it reads exactly one feature view (not a request "
            f"source, an aggregation view or an on-demand view); it reads {', '.join(view.sources)}"
        )
    if not catalog.views[source].online:
        raise DefinitionError(
            f"{label}: feature view '{source}' is not served online (online=False), so "
            "nothing would compute this write_to_online view"
        )


def written_from(catalog: Catalog, view: OnDemandView) -> FeatureView:
    """The feature view whose online rows a write-time view is computed from: its keys,
    event times and TTL are the stored view's."""
    return catalog.views[view.sources[0]]


def stored_as(catalog: Catalog, name: str) -> FeatureView:
    """The feature view whose keys, TTL and source govern what the online store holds
    under `name`: that view, or a write-time on-demand view's source view."""
    on_demand = catalog.on_demand_views.get(name)
    if on_demand is None or not on_demand.write_to_online:
        return catalog.view(name)
    return written_from(catalog, on_demand)


def write_time_views(catalog: Catalog, source: str | None = None) -> list[OnDemandView]:
    """Write-time on-demand views (of the feature view `source`, when given)."""
    return [
        view
        for view in catalog.on_demand_views.values()
        if view.write_to_online and (source is None or view.sources[0] == source)
    ]


def _check_declared_types(catalog: Catalog, view: OnDemandView, columns: dict[str, Input]) -> None:
    dtypes = {name: column.dtype for name, column in columns.items()}
    for field in view.schema_:
        computed = _expression_dtype(view, field.name, dtypes)
        if computed != field.dtype and (computed, field.dtype) not in _WIDENINGS:
            raise DefinitionError(
                f"OnDemandView '{view.name}': feature '{field.name}' is declared "
                f"{field.dtype} but its expression computes {computed}"
            )


def order(catalog: Catalog, names: list[str]) -> list[str]:
    """`names` and the on-demand views they read, inputs first (a DefinitionError naming
    the cycle if there is one)."""
    done: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            raise DefinitionError(f"on-demand views read each other in a cycle: {' → '.join(cycle)}")  # fmt: skip
        visiting.append(name)
        for source in catalog.on_demand_views[name].sources:
            if source in catalog.on_demand_views:
                visit(source)
        visiting.pop()
        done.append(name)

    for name in names:
        visit(name)
    return done
