"""Client certificates in the ASGI scope, for mutual TLS.

uvicorn verifies a client's certificate (``--ssl-client-cert``) but does not tell the
app whose it was. This HTTP protocol, uvicorn's httptools one plus a few lines, fills
in the ASGI TLS extension (``scope["extensions"]["tls"]``: ``client_cert_chain`` as
PEM, ``client_cert_name`` as RFC 4514, ``tls_version``, ``cipher_suite``) once per
connection, so `almanac.serving.auth` can take the certificate's subject as a
principal — and would from any ASGI server that implements the extension.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class TlsScopeProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that adds the TLS extension to each request's scope."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            self._tls = tls_extension(ssl_object)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI TLS extension's fields for one connection. The peer certificate is only
    there when the handshake verified it (uvicorn's CA and ``ssl_cert_reqs``)."""
    der = ssl_object.getpeercert(binary_form=True)
    chain = [] if der is None else [ssl.DER_cert_to_PEM_cert(der)]
    decoded = ssl_object.getpeercert() or {}
    # RFC 4514 order: the most specific attribute first (the certificate's own order reversed).
    name = ",".join(
        f"{_SHORT.get(key, key)}={_escape(value)}"
        for rdn in reversed(decoded.get("subject", ()))
        for key, value in rdn
    )
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name or None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,  # the spec's number; Python's ssl only gives the suite's name
    }


_SHORT = {
    "commonName": "CN",
    "organizationalUnitName": "OU",
    "organizationName": "O",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "countryName": "C",
    "domainComponent": "DC",
    "userId": "UID",
}


def _escape(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if escaped[:1] in ("#", " "):
        escaped = "\\" + escaped
    return escaped[:-1] + "\\ " if escaped.endswith(" ") else escaped
