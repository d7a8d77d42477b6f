"""The whole exception tree of trio_ws.

Names and base classes follow aiohttp's so that ``except`` clauses port
unchanged; timeouts additionally subclass :class:`trio.TooSlowError` so that
trio code catches them the way it catches ``trio.fail_after``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, NamedTuple

import trio

__all__ = [
    "ClientConnectionError",
    "ClientConnectionResetError",
    "ClientConnectorCertificateError",
    "ClientConnectorDNSError",
    "ClientConnectorError",
    "ClientConnectorSSLError",
    "ClientError",
    "ClientHttpProxyError",
    "ClientOSError",
    "ClientProxyConnectionError",
    "ClientResponseError",
    "ClientSSLError",
    "ConnectionTimeoutError",
    "InvalidURL",
    "RequestInfo",
    "ServerConnectionError",
    "ServerDisconnectedError",
    "ServerFingerprintMismatch",
    "ServerTimeoutError",
    "WSHandshakeError",
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
    """The TCP (or TLS, or proxy) connection could not be made, e.g. refused.

    ``host`` and ``port`` name what was being connected to, ``os_error`` is
    the operating system's error (for a host with several addresses, the
    last attempt's), and ``errno`` and ``strerror`` are copied from it, as in
    aiohttp. ``ssl`` is the ``ssl=`` argument (``True`` shows as
    ``ssl:default``). ``str()`` reads ``Cannot connect to host H:P ssl:S
    [reason]``.
    """

    def __init__(self, host: str, port: int, os_error: OSError, ssl: object = True) -> None:
        self._host = host
        self._port = port
        self._os_error = os_error
        self._ssl = ssl
        super().__init__(os_error.errno, os_error.strerror or str(os_error))
        self.args = (host, port, os_error)

    @property
    def host(self) -> str:
        """The host that could not be reached (the proxy's, for a proxy)."""
        return self._host

    @property
    def port(self) -> int:
        """The port that could not be reached."""
        return self._port

    @property
    def os_error(self) -> OSError:
        """The underlying operating-system (or TLS) error."""
        return self._os_error

    @property
    def ssl(self) -> object:
        """The ``ssl=`` argument of the connection attempt."""
        return self._ssl

    def __str__(self) -> str:
        shown = "default" if self._ssl is True else self._ssl
        return f"Cannot connect to host {self._host}:{self._port} ssl:{shown} [{self.strerror}]"

    # OSError's own pickling does not know the arguments above.
    __reduce__ = BaseException.__reduce__


class ClientConnectorDNSError(ClientConnectorError):
    """The host name could not be resolved (``os_error`` is the ``socket.gaierror``)."""


class ClientProxyConnectionError(ClientConnectorError):
    """The HTTP proxy itself could not be reached (``host``/``port`` are the proxy's)."""


class ClientSSLError(ClientConnectorError):
    """Base class of the TLS failures while connecting."""


class ClientConnectorSSLError(ClientSSLError, ssl.SSLError):
    """The TLS handshake failed for a reason other than the certificate.

    For example ``wss://`` to a server that answers in plain HTTP, or no
    protocol version or cipher in common. Also an :class:`ssl.SSLError`.
    """


class ClientConnectorCertificateError(ClientSSLError, ssl.CertificateError):
    """The server's certificate was refused (not trusted, expired, wrong host name).

    ``certificate_error`` is the :class:`ssl.SSLCertVerificationError`. Also an
    :class:`ssl.CertificateError`. A server that hangs up or resets during the
    TLS handshake gives a plain :class:`ClientConnectorError`.
    """

    def __init__(
        self, host: str, port: int, certificate_error: OSError, ssl: object = True
    ) -> None:
        super().__init__(host, port, certificate_error, ssl)

    @property
    def certificate_error(self) -> OSError:
        """The certificate verification error."""
        return self._os_error

    def __str__(self) -> str:
        err = self._os_error
        return (
            f"Cannot connect to host {self._host}:{self._port} ssl:{self._ssl is not False} "
            f"[{type(err).__name__}: {err.args}]"
        )


class ClientConnectionResetError(ClientConnectionError, ConnectionResetError):
    """The connection was closed: raised by ``send_*`` after close."""


class ServerConnectionError(ClientConnectionError):
    """The server misbehaved or went silent."""


class ServerDisconnectedError(ServerConnectionError):
    """The server closed the connection before its answer was complete.

    Raised by ``ws_connect`` when the server hangs up (a clean close, not a
    reset) before or in the middle of its response head. ``message`` is the
    description (``"Server disconnected"`` by default).
    """

    def __init__(self, message: str | None = None) -> None:
        if message is None:
            message = "Server disconnected"
        super().__init__(message)
        self.message = message


class ServerFingerprintMismatch(ServerConnectionError):
    """The server's certificate does not have the digest given as ``ssl=Fingerprint(...)``.

    ``expected`` and ``got`` are the SHA-256 digests, ``host`` and ``port``
    the server's address.
    """

    def __init__(self, expected: bytes, got: bytes, host: str, port: int) -> None:
        super().__init__(expected, got, host, port)
        self.expected = expected
        self.got = got
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} expected={self.expected!r} got={self.got!r} "
            f"host={self.host!r} port={self.port!r}>"
        )


