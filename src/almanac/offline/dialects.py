"""Which SQL dialect a view's query text is written in, checked against the engine's.

A `SqlSource` query or a `SqlTransformation` is text one engine runs: DuckDB's SQL is not
Spark's. Each engine refuses, at `plan`, the views whose SQL it cannot run, naming the
view, the source and the dialect, instead of failing with a parser error at the first
training set.
"""

from __future__ import annotations

from almanac.definitions.sources import SqlSource
from almanac.definitions.transformations import SqlTransformation
from almanac.errors import DefinitionError
from almanac.registry.catalog import Catalog


def check_dialect(catalog: Catalog, names: list[str], dialect: str, engine: str) -> None:
    """DefinitionError naming every SQL source or transformation of the views `names`
    not written in `dialect` (the one `engine` runs)."""
    problems = []
    for name in names:
        view = catalog.view(name)
        source = catalog.source_of(view)
        kind = type(view).__name__
        if isinstance(source, SqlSource) and source.dialect != dialect:
            problems.append(
                f"{kind} '{view.name}' reads SQL source '{source.name}', written in "
                f"{source.dialect} SQL; the {engine} engine runs {dialect} SQL (set "
                f'dialect="{dialect}" and write the query in it, or use offline.engine: '
                f"{source.dialect})"
            )
        transformation = view.transformation
        if isinstance(transformation, SqlTransformation) and transformation.dialect != dialect:
            problems.append(
                f"{kind} '{view.name}': its SQL transformation is written in "
                f"{transformation.dialect} SQL; the {engine} engine runs {dialect} SQL (set "
                f'dialect="{dialect}", or use offline.engine: {transformation.dialect})'
            )
    if problems:
        raise DefinitionError("; ".join(problems))
