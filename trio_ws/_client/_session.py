"""ClientSession and ws_connect."""

from __future__ import annotations

import base64
import ssl as _ssl
from collections.abc import AsyncIterator, Generator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import trio
from wsproto.utilities import generate_accept_token, generate_nonce

from .._engine._websocket import DEFAULT_MAX_MSG_SIZE
from .._exceptions import InvalidURL, WSHandshakeTimeout, WSServerHandshakeError
from .._http._client import UpgradeResponse, open_upgraded_stream
from .._http._headers import Headers
from .._protocol._deflate import (
    DeflateNegotiationError,
    client_finalize,
    client_offer,
)
from ._ws import ClientWebSocketResponse

__all__ = ["BasicAuth", "ClientSession"]

_USER_AGENT = "trio_ws/0.1"


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
class _Target:
    host: str
    port: int
    path: str
    secure: bool


def _parse_url(url: str, params: Mapping[str, str] | None) -> tuple[_Target, BasicAuth | None]:
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
        extra = urlencode(list(params.items()))
        query = f"{query}&{extra}" if query else extra
    if query:
        path = f"{path}?{query}"
    auth = None
    if parts.username is not None:
        auth = BasicAuth(parts.username, parts.password or "")
    return _Target(
        parts.hostname,
        port or (443 if secure else 80),
        quote(path, safe="/?&=%:@+!$,;*'()~"),
        secure,
    ), auth


def _ssl_context(ssl: bool | _ssl.SSLContext | None) -> _ssl.SSLContext:
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    ctx = _ssl.create_default_context()
    if ssl is False:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    return ctx


