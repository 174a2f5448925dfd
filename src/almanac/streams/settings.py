"""What the stream backends share: `${NAME}` settings read from the environment."""

from __future__ import annotations

import os
import re

from almanac.errors import ConfigError

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand(value: str, what: str) -> str:
    """`value` with each `${NAME}` replaced by the environment variable NAME."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{what}: environment variable {name} is not set")
        return os.environ[name]

    return _VARIABLE.sub(one, value)
