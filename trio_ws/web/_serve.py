"""Serving an Application: ``serve`` for ``nursery.start`` and the blocking ``run_app``.

Who owns which task:

* :func:`serve` owns one nursery, inside a scope it shields from the caller's
  cancellation so that it can stop gracefully. It holds one task per accepted
  TCP connection, and each WebSocket's tasks (reader, writer, heartbeat),
  started by ``prepare()``. A WebSocket's tasks never outlive its connection's
  task: when the handler returns or raises, the connection's task closes the
  WebSocket and waits for them to end before it goes on. (One nursery rather
  than one per connection: an idle connection's memory is what limits how
  many a server holds.)

Graceful shutdown (cancelling ``serve``, or Ctrl-C/SIGTERM in ``run_app``):
stop accepting, run ``on_shutdown`` hooks, close idle keep-alive connections,
send 1001 GOING_AWAY to every open WebSocket, wait up to ``shutdown_timeout``
for handlers to return, cancel what is left, run ``on_cleanup`` hooks.

Isolation: nothing that goes wrong in one connection leaves its task. A
handler's failure becomes a 500 response before ``prepare()`` (traceback
logged, never sent) and closes the WebSocket with 1011 INTERNAL_ERROR after
it. A response that cannot be written (a bad status or header) is logged and
answered 500. Any other unexpected error, in the HTTP layer or in a
WebSocket's own tasks, is logged once with its traceback on the
``trio_ws.server`` logger, and the connection is closed: with 1011 if its
WebSocket is open, with a 500 if HTTP can still answer, plainly otherwise. A
client that goes away at any point (a reset, a half-close) just ends its
connection, without a traceback. So ``serve`` ends only when cancelled or
when a listener itself fails.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import ssl as _ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from .._exceptions import ClientConnectionResetError
from .._http._server import HTTPInputError, RawRequest, ServerHTTPConnection
from .._models import WSCloseCode
from ._app import Application
from ._request import Request
from ._response import HTTPException, Response, StreamResponse

if TYPE_CHECKING:
    from ._ws import WebSocketResponse

__all__ = ["ServerLimits", "Site", "run_app", "serve"]

logger = logging.getLogger("trio_ws.server")

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(frozen=True)
class ServerLimits:
    """Limits on what one client may send before its WebSocket opens.

    * ``max_head_size`` (16 KiB): request line plus headers; past it 431.
    * ``max_headers`` (100): header count; past it 431.
    * ``head_timeout`` (10 s): time for a started request head to arrive
      (slowloris); past it 408 and the connection is closed.
    * ``keepalive_timeout`` (75 s): idle time between requests before an idle
      keep-alive connection is closed.
    * ``max_connections`` (None): open connections; past it new ones get 503.
    * ``tls_handshake_timeout`` (10 s): a TLS handshake must finish by then.
    """

    max_head_size: int = 16 * 1024
    max_headers: int = 100
    head_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_connections: int | None = None
    tls_handshake_timeout: float = 10.0


@dataclass
class Site:
    """What :func:`serve` reports to ``nursery.start``: where it listens."""

    host: str
    port: int
    ports: list[int]
    listeners: list[trio.SocketListener] = field(repr=False)
    secure: bool = False

    @property
    def url(self) -> str:
        """``http://host:port`` (or ``https``) of the first listener."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.secure else 'http'}://{host}:{self.port}"


class _Connection:
    """Per-connection context shared with :class:`Request` and ``prepare()``.

    ``scope`` is set only while the connection waits for its next request
    (idle): graceful shutdown cancels it to close idle keep-alive connections.
    """

    __slots__ = ("http", "peername", "scope", "secure", "server", "websocket")

    def __init__(
        self,
        server: _Server,
        http: ServerHTTPConnection,
        secure: bool,
        peername: Any,
    ) -> None:
        self.server = server
        self.http = http
        self.secure = secure
        self.peername = peername
        self.websocket: WebSocketResponse | None = None
        self.scope: trio.CancelScope | None = None

    @property
    def nursery(self) -> trio.Nursery:
        """Where a WebSocket's tasks run: the server's connection nursery, guarded
        so that a failing task is logged instead of ending the server."""
        guard = self.server.guard
        assert guard is not None
        return cast(trio.Nursery, guard)


