"""A feature service's `prompt_template`: Jinja2, parsed and rendered sandboxed.

Here so that the registry can check a template's variables against the service's
features at apply, and `almanac.online.context` renders with the same environment.
"""

from __future__ import annotations

from functools import lru_cache

from jinja2 import Template, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from almanac.errors import DefinitionError

# Templates come from the registry, written by other teams: render them sandboxed.
_ENV = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=256)
def compile_template(text: str) -> Template:
    try:
        return _ENV.from_string(text)
    except TemplateSyntaxError as error:
        raise DefinitionError(f"prompt_template: line {error.lineno}: {error.message}") from None


def template_variables(text: str) -> set[str]:
    """The names a template reads (to check them against the service's features)."""
    try:
        return meta.find_undeclared_variables(_ENV.parse(text))
    except TemplateSyntaxError as error:
        raise DefinitionError(f"prompt_template: line {error.lineno}: {error.message}") from None


def default_template(features: list[str]) -> str:
    return "\n".join(f"{name}: {{{{ {name} }}}}" for name in features)
