"""Loading a feature repo: import its Python modules and collect the definitions.

Definitions are module-level objects (entities, sources, views, services). A source
without a name is named after its variable, or after the view that uses it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from almanac.definitions import FeatureView
from almanac.definitions.base import Definition
from almanac.definitions.sources import SourceBase
from almanac.errors import RepoError
from almanac.registry.catalog import KINDS, Catalog

# The file being imported while this thread loads definitions (to catch a repo module
# that loads the repo again, which would recurse without end).
_state = threading.local()

_SKIP_DIRS = {"data", "__pycache__", ".almanac", ".venv", "venv", "node_modules", "tests"}


def guard_writes(verb: str) -> None:
    """Refuse a write while this thread imports the repo's definitions: `plan` imports
    every definition module and is documented to write nothing, so a module that calls
    `materialize` (or push, apply ...) at import time is an error naming it."""
    loading = getattr(_state, "loading", None)
    if loading is not None:
        raise RepoError(
            f"{loading}: calls {verb}() while Almanac imports the repo's definitions "
            "(plan and apply import every definition module and must write nothing); "
            'move that code under `if __name__ == "__main__":` or out of the repo, or '
            "list the definition modules under 'definitions' in almanac.yaml"
        )


def definition_files(repo: Path, modules: list[str] | None = None) -> list[Path]:
    """The repo's definition modules: the ones `almanac.yaml` lists, or every *.py file
    outside data, hidden and virtualenv folders."""
    if modules is not None:
        files = [repo / m for m in modules]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise RepoError(f"definitions: no such file {', '.join(missing)}")
        return files
    running = _running_script()
    return [
        path
        for path in sorted(repo.rglob("*.py"))
        if _is_repo_code(path, repo) and path.resolve() != running
    ]


def _running_script() -> Path | None:
    """The script Python runs (`python train.py`): a repo file that uses the store, not
    one to import as definitions (importing it would run it again)."""
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(file).resolve() if file else None


def _is_repo_code(path: Path, repo: Path) -> bool:
    """A file of the repo itself, not of its data, hidden or virtualenv folders."""
    if not path.is_relative_to(repo):
        return False
    parts = path.relative_to(repo).parts[:-1]
    return not any(p in _SKIP_DIRS or p.startswith(".") or p == "site-packages" for p in parts)


def _import(path: Path, repo: Path) -> ModuleType:
    relative = path.relative_to(repo).with_suffix("")
    name = "almanac_repo." + ".".join(relative.parts)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RepoError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(repo))  # repo modules may import each other
    try:
        # Compiled from the file as it is now, not through __pycache__: a .pyc is reused
        # when the file's size and mtime (whole seconds) match, so two edits of the same
        # size within a second would plan the older one.
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except Exception as error:
        raise RepoError(_import_failure(path, repo, error)) from error
    finally:
        sys.path.remove(str(repo))
    return module


def _import_failure(path: Path, repo: Path, error: Exception) -> str:
    """'<file>:<line>: <error>' pointing at the deepest frame in the repo's own code (the
    module itself, or a repo module it imports)."""
    where = str(path)
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == str(path) or _is_repo_code(Path(frame.filename), repo):
            where = f"{frame.filename}:{frame.lineno}"
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        where = f"{error.filename}:{error.lineno}"
    return f"{where}: {type(error).__name__}: {error}"


def _forget_repo_modules(repo: Path, keep: set[str]) -> None:
    """Drop the repo modules that repo files imported (`import common`), so that the next
    load reads them afresh instead of reusing what an earlier load (or repo) cached."""
    for name in set(sys.modules) - keep:
        file = getattr(sys.modules[name], "__file__", None)
        if file and _is_repo_code(Path(file).resolve(), repo):
            del sys.modules[name]


def _module_definitions(module: ModuleType) -> Iterator[tuple[str, Definition]]:
    for variable, value in vars(module).items():
        if isinstance(value, Definition) and not variable.startswith("_"):
            yield variable, value


def load_definitions(repo_path: str | Path, modules: list[str] | None = None) -> Catalog:
    """Import the repo's modules and return their definitions as a catalog that is not yet
    validated as a set (`make_plan` validates it after checking deletions)."""
    repo = Path(repo_path).resolve()
    loading = getattr(_state, "loading", None)
    if loading is not None:
        raise RepoError(
            f"{loading}: loading the repo's definitions ran code that loads them again; "
            "keep scripts that use the store out of the repo, or list the definition "
            "modules under 'definitions' in almanac.yaml"
        )
    found: list[tuple[str, Definition]] = []
    already_imported = set(sys.modules)
    # Repo modules that the definition files import (`from shared import TTL`) go through
    # the import system: point its bytecode cache at a folder that does not exist and
    # write none, so that they too are compiled from the file as it is now (a .pyc of an
    # edit of the same size within the same second would pass for fresh).
    cache = sys.dont_write_bytecode, sys.pycache_prefix
    sys.dont_write_bytecode = True
    sys.pycache_prefix = str(Path(tempfile.gettempdir()) / f"almanac-no-pycache-{uuid.uuid4().hex}")
    try:
        for path in definition_files(repo, modules):
            _state.loading = path
            found.extend(_module_definitions(_import(path, repo)))
    finally:
        _state.loading = None
        sys.dont_write_bytecode, sys.pycache_prefix = cache
        _forget_repo_modules(repo, already_imported)
    # An unnamed module-level source is named after its variable, also in the views it
    # was passed to (which would otherwise call it `<view>_source`).
    variables = {
        id(obj): variable
        for variable, obj in found
        if isinstance(obj, SourceBase) and obj.name is None
    }
    objects: list[Definition] = []
    for variable, obj in found:
        if isinstance(obj, SourceBase) and obj.name is None:
            obj = obj.model_copy(update={"name": variable})
        elif isinstance(obj, FeatureView) and id(obj._unnamed_source) in variables:
            obj = obj.with_source_name(variables[id(obj._unnamed_source)])
        objects.append(obj)
    return Catalog.from_definitions(objects, validate=False)


# ---- what this repo applied -------------------------------------------------------------

# Per registry (URL and project), the objects this repo folder declared at its last apply.
APPLIED_FILE = Path(".almanac") / "applied.json"


def applied_objects(repo_path: str | Path, registry: str) -> set[tuple[str, str]]:
    """(kind, name) of the objects this repo declared when it last applied to `registry`:
    the ones `apply` may delete once the repo no longer declares them. Another author's
    objects were never in this set, so they are kept."""
    try:
        state = json.loads((Path(repo_path) / APPLIED_FILE).read_text())
    except (OSError, ValueError):
        return set()
    entries = state.get(registry, []) if isinstance(state, dict) else []
    return {
        (kind, name) for kind, name in entries if isinstance(kind, str) and isinstance(name, str)
    }


def record_applied(repo_path: str | Path, registry: str, catalog: Catalog) -> None:
    """Remember what this repo declared at an apply that landed (best effort: a repo
    folder that cannot be written only loses the right to delete without --prune)."""
    path = Path(repo_path) / APPLIED_FILE
    try:
        state = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict):
        state = {}
    state[registry] = sorted([kind, name] for kind in KINDS for name in catalog.of_kind(kind))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(state, indent=1))
        temp.replace(path)
    except OSError:
        pass
