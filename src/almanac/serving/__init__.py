"""The HTTP feature server (`almanac serve`) and its Python client.

`create_app(repo)` builds the ASGI app; `Client(url)` talks to a running server with
the SDK's own signatures and result objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from almanac.serving.app import create_app
    from almanac.serving.client import Client

__all__ = ["Client", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: the client does not need FastAPI, and the server does not need httpx.
    if name == "create_app":
        from almanac.serving.app import create_app

        return create_app
    if name == "Client":
        from almanac.serving.client import Client

        return Client
    raise AttributeError(name)
