"""Render the HTTP API reference (docs/http-api.md) from the service's OpenAPI schema.

`make docs` writes it; a test checks that the committed page matches the schema, so the
reference cannot drift from the code.
"""

from __future__ import annotations

import json
from typing import Any

from almanac.serving.app import openapi_schema


def _schema_name(ref: dict[str, Any]) -> str:
    name: str = ref.get("$ref", "").rsplit("/", 1)[-1] or ref.get("type", "object")
    return name


def render(schema: dict[str, Any]) -> str:
    lines = [
        "# HTTP API reference",
        "",
        "Generated from the service's OpenAPI schema by `make docs` (the live schema is at",
        "`/openapi.json` and the interactive docs at `/docs` of a running `almanac serve`).",
        "",
    ]
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            lines += [f"## `{method.upper()} {path}`", ""]
            if op.get("summary"):
                lines += [f"**{op['summary']}**", ""]
            if op.get("description"):
                lines += [op["description"].strip(), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | required | description |", "|---|---|---|---|"]
                for p in params:
                    desc = (p.get("description") or "").replace("\n", " ")
                    lines.append(
                        f"| `{p['name']}` | {p['in']} | {p.get('required', False)} | {desc} |"
                    )
                lines.append("")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                lines += [f"Request body: `{_schema_name(body['schema'])}`", ""]
            for status, response in op.get("responses", {}).items():
                content = response.get("content", {}).get("application/json")
                shape = f" — `{_schema_name(content['schema'])}`" if content else ""
                lines.append(f"- `{status}` {response.get('description', '')}{shape}")
            lines.append("")
    lines += ["## Schemas", ""]
    for name, model in schema.get("components", {}).get("schemas", {}).items():
        lines += [f"### `{name}`", ""]
        if model.get("description"):
            lines += [model["description"].strip(), ""]
        choices = [
            " and ".join(f"`{n}`" for n in sub.get("required", []))
            for sub in model.get("oneOf", [])
        ]
        if choices:
            lines += ["Exactly one of: " + ", ".join(choices) + ".", ""]
        lines += ["```json", json.dumps(model.get("properties", {}), indent=2), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(openapi_schema()), end="")