class _GuardedNursery:
    """Starts tasks in the server's nursery; an error from one is logged, not raised.

    The engine's tasks already record their own failures; this is the last
    line that keeps an unforeseen one from cancelling every connection.
    """

    __slots__ = ("_nursery",)

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> None:
        """As ``trio.Nursery.start_soon``, with ``fn``'s errors logged and contained."""
        self._nursery.start_soon(_contained, fn, *args, name=name or fn)

    async def start(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> Any:
        """As ``trio.Nursery.start``, with ``fn``'s errors logged and contained."""

        async def run(*a: object, task_status: trio.TaskStatus[Any]) -> None:
            await _contained(functools.partial(fn, task_status=task_status), *a)

        return await self._nursery.start(run, *args, name=name or fn)


async def _contained(fn: Callable[..., Awaitable[object]], *args: object) -> None:
    """Run ``fn(*args)``; log an error from it instead of raising it (cancellation still raises)."""
    try:
        await fn(*args)
    except Exception as exc:
        logger.error("Internal error in a connection task %r", fn, exc_info=exc)
    except BaseExceptionGroup as group:
        errors, rest = group.split(Exception)
        if errors is not None:
            logger.error("Internal error in a connection task %r", fn, exc_info=errors)
        if rest is not None:
            raise rest from None


class _Server:
    def __init__(
        self,
        app: Application,
        limits: ServerLimits,
        ssl_context: _ssl.SSLContext | None,
        run_hooks: bool = True,
    ) -> None:
        self.app = app
        self.limits = limits
        self.ssl_context = ssl_context
        self.run_hooks = run_hooks
        # The nursery that runs every connection's task and every WebSocket's
        # tasks, and what starts the latter there (see _GuardedNursery).
        self.nursery: trio.Nursery | None = None
        self.guard: _GuardedNursery | None = None
        self._connections: set[_Connection] = set()
        self._count = 0
        self.stopping = False
        self.all_done = trio.Event()
        self.all_done.set()

    async def run(self, listeners: list[trio.SocketListener]) -> None:
        """Accept on every listener; each connection is a task in one nursery."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.guard = _GuardedNursery(nursery)
            for listener in listeners:
                nursery.start_soon(self.accept_loop, listener, nursery)

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:  # e.g. EMFILE: back off, keep serving
                logger.warning("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(self.handle_connection, stream)

    async def handle_connection(self, tcp: trio.SocketStream) -> None:
        """Serve one TCP connection; nothing raised in it leaves this task but cancellation."""
        self._count += 1
        if self.all_done.is_set():
            self.all_done = trio.Event()
        conn: _Connection | None = None
        try:
            conn = await self._open(tcp)
            if conn is None:
                return
            self._connections.add(conn)
            await self._serve_requests(conn)
        except _STREAM_ERRORS:
            pass  # the client went away (reset, closed) while we read or wrote
        except Exception as exc:
            await self._internal_error(conn, exc)
        except BaseExceptionGroup as group:
            # Cancellation (or KeyboardInterrupt) along with errors: contain the errors.
            errors, rest = group.split(Exception)
            if errors is not None:
                await self._internal_error(conn, errors)
            if rest is not None:
                raise rest from None
        finally:
            if conn is not None:
                self._connections.discard(conn)
            await trio.aclose_forcefully(conn.http.stream if conn is not None else tcp)
            self._count -= 1
            if self._count == 0:
                self.all_done.set()

    async def _serve_requests(self, conn: _Connection) -> None:
        # Memory: this task lasts as long as its connection, and a WebSocket
        # handler runs inside its frames, so the chain stays short:
        # handle_connection, this function (the request loop), _call_handler,
        # then the handler.
        http = conn.http
        while not self.stopping:
            raw: RawRequest | None = None
            conn.scope = trio.CancelScope()  # idle: shutdown may cancel it
            with conn.scope:
                try:
                    raw = await http.next_request()
                except HTTPInputError as exc:
                    await http.send_error(exc.status, exc.reason)
                    return
            conn.scope = None
            if raw is None:
                return
            try:
                request = Request(raw, self.app, conn, {})
            except ValueError as exc:  # a request target urlsplit() cannot parse
                await http.send_error(400, f"bad request target: {exc}")
                return
            del raw
            response: StreamResponse | None
            try:
                handler, request.match_info = self.app.router.resolve(request.method, request.path)
            except HTTPException as exc:
                response = exc
            else:
                response = await self._call_handler(conn, request, handler)
            if not await self._respond(conn, request, response):
                return
            if not await http.discard_body(self.app.client_max_size):
                return
            if not http.keep_alive:
                return

    async def _internal_error(self, conn: _Connection | None, exc: BaseException) -> None:
        """Log an unexpected error once and close the connection as its state allows."""
        peer = conn.peername if conn is not None else None
        logger.error("Internal error on the connection from %s; closing it", peer, exc_info=exc)
        if conn is None:
            return
        ws = conn.websocket
        if ws is not None:
            try:
                await ws._owner_exit(exc)  # 1011 while the WebSocket is open
            except Exception:
                logger.exception("closing the WebSocket after an internal error failed")
        else:
            await conn.http.send_error(500, "Internal Server Error")

    async def _open(self, tcp: trio.SocketStream) -> _Connection | None:
        """Admit a new connection and do its TLS handshake; None (closed) when refused."""
        limits = self.limits
        if limits.max_connections is not None and self._count > limits.max_connections:
            await self._reject_busy(tcp)
            return None
        try:
            peername = tcp.socket.getpeername()
        except OSError:
            peername = None
        stream: trio.abc.Stream = tcp
        if self.ssl_context is not None:
            ssl_stream = trio.SSLStream(tcp, self.ssl_context, server_side=True)
            handshook = False
            with trio.move_on_after(limits.tls_handshake_timeout):
                try:
                    await ssl_stream.do_handshake()
                    handshook = True
                except _STREAM_ERRORS:
                    pass
            if not handshook:
                await trio.aclose_forcefully(tcp)
                return None
            stream = ssl_stream
        http = ServerHTTPConnection(
            stream,
            max_head_size=limits.max_head_size,
            max_headers=limits.max_headers,
            head_timeout=limits.head_timeout,
            keepalive_timeout=limits.keepalive_timeout,
        )
        return _Connection(self, http, self.ssl_context is not None, peername)

    async def _reject_busy(self, tcp: trio.SocketStream) -> None:
        http = ServerHTTPConnection(tcp, head_timeout=1.0, keepalive_timeout=1.0)
        with trio.move_on_after(2.0):
            try:
                await http.next_request()
            except (HTTPInputError, *_STREAM_ERRORS):
                pass
            await http.send_error(503, "Too many connections")
        await trio.aclose_forcefully(tcp)

    async def _respond(
        self, conn: _Connection, request: Request, response: StreamResponse | None
    ) -> bool:
        """Send a handler's (non-WebSocket) response; False when the connection must end.

        A response that cannot be written (its status, a header) is logged
        and answered 500 instead; nothing is sent once the client is gone.
        """
        http = conn.http
        if response is None or conn.websocket is not None or response.prepared:
            return False
        if not http.can_respond:
            return False
        # A declined upgrade (426, 400, 401...) keeps the connection, as
        # aiohttp does: the client may send its next request on it.
        try:
            body = b"" if request.method == "HEAD" else response._body_bytes()
            headers = response.headers.items_all()
            if request.method == "HEAD" and isinstance(response, Response):
                headers.append(("Content-Length", str(len(response.body))))
            await http.send_response(response.status, headers, body, close=self.stopping)
        except _STREAM_ERRORS:
            return False
        except Exception:
            logger.exception(
                "The response to %s %s cannot be sent; answering 500", request.method, request.path
            )
            await http.send_error(500, "Internal Server Error")
            return False
        return True

    async def _call_handler(
        self, conn: _Connection, request: Request, handler: Callable[[Request], Any]
    ) -> StreamResponse | None:
        """Run the handler; its response, or what its failure turns into (None: no answer)."""
        try:
            result = await handler(request)
            if _is_websocket(result) and not result.prepared and conn.websocket is None:
                # As aiohttp: a WebSocketResponse returned without prepare()
                # is prepared here, then closed with 1000 below.
                await result.prepare(request)
        except HTTPException as exc:
            result = exc
        except Exception as exc:
            return await self._handler_failed(conn, request, exc)
        except BaseException as exc:
            ws = conn.websocket
            if ws is not None:
                await ws._owner_exit(exc)
            raise
        ws = conn.websocket
        if ws is not None:
            await ws._owner_exit(None)
            return ws
        if not isinstance(result, StreamResponse):
            logger.error("Handler for %s returned %r, not a response", request.path, type(result))
            return Response(status=500, text="500: Internal Server Error")
        return result

    async def _handler_failed(
        self, conn: _Connection, request: Request, exc: Exception
    ) -> StreamResponse | None:
        ws = conn.websocket
        if ws is None:
            if conn.http.lost and isinstance(exc, _STREAM_ERRORS):
                # prepare() or request.read() found the client gone: nothing to answer.
                logger.info("Client left during %s %s: %s", request.method, request.path, exc)
                return None
            logger.error("Error handling request %s %s", request.method, request.path, exc_info=exc)
            return Response(status=500, text="500: Internal Server Error")
        if isinstance(exc, ClientConnectionResetError) and ws.closed:
            # A send after the connection closed (peer gone, shutdown): not a bug
            # in the handler worth a traceback.
            logger.info("WebSocket handler %s stopped: %s", request.path, exc)
            await ws._owner_exit(None)
            return ws
        logger.error("WebSocket handler %s raised; closing with 1011", request.path, exc_info=exc)
        await ws._owner_exit(exc)
        return ws

    async def shutdown(self, timeout: float) -> None:
        """Stop gracefully: 1001 to every WebSocket, wait up to ``timeout`` for handlers."""
        self.stopping = True
        try:
            if self.run_hooks:
                await self.app.shutdown()
        except Exception:
            logger.exception("on_shutdown hook failed")
        websockets = []
        for conn in list(self._connections):
            if conn.websocket is not None:
                websockets.append(conn.websocket)
            elif conn.scope is not None:  # idle between requests
                conn.scope.cancel()
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for ws in websockets:
                    if not ws.closed:
                        nursery.start_soon(_going_away, ws)
            await self.all_done.wait()


def _is_websocket(result: object) -> TypeGuard[WebSocketResponse]:
    from ._ws import WebSocketResponse  # _ws imports this package's other modules

    return isinstance(result, WebSocketResponse)


async def _going_away(ws: WebSocketResponse) -> None:
    try:
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
    except Exception:  # pragma: no cover - close() records its own failures
        logger.exception("closing a WebSocket at shutdown failed")


async def serve(
    app: Application,
    host: str | list[str] | None = "127.0.0.1",
    port: int = 8080,
    *,
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
    limits: ServerLimits | None = None,
    backlog: int | None = None,
    listeners: list[trio.SocketListener] | None = None,
    run_hooks: bool = True,
    task_status: trio.TaskStatus[Site] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; use with ``await nursery.start(serve, app, host, port)``.

    ``port=0`` picks a free port; ``nursery.start`` returns a :class:`Site`
    with the bound ``port`` (and every bound port in ``ports``). With
    ``ssl_context`` it serves HTTPS/WSS through :class:`trio.SSLStream`.
    Runs ``on_startup`` hooks before reporting started. When cancelled it shuts
    down gracefully (see the module documentation) within
    ``shutdown_timeout`` seconds, then re-raises the cancellation. Raises
    ``OSError`` if the address cannot be bound. ``listeners`` (already
    listening) replace ``host``, ``port`` and ``backlog``; ``serve`` closes them.
    ``run_hooks=False`` leaves the application's hooks to the caller (as
    :class:`~trio_ws.web.AppRunner` does, once for all its sites).
    """
    if listeners is None:
        hosts = host if isinstance(host, list) else [host]
        listeners = []
        for h in hosts:
            listeners.extend(await trio.open_tcp_listeners(port, host=h, backlog=backlog))
    server = _Server(app, limits or ServerLimits(), ssl_context, run_hooks)
    try:
        if run_hooks:
            await app.startup()
        ports = [listener.socket.getsockname()[1] for listener in listeners]
        shield = trio.CancelScope(shield=True)
        async with trio.open_nursery() as outer:

            async def run_connections() -> None:
                with shield:
                    await server.run(listeners)

            outer.start_soon(run_connections)
            task_status.started(
                Site(
                    host=str(listeners[0].socket.getsockname()[0]),
                    port=ports[0],
                    ports=ports,
                    listeners=listeners,
                    secure=ssl_context is not None,
                )
            )
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
                    await server.shutdown(shutdown_timeout)
                    shield.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            try:
                if run_hooks:
                    await app.cleanup()
            except Exception:
                logger.exception("on_cleanup hook failed")


def run_app(
    app: Application | Awaitable[Application],
    *,
    host: str | list[str] | None = "0.0.0.0",
    port: int | None = None,
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
    limits: ServerLimits | None = None,
    print: Callable[..., None] | None = print,
    handle_signals: bool = True,
    workers: int = 1,
) -> None:
    """Serve ``app`` in a new ``trio.run`` until Ctrl-C or SIGTERM, as aiohttp's ``run_app``.

    ``port`` defaults to 8080 (8443 with ``ssl_context``). On SIGINT/SIGTERM
    the server shuts down gracefully (WebSockets get 1001) and the call
    returns. ``print`` (or None to stay silent) shows where it listens.
    ``app`` may be an awaitable (``run_app(init_app())``, an async
    application factory), awaited inside the new trio run.
    ``workers > 1`` serves from that many processes sharing the port (see
    ``trio_ws/web/_workers.py``; signals are then always handled).
    """
    if port is None:
        port = 8443 if ssl_context is not None else 8080
    if workers > 1:
        from ._workers import run_workers

        if not isinstance(app, Application):
            raise TypeError("workers > 1 needs an Application, not an application factory")

        run_workers(
            app,
            workers=workers,
            host=host,
            port=port,
            ssl_context=ssl_context,
            shutdown_timeout=shutdown_timeout,
            limits=limits,
            print=print,
        )
        return

    async def main() -> None:
        application = app if isinstance(app, Application) else await app
        # Signals are caught from the start, so Ctrl-C during startup also
        # shuts down cleanly instead of raising KeyboardInterrupt.
        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
            if handle_signals
            else (contextlib.nullcontext(None)) as signals
        ):
            async with trio.open_nursery() as nursery:
                site = await nursery.start(
                    functools.partial(
                        serve,
                        application,
                        host,
                        port,
                        ssl_context=ssl_context,
                        shutdown_timeout=shutdown_timeout,
                        limits=limits,
                    )
                )
                if print is not None:
                    print(f"======== Running on {site.url} ========")
                    print("(Press CTRL+C to quit)")
                if signals is None:
                    await trio.sleep_forever()
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    run_unwrapped(main)


def run_unwrapped(main: Callable[[], Awaitable[object]]) -> None:
    """``trio.run(main)``, with Ctrl-C ending it quietly and a lone error raised unwrapped.

    Startup failures (e.g. the port is taken) come out of a nursery in an
    exception group; like aiohttp's ``run_app``, raise the one error itself.
    """
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            if isinstance(leaves[0], KeyboardInterrupt):
                return
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
