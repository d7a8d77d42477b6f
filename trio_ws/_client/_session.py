"""ClientSession and ws_connect."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import trio

from .._engine._websocket import DEFAULT_MAX_MSG_SIZE
from .._exceptions import ConnectionTimeoutError, InvalidURL, RequestInfo, WSHandshakeTimeout
from .._http._client import UpgradeResponse, open_connection, request_upgrade
from .._http._headers import Headers
from .._protocol._deflate import BoundedDeflate
from .._protocol._handshake import new_key
from ._options import ClientWSTimeout, Fingerprint
from ._request import (
    BasicAuth,
    Params,
    SSLArgument,
    Timeouts,
    check_options,
    check_upgrade,
    parse_url,
    request_headers,
    ssl_context_for,
)
from ._ws import ClientWebSocketResponse

__all__ = ["BasicAuth", "ClientSession", "ClientWSConnect"]


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
                        nursery.start_soon(ws.owner_exit, exc)
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
        timeout: float | ClientWSTimeout = 10.0,
        receive_timeout: float | None = None,
        autoclose: bool = True,
        autoping: bool = True,
        heartbeat: float | None = None,
        auth: BasicAuth | None = None,
        origin: str | None = None,
        params: Params = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        ssl: SSLArgument = True,
        compress: int = 0,
        notakeover: bool = False,
        max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
        proxy: str | None = None,
        proxy_auth: BasicAuth | None = None,
        proxy_headers: Mapping[str, str] | None = None,
        max_queue: int | None = None,
        write_limit: int | None = None,
        decode_text: bool = True,
    ) -> _WSConnect:
        """Open a WebSocket to ``url`` (``ws://``, ``wss://``).

        Use as ``async with session.ws_connect(url) as ws:`` (the block owns
        the connection's tasks and closes it on exit: 1000 normally, 1011 if
        the block raised, 1001 if it was cancelled) or, inside ``async with
        ClientSession()``, as ``ws = await session.ws_connect(url)`` (also
        ``async with await session.ws_connect(url) as ws:``).

        Parameters match aiohttp's: ``protocols`` offered subprotocols (the
        chosen one is ``ws.protocol``); ``timeout`` a number of seconds that
        bounds the connect plus handshake and, later, the wait for the peer's
        close frame, or a :class:`ClientWSTimeout` (``ws_receive``,
        ``ws_close``; the handshake is then bounded by 10 seconds);
        ``receive_timeout`` (overrides ``ws_receive``), ``autoclose``,
        ``autoping``, ``heartbeat``, ``max_msg_size`` as on the server;
        ``auth`` Basic credentials (also taken from ``user:pass@`` in the URL,
        else the session's); ``origin`` the Origin header; ``params`` (a
        mapping, pairs or a query string) added to the query; ``headers``
        request headers, which override the session's
        and the defaults of the same name (``Upgrade``, ``Connection``,
        ``Sec-WebSocket-Version``, ``Host``, ``User-Agent``), while
        ``Sec-WebSocket-Key`` is always generated and ``protocols``,
        ``origin`` and ``compress`` replace the header they set; ``ssl`` True
        (verify), False (no verification), an ``SSLContext``, a
        :class:`Fingerprint`, or None (as True); ``compress`` the window bits
        (9-15) to offer for permessage-deflate, 0 (the default, as aiohttp)
        offers none; ``notakeover`` also offers ``client_no_context_takeover``
        (``ws.client_notakeover`` tells whether it was agreed); ``proxy`` an
        ``http://host:port`` proxy tunnelled with CONNECT, with ``proxy_auth``;
        ``decode_text=False`` delivers TEXT data as UTF-8 ``bytes`` (still
        validated), as aiohttp's option does.

        Raises, when awaited or entered: ``ValueError`` for ``compress``
        outside 9-15 (0 aside), for ``auth`` together with URL credentials or
        an ``Authorization`` header, or a method other than GET (raised at
        once); ``TypeError`` for an ``ssl`` or ``timeout`` of another type;
        :class:`InvalidURL`; ``ClientConnectorDNSError``,
        ``ClientConnectorError`` (refused, or the server hung up during TLS;
        ``host``, ``port``, ``os_error``, ``errno``), ``ClientProxyConnectionError``,
        ``ClientConnectorCertificateError`` (certificate refused),
        ``ClientConnectorSSLError`` (TLS failed otherwise, e.g. a plain-HTTP
        server), ``ServerFingerprintMismatch``, ``ClientHttpProxyError``;
        ``ServerDisconnectedError`` when the server hangs up before its
        response head is complete, ``ServerConnectionError`` when it resets
        or answers something that is not HTTP (or a head over 16 KiB);
        :class:`WSHandshakeTimeout` (a ``ServerTimeoutError``,
        ``TimeoutError`` and ``trio.TooSlowError``) when the handshake bound
        passes, :class:`ConnectionTimeoutError` (a ``WSHandshakeTimeout``) if
        it passes while connecting; :class:`WSServerHandshakeError` (with
        ``status``, ``headers``, ``body``, ``request_info`` and ``history``)
        when the server does not accept the upgrade; ``RuntimeError`` once
        the session is closed. Nothing is left open when it raises.
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
            decode_text=decode_text,
        )
        return _WSConnect(self, url, options)

    async def _connect(self, url: str, o: dict[str, Any]) -> _Handshaken:
        """Connect and upgrade; on any failure nothing is left open."""
        check_options(o)
        if self._closed:
            raise RuntimeError("Session is closed")
        target, url_auth = parse_url(url, o["params"])
        if o["auth"] is not None and url_auth is not None:
            raise ValueError("Cannot combine auth= with credentials in the URL")
        auth = o["auth"] or url_auth or self._auth
        key = new_key()
        headers = request_headers(self._headers, target, key, auth, o)
        request_info = RequestInfo(target.url, "GET", headers, target.url)
        timeouts = Timeouts.of(o["timeout"], o["receive_timeout"])
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
        ssl = o["ssl"]
        ssl_context = ssl_context_for(ssl) if target.secure else None
        fingerprint = ssl.fingerprint if isinstance(ssl, Fingerprint) and target.secure else None
        stream = None
        with trio.move_on_after(timeouts.handshake) as scope:
            stream = await open_connection(
                host=target.host,
                port=target.port,
                ssl_context=ssl_context,
                ssl_arg=ssl,
                fingerprint=fingerprint,
                proxy=proxy,
                proxy_headers=proxy_headers,
            )
            response = await request_upgrade(
                stream, target=target.path, headers=headers.items_all()
            )
        if scope.cancelled_caught:
            where = f"{target.host}:{target.port}"
            after = f"after {timeouts.handshake} seconds"
            if stream is None:
                raise ConnectionTimeoutError(f"Connection to {where} timed out {after}")
            raise WSHandshakeTimeout(f"WebSocket handshake with {where} timed out {after}")
        assert stream is not None
        try:
            protocol, deflate = check_upgrade(response, key, o, request_info)
            ws = ClientWebSocketResponse(
                timeout=timeouts.close,
                receive_timeout=timeouts.receive,
                autoclose=o["autoclose"],
                autoping=o["autoping"],
                heartbeat=o["heartbeat"],
                max_msg_size=o["max_msg_size"],
                decode_text=o["decode_text"],
                **{k: o[k] for k in ("max_queue", "write_limit") if o[k] is not None},
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return _Handshaken(ws, stream, response, protocol, deflate)

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


@dataclass
class _Handshaken:
    """A finished upgrade whose WebSocket has not started yet.

    Its stream is open: :meth:`start` hands it to the WebSocket, whose tasks
    close it when they end; :meth:`abort` closes it if it never starts.
    """

    ws: ClientWebSocketResponse
    stream: trio.abc.Stream
    response: UpgradeResponse
    protocol: str | None
    deflate: BoundedDeflate | None

    def start(self, nursery: trio.Nursery) -> ClientWebSocketResponse:
        """Start the WebSocket's tasks in ``nursery``; they own the stream from here on."""
        self.ws.start_in(
            nursery,
            self.stream,
            extensions=[self.deflate] if self.deflate is not None else None,
            protocol=self.protocol,
            trailing_data=self.response.trailing_data,
        )
        return self.ws

    async def abort(self) -> None:
        """Close the stream of a WebSocket that was never started."""
        await trio.aclose_forcefully(self.stream)


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
                await ws.owner_exit(error)
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


ClientWSConnect = _WSConnect
"""What :meth:`ClientSession.ws_connect` returns (its public name, for annotations)."""
