"""The request object a handler receives."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from .._exceptions import ClientConnectionResetError
from .._http._headers import Headers
from .._http._server import HTTPInputError, RawRequest
from ._response import HTTPBadRequest, HTTPRequestEntityTooLarge

if TYPE_CHECKING:
    from ._app import Application
    from ._serve import _Connection

__all__ = ["Request"]


class Request:
    """One HTTP request: method, path, query, headers, body and routing info.

    ``match_info`` holds the values of the route's ``{name}`` segments;
    ``app`` is the :class:`Application`; ``remote`` the client's address.
    """

    def __init__(
        self, raw: RawRequest, app: Application, conn: _Connection, match_info: dict[str, str]
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
                self._body = await self._conn.http.read_body(self.app.client_max_size)
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
