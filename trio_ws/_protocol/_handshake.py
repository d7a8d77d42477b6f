"""The opening handshake's rules (RFC 6455 section 4), for both roles, sans I/O.

Theory of operation: the client builds its key with :func:`new_key` and, once
the server answered, checks the answer with :func:`check_response`; the
server checks a request with :func:`check_request`, which returns the 101's
headers. Both take the headers through :class:`HeaderView` (what
``trio_ws._http._headers.Headers`` offers), so this module knows no HTTP
library, no trio and no socket. Each rule is written once, here; the web and
client layers only translate a refusal into their own error (an HTTP status,
a ``WSServerHandshakeError``).

Refusals:

* :class:`RequestRefused` (server side) carries the HTTP ``status`` to answer
  (405, 426, 400, 403) and any ``headers`` the answer must carry (RFC 6455
  section 4.2.2: a 426 names the versions understood).
* :class:`ResponseRejected` (client side) carries aiohttp's message for
  ``WSServerHandshakeError`` ("Invalid response status", "Invalid upgrade
  header", "Invalid connection header", "Invalid challenge response", ...).

Versions: 13 is RFC 6455's; 8 and 7 (late drafts, wire-compatible for
everything trio_ws does) are accepted too, as aiohttp accepts them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ._deflate import BoundedDeflate, DeflateNegotiationError, client_finalize, server_accept

__all__ = [
    "SUPPORTED_VERSIONS",
    "HeaderView",
    "RequestRefused",
    "ResponseRejected",
    "ServerHandshake",
    "accept_token",
    "check_request",
    "check_response",
    "new_key",
]

SUPPORTED_VERSIONS: tuple[str, ...] = ("13", "8", "7")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HeaderView(Protocol):
    """Read access to a message's headers (case-insensitive names)."""

    def get(self, name: str, default: str, /) -> str:
        """The first value of ``name``, or ``default``."""
        ...

    def getall(self, name: str, default: list[str], /) -> list[str]:
        """Every value of ``name``, or ``default``."""
        ...

    def tokens(self, name: str, /) -> list[str]:
        """The comma-separated tokens of every ``name`` header, lower-cased."""
        ...


class RequestRefused(Exception):
    """The server must refuse the upgrade request with HTTP ``status``.

    ``message`` is the body text; ``headers`` go with the answer.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ResponseRejected(Exception):
    """The server's answer to our upgrade request is not a valid 101.

    ``message`` is aiohttp's wording for the failed rule.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def new_key() -> bytes:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded."""
    return base64.b64encode(os.urandom(16))


def accept_token(key: bytes | str) -> str:
    """The ``Sec-WebSocket-Accept`` value for ``key`` (RFC 6455 section 4.2.2)."""
    raw = key.encode("ascii") if isinstance(key, str) else key
    return base64.b64encode(hashlib.sha1(raw + _GUID).digest()).decode("ascii")


@dataclass
class ServerHandshake:
    """An accepted upgrade: the 101's headers, the subprotocol and the deflate state."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    protocol: str | None = None
    deflate: BoundedDeflate | None = None


def check_request(
    method: str,
    headers: HeaderView,
    *,
    protocols: Sequence[str],
    compress: bool,
    max_size: int,
    origin_allowed: Callable[[str | None], bool] | None = None,
) -> ServerHandshake:
    """Check an upgrade request; the 101's headers, or :class:`RequestRefused`.

    The first offered subprotocol in ``protocols`` is chosen (names are
    case-sensitive). With ``compress`` the first acceptable
    permessage-deflate offer is answered. ``origin_allowed`` (None: any)
    decides on the ``Origin`` header (403 when it says no).
    """
    if method != "GET":
        raise RequestRefused(405, f"Method {method} not allowed", {"Allow": "GET"})
    if "websocket" not in headers.tokens("Upgrade"):
        raise RequestRefused(
            426,
            "This endpoint needs a WebSocket upgrade (Upgrade: websocket)",
            {"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    if "upgrade" not in headers.tokens("Connection"):
        raise RequestRefused(400, "No CONNECTION upgrade hdr")
    version = headers.get("Sec-WebSocket-Version", "").strip()
    if version not in SUPPORTED_VERSIONS:
        raise RequestRefused(
            426,
            f"Unsupported version: {version}",
            {"Sec-WebSocket-Version": ", ".join(SUPPORTED_VERSIONS)},
        )
    if origin_allowed is not None:
        origin = headers.get("Origin", "") or None
        if not origin_allowed(origin):
            raise RequestRefused(403, f"Origin not allowed: {origin}")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (binascii.Error, ValueError):
        raise RequestRefused(400, f"Handshake error: {key!r}") from None
    offers = [t.strip() for v in headers.getall("Sec-WebSocket-Protocol", []) for t in v.split(",")]
    protocol = next((o for o in offers if o in protocols), None)
    answer = ServerHandshake(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_token(key)),
        ],
        protocol,
    )
    if protocol is not None:
        answer.headers.append(("Sec-WebSocket-Protocol", protocol))
    if compress:
        accepted = server_accept(headers.getall("Sec-WebSocket-Extensions", []), max_size=max_size)
        if accepted is not None:
            answer.headers.append(("Sec-WebSocket-Extensions", accepted[0]))
            answer.deflate = accepted[1]
    return answer


def check_response(
    status: int,
    headers: HeaderView,
    *,
    key: bytes,
    protocols: Sequence[str],
    compress: int,
    notakeover: bool,
    max_size: int,
) -> tuple[str | None, BoundedDeflate | None]:
    """Check the server's answer to our upgrade; ``(subprotocol, deflate)``.

    Raises :class:`ResponseRejected` for anything but a valid 101 to the
    request we sent (status, Upgrade, Connection, the accept token, a
    subprotocol or extension we did not offer, a deflate answer we cannot
    use; the last with the :class:`DeflateNegotiationError` as its cause).
    """
    if status != 101:
        raise ResponseRejected("Invalid response status")
    if "websocket" not in headers.tokens("Upgrade"):
        raise ResponseRejected("Invalid upgrade header")
    if "upgrade" not in headers.tokens("Connection"):
        raise ResponseRejected("Invalid connection header")
    if headers.get("Sec-WebSocket-Accept", "").strip() != accept_token(key):
        raise ResponseRejected("Invalid challenge response")
    protocol: str | None = headers.get("Sec-WebSocket-Protocol", "").strip() or None
    if protocol is not None and protocol not in protocols:
        raise ResponseRejected(f"Server chose a subprotocol that was not offered: {protocol!r}")
    extensions = headers.getall("Sec-WebSocket-Extensions", [])
    if not extensions:
        return protocol, None
    if not compress:
        raise ResponseRejected("Server accepted an extension that was not offered")
    try:
        deflate = client_finalize(
            extensions, compress=compress, max_size=max_size, notakeover=notakeover
        )
    except DeflateNegotiationError as exc:
        raise ResponseRejected(f"Invalid extension answer: {exc}") from exc
    return protocol, deflate
