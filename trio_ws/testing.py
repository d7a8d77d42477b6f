"""Helpers for testing trio_ws applications in your own pytest-trio suite.

Import it as ``import trio_ws.testing`` (nothing here is re-exported from
``trio_ws``). Two async context managers do the work:

* :func:`open_test_server` serves a :class:`~trio_ws.web.Application` on a
  free port of ``127.0.0.1`` in a nursery it owns, and yields a
  :class:`TestServer` that knows its URLs.
* :func:`open_test_client` does the same (or reuses a running
  :class:`TestServer`) and yields a :class:`TestClient`: a
  :class:`~trio_ws.ClientSession` aimed at that server, with
  ``ws_connect(path)`` and a small plain-HTTP ``get(path)``.

Who owns what: the server's tasks live in the nursery of
``open_test_server``'s ``async with`` block. Leaving the block stops the
server gracefully, as cancelling :func:`trio_ws.web.serve` does (open
WebSockets get 1001, handlers get ``shutdown_timeout`` seconds to return) and
runs the application's cleanup hooks. An exception raised in the block
(``pytest.raises`` included) comes out as it was raised, never wrapped in an
``ExceptionGroup``.
"""

from __future__ import annotations

import json
import ssl as _ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

from . import ClientSession, ClientWSConnect
from ._http._headers import Headers
from .web import Application, ServerLimits, Site, serve

__all__ = [
    "TestClient",
    "TestResponse",
    "TestServer",
    "open_test_client",
    "open_test_server",
]

_MAX_RESPONSE_BODY = 64 * 1024 * 1024


class TestServer:
    """A running test server, as yielded by :func:`open_test_server`.

    ``app`` is the application served, ``site`` the :class:`~trio_ws.web.Site`
    that :func:`~trio_ws.web.serve` reported, ``host`` and ``port`` where it
    listens, ``secure`` whether it serves TLS. Build URLs with :meth:`url` and
    :meth:`ws_url`.
    """

    __test__ = False  # not a test class, even when imported into a test module

    def __init__(
        self, app: Application, site: Site, scope: trio.CancelScope, stopped: trio.Event
    ) -> None:
        self.app = app
        self.site = site
        self._scope = scope
        self._stopped = stopped

    @property
    def host(self) -> str:
        """The address the server is bound to, such as ``"127.0.0.1"``."""
        return self.site.host

    @property
    def port(self) -> int:
        """The port the server is bound to (picked free by the system)."""
        return self.site.port

    @property
    def secure(self) -> bool:
        """True when the server was given an ``ssl_context`` (``https``/``wss``)."""
        return self.site.secure

    @property
    def closed(self) -> bool:
        """True once the server has stopped (after :meth:`close` or the block's end)."""
        return self._stopped.is_set()

    def url(self, path: str = "/") -> str:
        """The ``http://`` (``https://``) URL of ``path`` on this server.

        ``path`` must start with ``/`` and may carry a query string; raises
        ``ValueError`` otherwise.
        """
        return self.site.url + _check_path(path)

    def ws_url(self, path: str = "/") -> str:
        """The ``ws://`` (``wss://``) URL of ``path``; raises ``ValueError`` as :meth:`url`."""
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{urlsplit(self.site.url).netloc}{_check_path(path)}"

    async def close(self) -> None:
        """Stop the server now and wait until it has stopped.

        Stops accepting connections, runs ``on_shutdown`` hooks, closes every
        open WebSocket with 1001 GOING_AWAY, waits up to ``shutdown_timeout``
        for handlers to return, cancels the rest and runs ``on_cleanup`` hooks.
        Use it to test how clients see a server going away. Calling it again
        does nothing. If cancelled while waiting, the server still finishes
        stopping in the background of ``open_test_server``'s block.
        """
        self._scope.cancel()
        await self._stopped.wait()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "serving"
        return f"<TestServer {self.site.url} {state}>"


def _check_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    return path