class ClientSession:
    """A client that opens WebSockets, as ``aiohttp.ClientSession``.

    Use it as ``async with ClientSession() as session:`` or create it plainly
    and ``await session.close()`` when done. ``headers`` are sent with every
    handshake. Inside ``async with``, ``ws = await session.ws_connect(url)``
    also works: that WebSocket's tasks then live in the session's nursery.
    When the session ends, the WebSockets it still owns are closed
    concurrently (1000, or 1011 if the block raised, each waiting at most its
    ``timeout`` for the server's answer; 1001 if the block was cancelled), and
    no task outlives the ``async with`` block. A WebSocket that has ended
    (closed by either side or broken) is forgotten at once. Outside ``async
    with``, use ``async with session.ws_connect(url) as ws:``, whose block
    owns the tasks.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        auth: BasicAuth | None = None,
    ) -> None:
        self._headers = Headers(headers)
        self._auth = auth
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        # The WebSockets opened by ``await ws_connect``, while they run (a dict
        # keeps their order); each removes itself when its tasks have ended.
        self._owned: dict[ClientWebSocketResponse, None] = {}

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    async def __aenter__(self) -> ClientSession:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            owned = list(self._owned)
            if owned:
                # Concurrently: N unanswered closes take one ``timeout``, not N.
                async with trio.open_nursery() as nursery:
                    for ws in owned:
                        nursery.start_soon(ws._owner_exit, exc)
        finally:
            self._closed = True
            cm, self._nursery_cm, self._nursery = self._nursery_cm, None, None
            # Every owned connection has ended: the nursery exits at once, and
            # the body's own exception propagates unwrapped.
            await cm.__aexit__(None, None, None)
        return None

    async def close(self) -> None:
        """Close the session and every WebSocket it owns (``await ws_connect`` ones).

        The WebSockets are closed concurrently with code 1000, each waiting at
        most its ``timeout`` for the server's close frame (see
        ``ClientWebSocketResponse.close``). Later ``ws_connect`` calls raise
        ``RuntimeError``. Raises nothing else; cancellation propagates.
        """
        self._closed = True
        owned = [ws for ws in self._owned if not ws.closed]
        if owned:
            async with trio.open_nursery() as nursery:
                for ws in owned:
                    nursery.start_soon(ws.close)

    def ws_connect(
        self,
        url: str,
        *,
        method: str = "GET",
        protocols: Iterable[str] = (),
        timeout: float = 10.0,
        receive_timeout: float | None = None,
        autoclose: bool = True,
        autoping: bool = True,
        heartbeat: float | None = None,
        auth: BasicAuth | None = None,
        origin: str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        ssl: bool | _ssl.SSLContext | None = True,
        compress: int = 15,
        notakeover: bool = False,
        max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
        proxy: str | None = None,
        proxy_auth: BasicAuth | None = None,
        proxy_headers: Mapping[str, str] | None = None,
        max_queue: int | None = None,
        write_limit: int | None = None,
    ) -> _WSConnect:
        """Open a WebSocket to ``url`` (``ws://``, ``wss://``).

        Use as ``async with session.ws_connect(url) as ws:`` (the block owns
        the connection's tasks and closes it on exit: 1000 normally, 1011 if
        the block raised, 1001 if it was cancelled) or, inside ``async with
        ClientSession()``, as ``ws = await session.ws_connect(url)``.

        Parameters match aiohttp's: ``protocols`` offered subprotocols (the
        chosen one is ``ws.protocol``); ``timeout`` bounds the connect plus
        handshake and, later, the wait for the peer's close frame;
        ``receive_timeout``, ``autoclose``, ``autoping``, ``heartbeat``,
        ``max_msg_size`` as on the server; ``auth`` Basic credentials (also
        taken from ``user:pass@`` in the URL); ``origin`` the Origin header;
        ``params`` added to the query; ``headers`` extra request headers;
        ``ssl`` True (verify), False (no verification) or an ``SSLContext``;
        ``compress`` the window bits to offer for permessage-deflate (0: do
        not offer); ``notakeover`` also offers ``client_no_context_takeover``
        (``ws.client_notakeover`` tells whether it was agreed); ``proxy`` an
        ``http://host:port`` proxy tunnelled with CONNECT, with ``proxy_auth``.

        Raises :class:`InvalidURL`; ``ClientConnectorDNSError``,
        ``ClientConnectorError`` (refused, or the server hung up during TLS),
        ``ClientConnectorCertificateError`` (TLS failed), ``ClientHttpProxyError``;
        ``ServerConnectionError`` when the server resets or hangs up before its
        response head is complete, or answers something that is not HTTP (or
        a head over 16 KiB); :class:`WSHandshakeTimeout` (a
        ``ServerTimeoutError``, ``TimeoutError`` and ``trio.TooSlowError``)
        after ``timeout``; :class:`WSServerHandshakeError` (with ``status``,
        ``headers`` and ``body``) when the server does not accept the upgrade;
        ``RuntimeError`` once the session is closed. Nothing is left open when
        it raises.
        """
        if method.upper() != "GET":
            raise ValueError("WebSocket handshakes use GET")
        options = dict(
            protocols=tuple(protocols),
            timeout=timeout,
            receive_timeout=receive_timeout,
            autoclose=autoclose,
            autoping=autoping,
            heartbeat=heartbeat,
            auth=auth,
            origin=origin,
            params=params,
            headers=headers,
            ssl=ssl,
            compress=compress,
            notakeover=notakeover,
            max_msg_size=max_msg_size,
            proxy=proxy,
            proxy_auth=proxy_auth,
            proxy_headers=proxy_headers,
            max_queue=max_queue,
            write_limit=write_limit,
        )
        return _WSConnect(self, url, options)

    async def _connect(self, url: str, o: dict[str, Any]) -> _Handshaken:
        """Connect and upgrade; on any failure nothing is left open."""
        if self._closed:
            raise RuntimeError("Session is closed")
        target, url_auth = _parse_url(url, o["params"])
        auth = o["auth"] or url_auth or self._auth
        key = generate_nonce()
        # A header given to ws_connect replaces the session's header of that name.
        call = Headers(o["headers"] or {})
        req = Headers([(k, v) for k, v in self._headers.items_all() if k not in call])
        for k, v in call.items_all():
            req.add(k, v)
        names = {k.lower() for k in req}
        base = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key.decode()),
            ("Sec-WebSocket-Version", "13"),
        ]
        if "user-agent" not in names:
            base.append(("User-Agent", _USER_AGENT))
        if o["protocols"]:
            base.append(("Sec-WebSocket-Protocol", ", ".join(o["protocols"])))
        if o["compress"]:
            base.append(
                (
                    "Sec-WebSocket-Extensions",
                    client_offer(o["compress"], notakeover=o["notakeover"]),
                )
            )
        if o["origin"] is not None:
            base.append(("Origin", o["origin"]))
        if auth is not None and "authorization" not in names:
            base.append(("Authorization", auth.encode()))
        proxy = None
        proxy_headers: list[tuple[str, str]] = list((o["proxy_headers"] or {}).items())
        if o["proxy"]:
            p = urlsplit(o["proxy"])
            if p.scheme != "http" or not p.hostname:
                raise InvalidURL(f"Only http:// proxies are supported: {o['proxy']!r}")
            proxy = (p.hostname, p.port or 80)
            pauth = o["proxy_auth"] or (
                BasicAuth(p.username, p.password or "") if p.username else None
            )
            if pauth is not None:
                proxy_headers.append(("Proxy-Authorization", pauth.encode()))
        ssl_context = _ssl_context(o["ssl"]) if target.secure else None
        with trio.move_on_after(o["timeout"]) as scope:
            response = await open_upgraded_stream(
                host=target.host,
                port=target.port,
                target=target.path,
                headers=[*base, *req.items_all()],
                ssl_context=ssl_context,
                proxy=proxy,
                proxy_headers=proxy_headers,
            )
        if scope.cancelled_caught:
            raise WSHandshakeTimeout(
                f"Connection to {target.host}:{target.port} timed out after {o['timeout']} seconds"
            )
        try:
            protocol, deflate = self._check_upgrade(response, key, o)
        except BaseException:
            await trio.aclose_forcefully(response.stream)
            raise
        try:
            ws = ClientWebSocketResponse(
                timeout=o["timeout"],
                receive_timeout=o["receive_timeout"],
                autoclose=o["autoclose"],
                autoping=o["autoping"],
                heartbeat=o["heartbeat"],
                max_msg_size=o["max_msg_size"],
                **{k: o[k] for k in ("max_queue", "write_limit") if o[k] is not None},
            )
        except BaseException:
            await trio.aclose_forcefully(response.stream)
            raise
        return _Handshaken(ws, response, protocol, deflate)

    async def _run_owned(
        self,
        url: str,
        o: dict[str, Any],
        *,
        task_status: trio.TaskStatus[ClientWebSocketResponse] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, then hold one session-owned WebSocket's tasks until they end.

        Runs in the session's nursery (``nursery.start``: a failure to connect
        is raised to the caller of ``ws_connect``). The WebSocket is in
        ``_owned`` exactly while its tasks run.
        """
        handshaken = await self._connect(url, o)
        ws = handshaken.ws
        started = False
        try:
            async with trio.open_nursery() as nursery:
                handshaken.start(nursery)
                started = True
                self._owned[ws] = None
                task_status.started(ws)
        finally:
            self._owned.pop(ws, None)
            if not started:
                await handshaken.abort()

    @staticmethod
    def _check_upgrade(response: Any, key: bytes, o: dict[str, Any]) -> tuple[str | None, Any]:
        headers: Headers = response.headers

        def fail(message: str) -> WSServerHandshakeError:
            return WSServerHandshakeError(
                message, status=response.status, headers=headers, body=response.body
            )

        if response.status != 101:
            raise fail("Invalid response status")
        if "websocket" not in headers.tokens("Upgrade"):
            raise fail("Invalid upgrade header")
        if "upgrade" not in headers.tokens("Connection"):
            raise fail("Invalid connection header")
        if headers.get("Sec-WebSocket-Accept", "").strip() != generate_accept_token(key).decode():
            raise fail("Invalid challenge response")
        protocol = headers.get("Sec-WebSocket-Protocol")
        if protocol is not None:
            protocol = protocol.strip()
            if protocol not in o["protocols"]:
                raise fail(f"Server chose a subprotocol that was not offered: {protocol!r}")
        extensions = headers.getall("Sec-WebSocket-Extensions", [])
        deflate = None
        if extensions:
            if not o["compress"]:
                raise fail("Server accepted an extension that was not offered")
            try:
                deflate = client_finalize(
                    extensions,
                    compress=o["compress"],
                    max_size=o["max_msg_size"],
                    notakeover=o["notakeover"],
                )
            except DeflateNegotiationError as exc:
                raise fail(f"Invalid extension answer: {exc}") from None
        return protocol, deflate


