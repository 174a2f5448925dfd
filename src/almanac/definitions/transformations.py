"""Batch transformations: a view's rows computed from its source by SQL or by Python.

A transformation is part of a feature view's definition, so historical retrieval and
materialization run the same one (the offline engine applies it wherever it reads the
view's source; see `almanac.offline.duckdb.transformations`).

* ``SqlTransformation("SELECT user_id, ts, amount * 0.92 AS amount_eur FROM source")``:
  DuckDB SQL over the relation ``source`` (the view's source, all of its columns). A
  plain string passed as a view's `transformation` means this.
* A Python function over batches of rows, in the Hamilton spirit: a plain, testable
  function with a decorator that records how to call it::

      @batch_transformation(mode="pandas")
      def spend_eur(df: pd.DataFrame) -> pd.DataFrame:
          return df.assign(amount_eur=df["amount"] * 0.92)

  A function cannot be stored as JSON, so the registry keeps a reference
  (``module:qualname``; modules of the feature repo are named by their path in the repo)
  and a hash of the function's source text: editing the function shows in `plan`, and
  running a definition whose function changed since `apply` is refused.

The output of either must have the join keys, the source's timestamp column (and its
created-time column, if it has one) and the features. A Python function is called on
batches of rows and must not depend on how rows are split into batches (no cross-row
state such as lags; use SQL window functions for those).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field as PydanticField
from pydantic import PrivateAttr, field_validator, model_serializer

from almanac.definitions.base import Definition, Dialect, check_dialect, drop_default_dialect
from almanac.errors import DefinitionError

# "python" (a dict of lists in and out) is for on-demand views only, where one request is
# a handful of rows and building a frame would cost more than the function.
Mode = Literal["pandas", "arrow", "polars", "python"]
# Repo modules are imported under this package name (see almanac.repo); the stored
# reference drops it, so it names the module by its path inside the repo.
REPO_PACKAGE = "almanac_repo."
_ATTRIBUTE = "__almanac_transformation__"
# Decorated functions seen by this process, by reference (a repo load fills it).
_known: dict[str, Callable[..., Any]] = {}


class SqlTransformation(Definition):
    """SQL reading the relation ``source``, in `dialect` (DuckDB's by default, or
    ``"spark"``); see the module docstring."""

    kind: ClassVar[str] = "transformation"

    type: Literal["sql"] = "sql"
    query: str
    dialect: str = Dialect.DEFAULT

    _dialect = field_validator("dialect")(check_dialect)

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        return drop_default_dialect(handler(self))

    def __init__(self, query: str | None = None, /, **data: Any) -> None:
        if query is not None:
            data["query"] = query
        super().__init__(**data)

    @field_validator("query")
    @classmethod
    def _query(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("query must not be empty")
        return query


class PythonTransformation(Definition):
    """A reference to a Python function over batches, and the hash of its source."""

    kind: ClassVar[str] = "transformation"

    type: Literal["python"] = "python"
    function: str  # "module:qualname"
    mode: Mode = "pandas"
    source_hash: str

    _function: Callable[..., Any] | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, function: Callable[..., Any], mode: Mode = "pandas") -> PythonTransformation:
        reference = function_reference(function)
        made = cls(function=reference, mode=mode, source_hash=source_hash(function))
        made._function = function
        return made

    @field_validator("function")
    @classmethod
    def _reference(cls, reference: str) -> str:
        module, _, qualname = reference.partition(":")
        if not module or not qualname:
            raise ValueError(f"{reference!r} is not a function reference 'module:qualname'")
        return reference

    def load(self, repo_path: Path | None = None) -> Callable[..., Any]:
        """The function this refers to, checked against the hash recorded at apply."""
        for known in (self._function, _known.get(self.function)):
            if known is not None and source_hash(known) == self.source_hash:
                return known
        # Not seen by this process yet, or seen in another repo (two repos may both have
        # `features:f`) or before an edit: import it from the repo as it is now.
        module, _, qualname = self.function.partition(":")
        function = _attribute(_import_module(module, repo_path), qualname, self.function)
        _known[self.function] = function
        if source_hash(function) != self.source_hash:
            raise DefinitionError(
                f"transformation {self.function}: the function changed since its view was "
                "applied (its source text hash differs); run `almanac apply` first"
            )
        return function


Transformation = Annotated[SqlTransformation | PythonTransformation, PydanticField(discriminator="type")]  # fmt: skip


def batch_transformation(
    function: Callable[..., Any] | None = None, *, mode: Mode = "pandas"
) -> Any:
    """Mark a plain function as a batch transformation (``@batch_transformation`` or
    ``@batch_transformation(mode="arrow")``). The function is returned unchanged, so it
    stays callable and testable on its own; pass it as a view's `transformation`."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        if mode not in ("pandas", "arrow", "polars"):
            raise DefinitionError(
                f"batch_transformation: field 'mode': unknown mode {mode!r} "
                "(known: pandas, arrow, polars)"
            )
        definition = PythonTransformation.of(fn, mode)
        setattr(fn, _ATTRIBUTE, definition)
        _known[definition.function] = fn
        return fn

    return mark(function) if function is not None else mark


def as_transformation(value: Any) -> Any:
    """What a view's `transformation` may be given as: SQL text, a definition, its spec,
    or a (decorated) function."""
    if value is None or isinstance(value, SqlTransformation | PythonTransformation | dict):
        return value
    if isinstance(value, str):
        return SqlTransformation(value)
    if callable(value):
        marked = getattr(value, _ATTRIBUTE, None)
        return marked if marked is not None else PythonTransformation.of(value)
    return value  # let validation say what is wrong


def function_reference(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        raise DefinitionError(
            f"transformation {qualname or function!r}: a transformation must be a function "
            "defined at module level (not a lambda or a nested function), so that it can be "
            "imported again by name"
        )
    return f"{module.removeprefix(REPO_PACKAGE)}:{qualname}"


def source_hash(function: Callable[..., Any]) -> str:
    """A short hash of the function's source text (its bytecode when there is none)."""
    try:
        text = textwrap.dedent(inspect.getsource(function)).encode()
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        text = code.co_code if code is not None else repr(function).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def _import_module(module: str, repo_path: Path | None) -> ModuleType:
    """Import a repo module from its file (as the repo loader names it), else by name."""
    if repo_path is not None:
        path = Path(repo_path).joinpath(*module.split(".")).with_suffix(".py")
        if path.is_file():
            name = REPO_PACKAGE + module
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is not None and spec.loader is not None:
                loaded = importlib.util.module_from_spec(spec)
                sys.path.insert(0, str(repo_path))
                try:
                    spec.loader.exec_module(loaded)
                finally:
                    sys.path.remove(str(repo_path))
                return loaded
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise DefinitionError(
            f"transformation module {module!r} cannot be imported: {error}"
        ) from None


def _attribute(module: ModuleType, qualname: str, reference: str) -> Callable[..., Any]:
    target: object = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    # A decorator that returns a definition (`on_demand_view`) keeps the function in it.
    target = getattr(target, "python_function", None) or target
    if not callable(target):
        raise DefinitionError(f"transformation {reference}: no such function")
    function: Callable[..., Any] = target
    return function
