"""A scripted WebSocket peer for engine tests: a bare wsproto connection over a trio stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Event
from wsproto.extensions import PerMessageDeflate

from trio_ws import ClientWebSocketResponse
from trio_ws._protocol._deflate import BoundedDeflate
from trio_ws.web import WebSocketResponse


class Peer:
    """The other end: sends exactly the frames a test needs and records what it gets."""

    def __init__(
        self, stream: trio.abc.Stream, *, client: bool, extensions: list[Any] | None = None
    ) -> None:
        self.stream = stream
        self.conn = Connection(
            ConnectionType.CLIENT if client else ConnectionType.SERVER, extensions=extensions
        )
        self._pending: list[Event] = []
        self.eof = False

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self) -> Event | None:
        """The next event from the engine, or None at EOF."""
        while not self._pending:
            if self.eof:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.eof = True
                return None
            self.conn.receive_data(data)
            self._pending.extend(self.conn.events())
        return self._pending.pop(0)


# The engine's contract with its owner, in one place: tests use these helpers
# rather than the engine's private names.


def start(ws: Any, nursery: trio.Nursery, stream: trio.abc.Stream, **kwargs: Any) -> None:
    """Start serving ``stream`` as an owner does once the handshake is done."""
    ws.start_in(nursery, stream, **kwargs)


def setup(ws: Any, stream: trio.abc.Stream, **kwargs: Any) -> None:
    """The first half of ``start``: the API works, no task runs (the server's prepare())."""
    ws.set_up(stream, **kwargs)


def launch(ws: Any, nursery: trio.Nursery) -> None:
    """The second half of ``start``, once the handshake's last write is done."""
    ws.launch_in(nursery)


def abandon(ws: Any, exc: BaseException | None) -> None:
    """The handshake failed between ``setup`` and ``launch``."""
    ws.abandon(exc)


async def owner_exit(ws: Any, exc: BaseException | None) -> None:
    """End the connection as its owner's scope does when it exits with ``exc``."""
    await ws.owner_exit(exc)


async def finished(ws: Any) -> None:
    """Wait until every task of the connection has ended and its stream is closed."""
    await ws._done.wait()


def is_finished(ws: Any) -> bool:
    """True once every task of the connection has ended."""
    return bool(ws._done.is_set())


def socket_owner(ws: Any) -> str:
    """Who owns the socket's input side: ``reader`` or ``receive``, ``+ waits`` if waiting."""
    from trio_ws._engine import _core

    return {
        _core.READER: "reader",
        _core.READER_WAITS: "reader waits",
        _core.RECEIVE: "receive",
        _core.RECEIVE_WAITS: "receive waits",
    }[ws._socket]


def make_ws(role: str, **kwargs: Any) -> ClientWebSocketResponse | WebSocketResponse:
    if role == "client":
        return ClientWebSocketResponse(**kwargs)
    return WebSocketResponse(**kwargs)


def socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two ends of a real (Unix) socket pair: the engine's plain-socket paths."""
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


#: What ws_pair connects over when a test names no stream pair; test_engine's
#: ``transport`` fixture switches it to run every engine test over both.
default_stream_pair: Any = trio.testing.memory_stream_pair


@asynccontextmanager
async def ws_pair(
    role: str = "client",
    *,
    stream_pair: Any = None,
    deflate: bool = False,
    **kwargs: Any,
) -> AsyncIterator[tuple[Any, Peer, trio.Nursery]]:
    """An engine of ``role`` connected to a scripted :class:`Peer` of the other role.

    On exit the engine is closed as its owner would close it and every task
    of the connection must be gone.
    """
    ours, theirs = (stream_pair or default_stream_pair)()
    ws = make_ws(role, **kwargs)
    peer_ext = None
    our_ext = None
    if deflate:
        pmd = PerMessageDeflate()
        pmd._enabled = True
        peer_ext = [pmd]
        our_ext = [
            BoundedDeflate(
                max_size=kwargs.get("max_msg_size", 4 * 2**20),
                client=role == "client",
                local_bits=15,
                remote_bits=15,
                local_no_context_takeover=False,
                remote_no_context_takeover=False,
            )
        ]
    peer = Peer(theirs, client=role != "client", extensions=peer_ext)
    async with trio.open_nursery() as nursery:
        start(ws, nursery, ours, extensions=our_ext)
        try:
            yield ws, peer, nursery
        finally:
            with trio.CancelScope(shield=True):
                await ws._going_away()  # as an owner exits when cancelled
                await trio.aclose_forcefully(theirs)
