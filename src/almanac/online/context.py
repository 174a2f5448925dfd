"""LLM context: a feature service's values for one entity, rendered for a prompt.

A feature service may declare a Jinja2 `prompt_template` over its features. The result
carries the rendered text, the raw values, their statuses and their ages, so an LLM
application can both prompt with the text and reason about freshness.

The text shows exactly the values: a null value (missing, past its TTL, or null in the
store) renders as the placeholder (never as "None"), and any other value as itself,
whatever its status. So an entity without events reads "0" for its counts in the text as
in `values` (status NOT_FOUND: the count of no events is 0, as in training sets), and
the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from almanac.definitions.prompt_template import compile_template, default_template
from almanac.errors import DefinitionError, InputError

if TYPE_CHECKING:
    from almanac.definitions import FeatureService
    from almanac.online.response import OnlineResponse


@dataclass(frozen=True)
class Context:
    """One entity's context: `text` for the prompt, and what it was built from."""

    service: str
    entity: dict[str, Any]
    text: str
    values: dict[str, Any]
    statuses: dict[str, str]
    event_timestamps: dict[str, datetime | None]
    ages_seconds: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "entity": self.entity,
            "text": self.text,
            "values": self.values,
            "statuses": self.statuses,
            "event_timestamps": {
                k: v.isoformat() if v else None for k, v in self.event_timestamps.items()
            },
            "ages_seconds": self.ages_seconds,
        }


def check_entity(entity: Any) -> None:
    if not isinstance(entity, Mapping) or not entity:
        raise InputError("entity must be a mapping of join keys, e.g. {'user_id': '8a2f'}")


def render_context(
    service: FeatureService,
    entity: Mapping[str, Any],
    response: OnlineResponse,
    placeholder: str,
    now: datetime | None = None,
) -> Context:
    """The context of one entity from an online read of the service's features (first
    row of `response`). Pure: the SDK and the async HTTP server both read the store
    their own way and render here, so the two cannot disagree."""
    now = now or datetime.now(UTC)
    values: dict[str, Any] = {}
    statuses: dict[str, str] = {}
    stamps: dict[str, datetime | None] = {}
    ages: dict[str, float | None] = {}
    template = compile_template(service.prompt_template or default_template(list(response.values)))
    # The template's globals (range, dict ...) under the values: what `render` would
    # build, without its copies (measured: half of Jinja's cost per render).
    rendered: dict[str, Any] = {**template.globals, **entity}
    event_timestamps = response.event_timestamps
    for name, column in response.values.items():
        value = column[0]
        status = str(response.statuses[name][0])
        stamp = event_timestamps[name][0]
        values[name], statuses[name], stamps[name] = value, status, stamp
        ages[name] = (now - stamp).total_seconds() if stamp is not None else None
        rendered[name] = placeholder if value is None else value
    try:
        text = "".join(template.root_render_func(template.new_context(rendered, shared=True)))
    except Exception as error:  # a template can fail on values (e.g. arithmetic on a placeholder)
        raise DefinitionError(
            f"prompt_template of feature service '{service.name}' failed to render for "
            f"{dict(entity)}: {type(error).__name__}: {error}"
        ) from None
    return Context(service.name, dict(entity), text, values, statuses, stamps, ages)