class ServerTimeoutError(ServerConnectionError, WSTimeoutError):
    """The server did not answer in time (handshake ``timeout``, heartbeat)."""


class WSHandshakeTimeout(ServerTimeoutError):
    """Connecting and upgrading took longer than the handshake ``timeout``."""


class ConnectionTimeoutError(WSHandshakeTimeout):
    """The handshake ``timeout`` passed while connecting (TCP, proxy or TLS).

    A :class:`ServerTimeoutError` as in aiohttp, and a :class:`WSHandshakeTimeout`
    (what trio_ws raised before it had this name).
    """


class InvalidURL(ClientError, ValueError):
    """The URL is not a usable ``ws://`` or ``wss://`` (or http/https) URL."""


class WSHandshakeError(Exception):
    """The server's ``Sec-WebSocket-Extensions`` answer cannot be used.

    As in aiohttp, it never escapes ``ws_connect``: the client raises
    :class:`WSServerHandshakeError` with this error as its ``__cause__``.
    """


class RequestInfo(NamedTuple):
    """The upgrade request an error answers, as ``ClientResponseError.request_info``.

    ``url`` and ``real_url`` are strings (aiohttp has ``yarl.URL``), without
    credentials; ``headers`` are the request headers that were sent.
    """

    url: str
    method: str
    headers: Mapping[str, str]
    real_url: str


_NO_REQUEST = RequestInfo("", "GET", {}, "")


class ClientResponseError(ClientError):
    """The server answered with an HTTP response the client cannot accept.

    Constructed as aiohttp's: ``(request_info, history, *, status, message,
    headers)``. ``status`` is the HTTP status, ``headers`` the response
    headers (case-insensitive), ``message`` a short description,
    ``request_info`` the request (:class:`RequestInfo`) and ``history`` the
    responses of redirects before it (always empty: ``ws_connect`` follows
    none). trio_ws adds ``body``, the start of the response body (at most 64 KiB).
    """

    def __init__(
        self,
        request_info: RequestInfo | None = None,
        history: tuple[Any, ...] = (),
        *,
        status: int | None = None,
        message: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(request_info, history)
        self.request_info = request_info if request_info is not None else _NO_REQUEST
        self.history = history
        self.status = status if status is not None else 0
        self.message = message
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.body = body

    def __str__(self) -> str:
        return f"{self.status}, message={self.message!r}, url={self.request_info.real_url!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class WSServerHandshakeError(ClientResponseError):
    """The WebSocket upgrade failed (non-101 status, bad accept key, ...)."""


class ClientHttpProxyError(ClientResponseError):
    """The HTTP proxy refused the CONNECT request."""
