"""Loading a feature repo: import its Python modules and collect the definitions.

Definitions are module-level objects (entities, sources, views, services). A source
without a name is named after its variable, or after the view that uses it.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from almanac.definitions import FeatureView
from almanac.definitions.base import Definition
from almanac.definitions.sources import SourceBase
from almanac.errors import RepoError
from almanac.registry.catalog import Catalog

_SKIP_DIRS = {"data", "__pycache__", ".almanac", ".venv", "venv", "node_modules", "tests"}


def definition_files(repo: Path, modules: list[str] | None = None) -> list[Path]:
    """The repo's definition modules: the ones `almanac.yaml` lists, or every *.py file
    outside data, hidden and virtualenv folders."""
    if modules is not None:
        files = [repo / m for m in modules]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise RepoError(f"definitions: no such file {', '.join(missing)}")
        return files
    found = []
    for path in sorted(repo.rglob("*.py")):
        parts = path.relative_to(repo).parts[:-1]
        if any(p in _SKIP_DIRS or p.startswith(".") for p in parts):
            continue
        found.append(path)
    return found


def _import(path: Path, repo: Path) -> ModuleType:
    relative = path.relative_to(repo).with_suffix("")
    name = "almanac_repo." + ".".join(relative.parts)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RepoError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(repo))  # repo modules may import each other
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise RepoError(_import_failure(path, error)) from error
    finally:
        sys.path.remove(str(repo))
    return module


def _import_failure(path: Path, error: Exception) -> str:
    """'<file>:<line>: <error>' pointing at the deepest frame inside the repo module."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    if isinstance(error, SyntaxError) and error.lineno:
        line = error.lineno
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {type(error).__name__}: {error}"


def _module_definitions(module: ModuleType) -> Iterator[tuple[str, Definition]]:
    for variable, value in vars(module).items():
        if isinstance(value, Definition) and not variable.startswith("_"):
            yield variable, value


def load_definitions(repo_path: str | Path, modules: list[str] | None = None) -> Catalog:
    """Import the repo's modules and return their definitions as a catalog that is not yet
    validated as a set (`make_plan` validates it after checking deletions)."""
    repo = Path(repo_path).resolve()
    found: list[tuple[str, Definition]] = []
    for path in definition_files(repo, modules):
        found.extend(_module_definitions(_import(path, repo)))
    # An unnamed source passed to a view is named after the view (`<view>_source`);
    # the same object at module level is that source, not a second one.
    inline = [
        obj.source_object.model_copy(update={"name": None})
        for _, obj in found
        if isinstance(obj, FeatureView) and obj.source_object is not None
    ]
    objects: list[Definition] = []
    for variable, obj in found:
        if isinstance(obj, SourceBase) and obj.name is None:
            if obj in inline:
                continue
            obj = obj.model_copy(update={"name": variable})
        objects.append(obj)
    return Catalog.from_definitions(objects, validate=False)
