"""Building the upgrade request and judging the answer, as aiohttp's client does.

Theory of operation: pure functions and value objects, no I/O. The URL becomes a
:class:`Target`; the options are checked (:func:`check_options`) before anything
is opened; :func:`request_headers` merges the caller's, the session's and the
default headers with aiohttp's precedence; :func:`check_upgrade` accepts or
refuses the server's answer with aiohttp's messages.

Never: open a socket, or send a header twice.
"""

from __future__ import annotations

import base64
import functools
import math
import ssl as _ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .._exceptions import InvalidURL, RequestInfo, WSHandshakeError, WSServerHandshakeError
from .._http._client import UpgradeResponse, host_header
from .._http._headers import Headers, OutgoingHeaders, check_header
from .._protocol._deflate import BoundedDeflate, client_offer
from .._protocol._handshake import ResponseRejected, check_response
from ._options import ClientWSTimeout, Fingerprint

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "BasicAuth",
    "Params",
    "SSLArgument",
    "Target",
    "Timeouts",
    "check_options",
    "check_upgrade",
    "parse_url",
    "request_headers",
    "ssl_context_for",
]

_USER_AGENT = "trio_ws/0.1"
#: The bound on connecting and upgrading when ``timeout`` is a ``ClientWSTimeout``.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic credentials for ``auth=`` and ``proxy_auth=``."""

    login: str
    password: str = ""
    encoding: str = "latin1"

    def encode(self) -> str:
        """The ``Authorization`` header value."""
        raw = f"{self.login}:{self.password}".encode(self.encoding)
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Target:
    """Where the upgrade goes: the parsed ``ws://`` or ``wss://`` URL."""

    scheme: str
    host: str
    port: int
    path: str
    secure: bool

    @property
    def authority(self) -> str:
        """The ``Host`` header: host, and the port unless it is the scheme's default."""
        return host_header(self.host, self.port, 443 if self.secure else 80)

    @property
    def url(self) -> str:
        """The URL without credentials, as ``RequestInfo.url`` shows it."""
        return f"{self.scheme}://{self.authority}{self.path}"


Params = Mapping[str, str] | Iterable[tuple[str, str]] | str | None


def parse_url(url: str, params: Params) -> tuple[Target, BasicAuth | None]:
    """The target and any ``user:pass@`` credentials of ``url``; raises :class:`InvalidURL`."""
    if not params and type(url) is str:
        # A client reconnects to the same few URLs: parse each once (the
        # results are immutable; a URL that fails is not remembered).
        return _parse_plain_url(url)
    return _parse_url(url, params)


@functools.lru_cache(maxsize=256)
def _parse_plain_url(url: str) -> tuple[Target, BasicAuth | None]:
    return _parse_url(url, None)


def _parse_url(url: str, params: Params) -> tuple[Target, BasicAuth | None]:
    try:
        parts = urlsplit(str(url))
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"Invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https"):
        raise InvalidURL(f"Unsupported scheme in {url!r}: use ws:// or wss://")
    if not parts.hostname:
        raise InvalidURL(f"No host in {url!r}")
    secure = scheme in ("wss", "https")
    path = parts.path or "/"
    query = parts.query
    if params:
        if isinstance(params, str):
            extra = params  # already a query string, as aiohttp takes it
        else:
            extra = urlencode(list(params.items() if isinstance(params, Mapping) else params))
        query = f"{query}&{extra}" if query else extra
    if query:
        path = f"{path}?{query}"
    auth = None
    if parts.username is not None:
        auth = BasicAuth(parts.username, parts.password or "")
    return Target(
        scheme,
        parts.hostname,
        port or (443 if secure else 80),
        quote(path, safe="/?&=%:@+!$,;*'()~"),
        secure,
    ), auth


SSLArgument = bool | _ssl.SSLContext | Fingerprint | None


def ssl_context_for(ssl: SSLArgument) -> _ssl.SSLContext:
    """The client context for ``ssl=`` (a checked argument)."""
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    ctx = _ssl.create_default_context()
    if ssl is False or isinstance(ssl, Fingerprint):
        # A fingerprint replaces the usual checks (it is compared after the handshake).
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    return ctx


def check_options(o: dict[str, Any]) -> None:
    """Refuse what aiohttp refuses, before anything is opened."""
    compress = o["compress"]
    if compress and not 9 <= compress <= 15:
        raise ValueError(
            f"compress must be 0 (no permessage-deflate) or window bits 9-15, got {compress!r}"
        )
    ssl = o["ssl"]
    if not isinstance(ssl, (bool, _ssl.SSLContext, Fingerprint, type(None))):
        raise TypeError(f"ssl must be an SSLContext, a bool, a Fingerprint or None, got {ssl!r}")
    timeout = o["timeout"]
    if not isinstance(timeout, ClientWSTimeout) and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float))
    ):
        raise TypeError(f"timeout must be seconds or a ClientWSTimeout, got {timeout!r}")


