"""The server's connections: accept, the request loop, handlers, isolation, shutdown.

Theory of operation
-------------------
:class:`_Server` runs in one nursery (see :func:`~trio_ws.web.serve`, which
owns it): one task per listener accepts, and one task per accepted TCP
connection serves it (:meth:`_Server.handle_connection`). A WebSocket's tasks
(reader, writer, heartbeat), started by ``prepare()``, run in the same
nursery through the connection's guard, and never outlive their
connection's task: when the handler returns or raises, that task ends the
WebSocket (:func:`~trio_ws.web._upgrade.owner_exit`) and waits for them
before it goes on. (One nursery rather than one per connection: an idle
connection's memory is what limits how many a server holds.)

A connection's task runs the request loop: read a request head, route it,
run the handler, send its response (or end the WebSocket it became), discard
an unread body, and go on while the connection is kept alive and the server
is not stopping.

Isolation: nothing that goes wrong in one connection leaves its task. A
handler's failure becomes a 500 response before ``prepare()`` (traceback
logged, never sent) and closes the WebSocket with 1011 INTERNAL_ERROR after
it. A response that cannot be written (a bad status or header) is logged and
answered 500. Any other unexpected error, in the HTTP layer or in a
WebSocket's own tasks, is logged once with its traceback on the
``trio_ws.server`` logger, and the connection is closed: with 1011 if its
WebSocket is open, with a 500 if HTTP can still answer, plainly otherwise. A
client that goes away at any point (a reset, a half-close) just ends its
connection, without a traceback.

Graceful shutdown (:meth:`_Server.shutdown`): stop reading new requests, run
``on_shutdown`` hooks, close idle keep-alive connections, send 1001
GOING_AWAY to every open WebSocket, and wait up to the timeout for every
connection's task to end; the caller then cancels what is left.
"""

from __future__ import annotations

import logging
import ssl as _ssl
import sys
from collections.abc import Callable
from typing import Any

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from .._exceptions import ClientConnectionResetError
from .._http._server import HTTPInputError, RawRequest, ServerHTTPConnection
from .._models import WSCloseCode
from ._app import Application
from ._connection import Connection, GuardedNursery
from ._limits import ServerLimits
from ._request import Request
from ._response import HTTPException, Response, StreamResponse, body_of
from ._upgrade import OwnedWebSocket, owner_exit
from ._ws import WebSocketResponse

__all__ = ["_Server"]

logger = logging.getLogger("trio_ws.server")

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Server:
    """Every connection of one :func:`~trio_ws.web.serve` call (see the module docstring)."""

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
        # What starts a WebSocket's tasks in the connection nursery (see
        # GuardedNursery); set while run() runs.
        self.guard: GuardedNursery | None = None
        self._connections: set[Connection] = set()
        self._count = 0
        self.stopping = False
        self.all_done = trio.Event()
        self.all_done.set()

    async def run(self, listeners: list[trio.SocketListener]) -> None:
        """Accept on every listener; each connection is a task in one nursery."""
        async with trio.open_nursery() as nursery:
            self.guard = GuardedNursery(nursery)
            for listener in listeners:
                nursery.start_soon(self.accept_loop, listener, nursery)

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """Start a :meth:`handle_connection` task per accepted connection until closed."""
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
        conn: Connection | None = None
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
                conn.ended = True
            stream = conn.http.stream if conn is not None else tcp
            if isinstance(stream, trio.SocketStream):
                # No TLS to end: close the socket (its waiters are woken) without
                # the cancelled checkpoint aclose_forcefully() costs (two passes).
                stream.socket.close()
            else:
                await trio.aclose_forcefully(stream)
            self._count -= 1
            if self._count == 0:
                self.all_done.set()

    async def _serve_requests(self, conn: Connection) -> None:
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

    async def _internal_error(self, conn: Connection | None, exc: BaseException) -> None:
        """Log an unexpected error once and close the connection as its state allows."""
        peer = conn.peername if conn is not None else None
        logger.error("Internal error on the connection from %s; closing it", peer, exc_info=exc)
        if conn is None:
            return
        ws = conn.websocket
        if ws is not None:
            try:
                await owner_exit(ws, exc)  # 1011 while the WebSocket is open
            except Exception:
                logger.exception("closing the WebSocket after an internal error failed")
        else:
            await conn.http.send_error(500, "Internal Server Error")

    async def _open(self, tcp: trio.SocketStream) -> Connection | None:
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
        assert self.guard is not None  # connections exist only while run() runs
        return Connection(http, self.guard, secure=self.ssl_context is not None, peername=peername)

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
        self, conn: Connection, request: Request, response: StreamResponse | None
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
            body = b"" if request.method == "HEAD" else body_of(response)
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
        self, conn: Connection, request: Request, handler: Callable[[Request], Any]
    ) -> StreamResponse | None:
        """Run the handler; its response, or what its failure turns into.

        None when nothing is to be sent: the client is gone, or the handler's
        WebSocket took the connection over (it has ended when this returns).
        """
        try:
            result = await handler(request)
            if (
                isinstance(result, WebSocketResponse)
                and not result.prepared
                and conn.websocket is None
            ):
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
                await owner_exit(ws, exc)
            raise
        ws = conn.websocket
        if ws is not None:
            await owner_exit(ws, None)
            return None  # the connection was the WebSocket's: nothing more is sent
        if not isinstance(result, StreamResponse):
            logger.error("Handler for %s returned %r, not a response", request.path, type(result))
            return Response(status=500, text="500: Internal Server Error")
        return result

    async def _handler_failed(
        self, conn: Connection, request: Request, exc: Exception
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
            await owner_exit(ws, None)
            return None
        logger.error("WebSocket handler %s raised; closing with 1011", request.path, exc_info=exc)
        await owner_exit(ws, exc)
        return None

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


async def _going_away(ws: OwnedWebSocket) -> None:
    try:
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
    except Exception:  # pragma: no cover - close() records its own failures
        logger.exception("closing a WebSocket at shutdown failed")