@asynccontextmanager
async def open_test_server(
    app: Application,
    *,
    host: str = "127.0.0.1",
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 2.0,
    limits: ServerLimits | None = None,
) -> AsyncIterator[TestServer]:
    """Serve ``app`` on a free port of ``host`` for the duration of an ``async with`` block.

    Yields a :class:`TestServer` once the application's ``on_startup`` hooks
    have run and the port is listening. ``ssl_context`` (a server-side
    context, e.g. from ``trustme``) serves HTTPS/WSS; ``limits`` are passed
    to :func:`~trio_ws.web.serve`. At the end of the block the server stops
    as :meth:`TestServer.close` describes; ``shutdown_timeout`` (2 s, shorter
    than ``serve``'s default to keep tests quick) bounds the wait for handlers.

    Raises what binding raises (``OSError``) and what an ``on_startup`` hook
    raises, unwrapped. An exception from the block itself propagates unchanged.
    """
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[Site] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await serve(
                    app,
                    host,
                    0,
                    ssl_context=ssl_context,
                    shutdown_timeout=shutdown_timeout,
                    limits=limits,
                    task_status=task_status,
                )
        finally:
            stopped.set()

    # The block runs inside the server's nursery; its exception (or one from
    # starting) is carried out of the nursery and re-raised as it was, so
    # callers never have to unwrap an ExceptionGroup.
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            site: Site = await nursery.start(run)
        except BaseException as exc:
            error = exc
        else:
            try:
                yield TestServer(app, site, scope, stopped)
            except BaseException as exc:
                error = exc
            scope.cancel()
    if error is not None:
        raise error


