"""The whole exception tree of trio_ws.

Names and base classes follow aiohttp's so that ``except`` clauses port
unchanged; timeouts additionally subclass :class:`trio.TooSlowError` so that
trio code catches them the way it catches ``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

__all__ = [
    "ClientConnectionError",
    "ClientConnectionResetError",
    "ClientConnectorCertificateError",
    "ClientConnectorDNSError",
    "ClientConnectorError",
    "ClientError",
    "ClientHttpProxyError",
    "ClientOSError",
    "ClientResponseError",
    "InvalidURL",
    "ServerConnectionError",
    "ServerTimeoutError",
    "WSHandshakeTimeout",
    "WSMessageTypeError",
    "WSServerHandshakeError",
    "WSTimeoutError",
    "WebSocketError",
]


class WebSocketError(Exception):
    """A WebSocket protocol error; ``code`` is the close code it maps to.

    ``args == (code, message)`` and ``str(exc)`` is the message, as in aiohttp.
    It is returned as the ``data`` of an ERROR message, not raised.
    """

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.args[1])


class WSMessageTypeError(TypeError):
    """``receive_str``/``receive_bytes``/``receive_json`` got another message type."""


class WSTimeoutError(TimeoutError, trio.TooSlowError):
    """A WebSocket operation timed out.

    Raised by ``receive()`` when ``receive_timeout`` (or its ``timeout``
    argument) passes, and reported by ``exception()`` on the server after a
    heartbeat or close-handshake timeout. It is both a built-in
    :class:`TimeoutError` (what aiohttp raises) and a :class:`trio.TooSlowError`.
    """


class ClientError(Exception):
    """Base class of every client-side error."""


class ClientConnectionError(ClientError):
    """The connection to the server failed or broke."""


class ClientOSError(ClientConnectionError, OSError):
    """An operating-system error on the client's connection."""


class ClientConnectorError(ClientOSError):
    """The TCP (or TLS, or proxy) connection could not be made, e.g. refused."""


class ClientConnectorDNSError(ClientConnectorError):
    """The host name could not be resolved."""


class ClientConnectorCertificateError(ClientConnectorError):
    """TLS failed: the certificate was not valid, or the TLS handshake failed.

    For example, a server that answers in plain HTTP. A server that hangs up
    or resets during the TLS handshake gives a plain :class:`ClientConnectorError`.
    """


class ClientConnectionResetError(ClientConnectionError, ConnectionResetError):
    """The connection was closed: raised by ``send_*`` after close."""


class ServerConnectionError(ClientConnectionError):
    """The server misbehaved or went silent."""


class ServerTimeoutError(ServerConnectionError, WSTimeoutError):
    """The server did not answer in time (handshake ``timeout``, heartbeat)."""


class WSHandshakeTimeout(ServerTimeoutError):
    """Connecting and upgrading took longer than ``timeout`` seconds."""


class InvalidURL(ClientError, ValueError):
    """The URL is not a usable ``ws://`` or ``wss://`` (or http/https) URL."""


class ClientResponseError(ClientError):
    """The server answered with an HTTP response the client cannot accept.

    ``status`` is the HTTP status, ``headers`` the response headers, and
    ``message`` a short description.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers: Mapping[str, str] = dict(headers or {})
        self.body = body

    def __str__(self) -> str:
        return f"{self.status}, message={self.message!r}"


class WSServerHandshakeError(ClientResponseError):
    """The WebSocket upgrade failed (non-101 status, bad accept key, ...)."""


class ClientHttpProxyError(ClientResponseError):
    """The HTTP proxy refused the CONNECT request."""