@dataclass(frozen=True)
class Timeouts:
    """The handshake bound, the close wait and the receive timeout of one connection."""

    handshake: float
    close: float
    receive: float | None

    @classmethod
    def of(cls, timeout: float | ClientWSTimeout, receive_timeout: float | None) -> Timeouts:
        """From ``ws_connect``'s ``timeout`` and ``receive_timeout`` options."""
        if isinstance(timeout, ClientWSTimeout):
            close = math.inf if timeout.ws_close is None else timeout.ws_close
            receive = timeout.ws_receive
            handshake = DEFAULT_HANDSHAKE_TIMEOUT
        else:
            handshake = close = float(timeout)
            receive = None
        if receive_timeout is not None:
            receive = receive_timeout
        return cls(handshake, close, receive)


def request_headers(
    session_headers: Headers,
    target: Target,
    key: bytes,
    auth: BasicAuth | None,
    o: dict[str, Any],
) -> OutgoingHeaders:
    """The handshake's headers, merged as aiohttp merges them.

    Raises ``ValueError`` (naming the header) or ``TypeError`` for a header
    that cannot be sent, see :func:`~trio_ws._http._headers.check_header`,
    and ``ValueError`` for ``Authorization`` together with ``auth``.
    """
    # Each pair is checked once, where it comes in: the caller's headers
    # here, the session's, the options and the URL's host below.
    call = OutgoingHeaders(o["headers"] or {}).items_all()
    names = {k.lower() for k, _ in call}
    if auth is not None and "authorization" in names:
        raise ValueError(
            "Cannot combine an Authorization header with auth= or credentials in the URL"
        )
    # The caller's Upgrade, Connection and Sec-WebSocket-Version win...
    for name, value in _DEFAULTS:
        if name.lower() not in names:
            call.append((name, value))
            names.add(name.lower())
    # ...while the key is always ours, and the options replace their header.
    ours = [("Sec-WebSocket-Key", key.decode())]
    if o["protocols"]:
        ours.append(_checked("Sec-WebSocket-Protocol", ", ".join(o["protocols"])))
    if o["origin"] is not None:
        ours.append(_checked("Origin", o["origin"]))
    if o["compress"]:
        ours.append(
            ("Sec-WebSocket-Extensions", client_offer(o["compress"], notakeover=o["notakeover"]))
        )
    replaced = {k.lower() for k, _ in ours}
    call = [(k, v) for k, v in call if k.lower() not in replaced]
    call.extend(ours)
    names |= replaced
    # A header given to ws_connect replaces the session's header of that name.
    host = next((v for k, v in call if k.lower() == "host"), None)
    req = [_checked("Host", target.authority) if host is None else ("Host", host)]
    req.extend(
        _checked(k, v) for k, v in session_headers.items_all() if k.lower() not in names
    )
    req.extend((k, v) for k, v in call if k.lower() != "host")
    if not any(k.lower() == "user-agent" for k, _ in req):
        req.append(("User-Agent", _USER_AGENT))
    if auth is not None:
        value = auth.encode()
        req = [(k, v) for k, v in req if k.lower() != "authorization"]
        req.append(_checked("Authorization", value))
    return OutgoingHeaders.from_checked(req)


_DEFAULTS = (
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
)


def _checked(name: str, value: str) -> tuple[str, str]:
    check_header(name, value)
    return name, value


def check_upgrade(
    response: UpgradeResponse, key: bytes, o: dict[str, Any], request_info: RequestInfo
) -> tuple[str | None, BoundedDeflate | None]:
    """The subprotocol and deflate state of a valid 101; raises ``WSServerHandshakeError``.

    The rules are :func:`trio_ws._protocol._handshake.check_response`'s; a
    deflate answer that cannot be used carries a ``WSHandshakeError`` as its
    cause, as in aiohttp.
    """
    try:
        return check_response(
            response.status,
            response.headers,
            key=key,
            protocols=o["protocols"],
            compress=o["compress"],
            notakeover=o["notakeover"],
            max_size=o["max_msg_size"],
        )
    except ResponseRejected as exc:
        error = WSServerHandshakeError(
            request_info,
            (),
            status=response.status,
            message=exc.message,
            headers=response.headers,
            body=response.body,
        )
        if exc.__cause__ is not None:
            raise error from WSHandshakeError(str(exc.__cause__))
        raise error from None