@dataclass(frozen=True)
class TestResponse:
    """A complete plain-HTTP response, as returned by :meth:`TestClient.get`.

    ``headers`` is a case-insensitive mapping (``getall(name)`` lists repeated
    headers); ``body`` the raw bytes.
    """

    __test__ = False

    status: int
    reason: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)

    @property
    def content_type(self) -> str:
        """The media type of ``Content-Type`` without parameters, lower-cased ("" if absent)."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    @property
    def text(self) -> str:
        """The body decoded with the ``charset`` of ``Content-Type`` (default utf-8).

        Raises ``UnicodeDecodeError`` if it does not decode, ``LookupError``
        for an unknown charset.
        """
        charset = "utf-8"
        for param in self.headers.get("Content-Type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        return self.body.decode(charset)

    def json(self) -> Any:
        """The body parsed as JSON; raises ``json.JSONDecodeError`` (a ``ValueError``)."""
        return json.loads(self.text)


class TestClient:
    """A client aimed at one :class:`TestServer`, as yielded by :func:`open_test_client`.

    ``server`` is that server and ``session`` the open
    :class:`~trio_ws.ClientSession` behind :meth:`ws_connect`.
    """

    __test__ = False

    def __init__(
        self, server: TestServer, session: ClientSession, ssl: bool | _ssl.SSLContext
    ) -> None:
        self.server = server
        self.session = session
        self._ssl = ssl

    def ws_connect(self, path: str = "/", **kwargs: Any) -> ClientWSConnect:
        """Open a WebSocket to ``path`` on the server: ``ClientSession.ws_connect`` with its URL.

        Use it as ``async with client.ws_connect("/ws") as ws:`` (the block
        owns the connection) or as ``ws = await client.ws_connect("/ws")``
        (the connection lives until the client's block ends, which closes it
        with 1000, or 1011 if the block raised, or 1001 if it was cancelled).
        Keyword arguments are those of :meth:`trio_ws.ClientSession.ws_connect`;
        ``ssl`` defaults to the client's. Raises what ``ws_connect`` raises,
        e.g. :class:`~trio_ws.WSServerHandshakeError` when the handler answers
        without upgrading, and ``ValueError`` for a ``path`` without a leading ``/``.
        """
        if self.server.secure:
            kwargs.setdefault("ssl", self._ssl)
        return self.session.ws_connect(self.server.ws_url(path), **kwargs)

    async def request(
        self,
        method: str,
        path: str = "/",
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        data: bytes | str = b"",
        timeout: float = 10.0,
    ) -> TestResponse:
        """Send one plain HTTP/1.1 request (``Connection: close``) and read the whole answer.

        ``data`` (``str`` is sent as utf-8) becomes the body with its
        ``Content-Length``; ``headers`` are added to ``Host`` and
        ``Connection``. Returns a :class:`TestResponse` whatever the status.

        Raises ``trio.TooSlowError`` when the exchange takes longer than
        ``timeout`` seconds, ``OSError`` when the server cannot be reached,
        ``trio.BrokenResourceError`` when the connection breaks or is closed
        before the whole response arrived (and for a failed TLS handshake),
        ``h11.RemoteProtocolError`` when the server answers with invalid HTTP
        or a body over 64 MiB, and ``ValueError`` for a ``path`` without a
        leading ``/``.
        """
        target = _check_path(path)
        body = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        request_headers = [
            ("Host", urlsplit(self.server.site.url).netloc),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
        ]
        if headers is not None:
            items = headers.items() if isinstance(headers, Mapping) else headers
            request_headers.extend((str(k), str(v)) for k, v in items)
        with trio.fail_after(timeout):
            stream = await self._open_stream()
            try:
                return await _exchange(stream, method.upper(), target, request_headers, body)
            finally:
                await trio.aclose_forcefully(stream)

    async def get(
        self,
        path: str = "/",
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        timeout: float = 10.0,
    ) -> TestResponse:
        """``request("GET", path, ...)``: returns and raises as :meth:`request`."""
        return await self.request("GET", path, headers=headers, timeout=timeout)

    async def _open_stream(self) -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream(self.server.host, self.server.port)
        if not self.server.secure:
            return tcp
        context = _client_context(self._ssl)
        hostname = urlsplit(self.server.site.url).hostname
        tls = trio.SSLStream(tcp, context, server_hostname=hostname)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls

    def __repr__(self) -> str:
        return f"<TestClient for {self.server!r}>"


def _client_context(ssl: bool | _ssl.SSLContext) -> _ssl.SSLContext:
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    context = _ssl.create_default_context()
    if not ssl:
        context.check_hostname = False
        context.verify_mode = _ssl.CERT_NONE
    return context


async def _exchange(
    stream: trio.abc.Stream,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> TestResponse:
    conn = h11.Connection(h11.CLIENT)
    out = conn.send(h11.Request(method=method, target=target, headers=headers))
    if body:
        out += conn.send(h11.Data(data=body))
    out += conn.send(h11.EndOfMessage())
    await stream.send_all(out)
    response: h11.Response | None = None
    chunks: list[bytes] = []
    size = 0
    eof = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if eof:  # h11 saw the end of the stream mid-response
                raise trio.BrokenResourceError("connection closed mid-response") from exc
            raise
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(64 * 1024))
            eof = not data
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > _MAX_RESPONSE_BODY:
                raise h11.RemoteProtocolError("response body over 64 MiB")
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
        # InformationalResponse (1xx) is skipped: the final answer follows.
    if response is None:  # pragma: no cover - h11 raises first
        raise trio.BrokenResourceError("connection closed before a response")
    return TestResponse(
        status=response.status_code,
        reason=response.reason.decode("latin-1"),
        headers=Headers.from_raw(response.headers),
        body=b"".join(chunks),
    )


@asynccontextmanager
async def open_test_client(
    app: Application | TestServer,
    *,
    ssl: bool | _ssl.SSLContext = True,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[TestClient]:
    """Yield a :class:`TestClient` for ``app`` within an ``async with`` block.

    Given an :class:`~trio_ws.web.Application`, it first serves it with
    :func:`open_test_server` (defaults) and stops it when the block ends; given
    a running :class:`TestServer`, it uses that and leaves it running.
    ``headers`` are sent with every WebSocket handshake (the session's
    headers). ``ssl`` is how to check a TLS server's certificate: True
    (system trust store), False (no check) or an ``SSLContext`` (e.g. one that
    trusts a ``trustme`` CA).

    When the block ends, WebSockets opened with ``await client.ws_connect()``
    are closed (1000; 1011 if the block raised; 1001 if it was cancelled),
    then the server, if this call started it, stops.
    Raises what :func:`open_test_server` raises; an exception from the block
    propagates unchanged.
    """
    if isinstance(app, TestServer):
        async with ClientSession(headers=headers) as session:
            yield TestClient(app, session, ssl)
    else:
        async with open_test_server(app) as server, ClientSession(headers=headers) as session:
            yield TestClient(server, session, ssl)
