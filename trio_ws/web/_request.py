"""The request object a handler receives.

A :class:`Request` is one parsed request head plus the connection it came on,
which it sees only through :class:`RequestConnection` (the server's
``web/_connection.py`` implements it). A ``WebSocketResponse`` takes that
connection over through :func:`upgrade_of`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from .._exceptions import ClientConnectionResetError
from .._http._headers import Headers
from .._http._server import HTTPInputError, RawRequest
from ._response import HTTPBadRequest, HTTPRequestEntityTooLarge
from ._transport import Transport
from ._upgrade import Upgrade

if TYPE_CHECKING:
    from ._app import Application

__all__ = ["Request", "RequestConnection", "upgrade_of"]


class RequestConnection(Upgrade, Protocol):
    """What a :class:`Request` needs of the connection it arrived on."""

    @property
    def secure(self) -> bool:
        """True on a TLS connection."""
        ...

    @property
    def peername(self) -> Any:
        """The client's address (``getpeername()`` at accept), or None."""
        ...

    @property
    def transport(self) -> Transport | None:
        """aiohttp's ``request.transport``; None once the connection has ended."""
        ...

    async def read_body(self, limit: int) -> bytes:
        """The request's body, at most ``limit`` bytes.

        Raises ``HTTPInputError`` (413 past ``limit``, 400 for a broken body),
        ``trio.TooSlowError``, or a trio stream error or ``OSError`` when the
        client is gone.
        """
        ...


class Request:
    """One HTTP request: method, path, query, headers, body and routing info.

    ``match_info`` holds the values of the route's ``{name}`` segments;
    ``app`` is the :class:`Application`; ``remote`` the client's address.
    """

    def __init__(
        self,
        raw: RawRequest,
        app: Application,
        conn: RequestConnection,
        match_info: dict[str, str],
    ) -> None:
        self.app = app
        self._conn = conn
        self.match_info = match_info
        self.method = raw.method
        parts = urlsplit(raw.target)
        self.raw_path = raw.target
        self.path = unquote(parts.path or "/")
        self.query_string = parts.query
        self.headers = raw.headers
        self.version = raw.version
        self._query: Headers | None = None  # parsed on first use
        self._body: bytes | None = None

    @property
    def query(self) -> Headers:
        """The query string's parameters (repeated names kept, blank values kept)."""
        if self._query is None:
            self._query = Headers(parse_qsl(self.query_string, keep_blank_values=True))
        return self._query

    @property
    def host(self) -> str:
        """The Host header (empty string if absent)."""
        return self.headers.get("Host", "")

    @property
    def scheme(self) -> str:
        """``"https"`` on a TLS connection, else ``"http"``."""
        return "https" if self._conn.secure else "http"

    @property
    def secure(self) -> bool:
        """True on a TLS connection."""
        return self._conn.secure

    @property
    def url(self) -> str:
        """The full URL of the request, as a string."""
        return f"{self.scheme}://{self.host}{self.raw_path}"

    @property
    def remote(self) -> str | None:
        """The client's IP address, or ``None`` if unknown."""
        peer = self._conn.peername
        return str(peer[0]) if peer else None

    @property
    def transport(self) -> Transport | None:
        """The connection, as aiohttp's ``request.transport``; None once it has ended.

        See ``trio_ws/web/_transport.py``: ``get_extra_info(name)``,
        ``close()``, ``abort()`` and ``is_closing()``.
        """
        return self._conn.transport

    @property
    def content_type(self) -> str:
        """The media type of the body, without parameters."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    @property
    def can_read_body(self) -> bool:
        """True when the request declares a body."""
        return "Content-Length" in self.headers or "Transfer-Encoding" in self.headers

    async def read(self) -> bytes:
        """The whole body (cached after the first call).

        Raises ``HTTPRequestEntityTooLarge`` (413) past the application's
        ``client_max_size``, ``HTTPBadRequest`` (400) for a broken body,
        ``trio.TooSlowError`` when the client stops sending it for 3 *
        ``head_timeout``, and :class:`~trio_ws.ClientConnectionResetError`
        when the client is gone.
        """
        if self._body is None:
            try:
                self._body = await self._conn.read_body(self.app.client_max_size)
            except HTTPInputError as exc:
                if exc.status == 413:
                    raise HTTPRequestEntityTooLarge(text=str(exc)) from None
                raise HTTPBadRequest(text=str(exc)) from None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ClientConnectionResetError("Connection lost") from exc
        return self._body

    async def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return (await self.read()).decode("utf-8", "replace")

    async def json(self, *, loads: Callable[[str], Any] = json.loads) -> Any:
        """The body parsed with ``loads``; raises ``HTTPBadRequest`` for invalid JSON."""
        try:
            return loads(await self.text())
        except ValueError as exc:
            raise HTTPBadRequest(text=f"invalid JSON: {exc}") from None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_path}>"


def upgrade_of(request: Request) -> Upgrade:
    """The connection ``request`` came on, as the :class:`~trio_ws.web._upgrade.Upgrade`
    a ``WebSocketResponse`` takes over in ``prepare()``."""
    return request._conn