@dataclass
class _Handshaken:
    """A finished upgrade whose WebSocket has not started yet.

    Its stream is open: :meth:`start` hands it to the WebSocket, whose tasks
    close it when they end; :meth:`abort` closes it if it never starts.
    """

    ws: ClientWebSocketResponse
    response: UpgradeResponse
    protocol: str | None
    deflate: Any

    def start(self, nursery: trio.Nursery) -> ClientWebSocketResponse:
        """Start the WebSocket's tasks in ``nursery``; they own the stream from here on."""
        self.ws._start(
            nursery,
            self.response.stream,
            extensions=[self.deflate] if self.deflate is not None else None,
            protocol=self.protocol,
            trailing_data=self.response.trailing_data,
        )
        return self.ws

    async def abort(self) -> None:
        """Close the stream of a WebSocket that was never started."""
        await trio.aclose_forcefully(self.response.stream)


class _WSConnect:
    """What ``ws_connect`` returns: an async context manager, or awaitable in a session."""

    def __init__(self, session: ClientSession, url: str, options: dict[str, Any]) -> None:
        self._session = session
        self._url = url
        self._options = options
        self._cm: Any = None

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[ClientWebSocketResponse]:
        # Connecting happens before the connection's nursery opens, so its
        # errors come out as they are. The body runs inside the nursery, but
        # its exception is carried out of it and re-raised as it was, so
        # callers never see it wrapped in an ExceptionGroup.
        error: BaseException | None = None
        handshaken = await self._session._connect(self._url, self._options)
        started = False
        try:
            async with trio.open_nursery() as nursery:
                ws = handshaken.start(nursery)
                started = True
                try:
                    yield ws
                except BaseException as exc:
                    error = exc
                await ws._owner_exit(error)
        finally:
            if not started:
                await handshaken.abort()
        if error is not None:
            raise error

    async def __aenter__(self) -> ClientWebSocketResponse:
        self._cm = self._open()
        ws: ClientWebSocketResponse = await self._cm.__aenter__()
        return ws

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        result: bool | None = await self._cm.__aexit__(exc_type, exc, tb)
        return result

    def __await__(self) -> Generator[Any, None, ClientWebSocketResponse]:
        return self._await().__await__()

    async def _await(self) -> ClientWebSocketResponse:
        session = self._session
        if session._nursery is None:
            raise RuntimeError(
                "await session.ws_connect(...) needs 'async with ClientSession()'; "
                "otherwise use 'async with session.ws_connect(...) as ws:'"
            )
        ws: ClientWebSocketResponse = await session._nursery.start(
            session._run_owned, self._url, self._options
        )
        return ws
