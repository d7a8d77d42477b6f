"""One accepted TCP connection as the server's request loop and its requests see it.

Theory of operation: a :class:`Connection` is created by the server for each
accepted (and, over TLS, handshaken) connection and lives as long as that
connection's task. It bundles the HTTP/1.1 exchange (``http``), what a
:class:`~trio_ws.web.Request` shows of the connection (``secure``,
``peername``, ``transport``, the request body), and the
:class:`~trio_ws.web._upgrade.Upgrade` interface a ``WebSocketResponse``
takes the connection over with. After the upgrade ``websocket`` is the
WebSocket the connection owns; the server ends it when the handler ends.

A WebSocket's tasks run in the server's connection nursery through a
:class:`GuardedNursery`: an unforeseen error in one of them is logged on the
``trio_ws.server`` logger and stays in that task, instead of cancelling
every connection of the server.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, cast

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from .._http._server import ServerHTTPConnection
from ._transport import Transport
from ._upgrade import OwnedWebSocket

__all__ = ["Connection", "GuardedNursery"]

logger = logging.getLogger("trio_ws.server")


class GuardedNursery:
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


class Connection:
    """Per-connection context shared by the request loop, :class:`Request` and ``prepare()``.

    ``scope`` is set only while the connection waits for its next request
    (idle): graceful shutdown cancels it to close idle keep-alive
    connections. ``ended`` is set once the server has released the socket.
    """

    __slots__ = (
        "_guard",
        "_transport",
        "ended",
        "http",
        "peername",
        "scope",
        "secure",
        "websocket",
    )

    def __init__(
        self,
        http: ServerHTTPConnection,
        guard: GuardedNursery,
        *,
        secure: bool,
        peername: Any,
    ) -> None:
        self.http = http
        self.secure = secure
        self.peername = peername
        self.websocket: OwnedWebSocket | None = None
        self.scope: trio.CancelScope | None = None
        self.ended = False
        self._guard = guard
        self._transport: Transport | None = None

    # ------------------------------------------------------------ the request's view

    @property
    def transport(self) -> Transport | None:
        """The connection as aiohttp's ``request.transport``; None once it has ended."""
        if self.ended:
            return None
        if self._transport is None:
            self._transport = Transport(self)
        return self._transport

    async def read_body(self, limit: int) -> bytes:
        """The current request's body (see ``ServerHTTPConnection.read_body``)."""
        return await self.http.read_body(limit)

    # --------------------------------------------------------- the Upgrade interface

    @property
    def lost(self) -> bool:
        """True once a read or write failed: the client is gone."""
        return self.http.lost

    @property
    def stream(self) -> trio.abc.Stream:
        """The connection's byte stream (the TLS stream over TLS)."""
        return self.http.stream

    async def switch_protocols(self, headers: list[tuple[str, str]]) -> bytes:
        """Write the 101; the bytes read past the request (see ``Upgrade``)."""
        return await self.http.switch_protocols(headers)

    def adopt(self, websocket: OwnedWebSocket) -> trio.Nursery:
        """Own ``websocket`` from now on; its tasks go in the guarded server nursery."""
        self.websocket = websocket
        # The guard offers the two methods the engine calls (start_soon, start).
        return cast(trio.Nursery, self._guard)
