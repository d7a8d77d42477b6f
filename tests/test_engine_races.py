"""Races around the end of a connection, found by review and reproduced (F1 to F4).

Each test drives a real engine against the scripted peer of ``_peer``, over a
real socket pair and over in-memory streams where the path differs (over a
socket the engine reads and writes the descriptor itself, and ``receive()``
may wait on the socket from the application's task). A peer that "does not
read" is a lockstep stream in memory (its ``send_all`` waits for the reader)
and a message larger than the kernel's buffers over a socket.

* F1: ``close()`` (and the owner's exit) must keep its ``timeout`` and the
  caller's cancellation when our CLOSE frame is queued behind a write the
  peer does not read, and then report 1006: the handshake did not happen.
* F2: a ``receive()`` waiting on the socket returns CLOSING as soon as
  ``close()`` begins in another task, even while the writer waits.
* F3: a ``receive(timeout)`` whose deadline passes once the connection is
  over returns the answer (CLOSED), and leaves ``close_code`` alone.
* F4: the owner's exit, cancelled while it waits for the peer's close,
  still returns only once every task of the connection has ended.
* Nothing lost on the server's early close: a server ``close()`` with a
  ``receive()`` in progress ends the connection once its CLOSE is written;
  the stream must not be closed under a client that has not read what the
  server sent yet (a reset would discard it), so every message still
  reaches a client that keeps reading, then the CLOSE.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage

import trio_ws
from trio_ws import WSCloseCode, WSMessage, WSMsgType, WSTimeoutError, web
from trio_ws._engine._lifecycle import LINGER_MAX
from trio_ws._models import WS_CLOSED_MESSAGE as WS_CLOSED
from trio_ws.testing import open_test_server

from . import _peer
from ._peer import ws_pair

ROLES = ["client", "server"]
STREAMS = {
    # lockstep: send_all returns only once the other side has read it all,
    # so a peer that does not read blocks the writer at once.
    "memory": trio.testing.lockstep_stream_pair,
    "socket": _peer.socket_stream_pair,
}
#: More than a socket pair's kernel buffers hold: the writer has to wait.
BIG = 8 * 2**20
CLOSING = WSMessage(WSMsgType.CLOSING, None, None)


async def block_the_writer(ws: Any) -> None:
    """Queue a message the peer will not read: the writer waits in its write."""
    await ws.send_bytes(bytes(BIG))
    await trio.testing.wait_all_tasks_blocked()


async def bounded(nursery: trio.Nursery, call: Callable[[], Awaitable[Any]]) -> float:
    """Await ``call()`` in another task and return how long it took; fail after 60 s.

    From another task because the calls under test wait shielded: a
    ``fail_after`` around the call itself could not end a wait that hangs.
    """
    returned = trio.Event()
    start = trio.current_time()

    async def run() -> None:
        await call()
        returned.set()

    nursery.start_soon(run)
    with trio.fail_after(60):
        await returned.wait()
    return trio.current_time() - start


# ------------------------------------------------------------------------ F1


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("transport", list(STREAMS))
async def test_close_answering_a_peer_that_stopped_reading_keeps_its_timeout(
    role: str, transport: str, autojump_clock: trio.abc.Clock
) -> None:
    """F1: autoclose=False; the peer sends CLOSE and stops reading; close() answers it.

    Our answer is queued behind a write the peer never takes: close() gives
    up after ``timeout``, the tasks end, and the close is reported as it
    happened on the wire: not at all (1006, the timeout as the error).
    """
    async with ws_pair(role, stream_pair=STREAMS[transport], autoclose=False, timeout=5.0) as (
        ws,
        peer,
        nursery,
    ):
        await block_the_writer(ws)
        await peer.send(CloseConnection(code=4001))
        with trio.fail_after(60):
            assert await ws.receive() == WSMessage(WSMsgType.CLOSE, 4001, "")
        closed: list[bool] = []

        async def close() -> None:
            closed.append(await ws.close())

        assert await bounded(nursery, close) == pytest.approx(5.0)
        assert closed == [True]
        assert _peer.is_finished(ws)
        assert ws.closed
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), WSTimeoutError)
        assert "not sent" in str(ws.exception())


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("transport", list(STREAMS))
async def test_close_answering_a_peer_that_stopped_reading_can_be_cancelled(
    role: str, transport: str, autojump_clock: trio.abc.Clock
) -> None:
    """F1: the caller's own bound ends close() too, and drops the connection (1006)."""
    async with ws_pair(role, stream_pair=STREAMS[transport], autoclose=False, timeout=100.0) as (
        ws,
        peer,
        _,
    ):
        await block_the_writer(ws)
        await peer.send(CloseConnection(code=1000))
        with trio.fail_after(60):
            assert (await ws.receive()).type is WSMsgType.CLOSE
            start = trio.current_time()
            with trio.move_on_after(2.0) as scope:
                await ws.close()
            assert scope.cancelled_caught
            assert trio.current_time() - start == pytest.approx(2.0)
            await _peer.finished(ws)  # the drop ended every task
        assert trio.current_time() - start == pytest.approx(2.0)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("transport", list(STREAMS))
async def test_owner_exit_after_an_autoclose_reply_the_peer_never_read(
    role: str, transport: str, autojump_clock: trio.abc.Clock
) -> None:
    """F1: with autoclose the reply is queued at once (CLOSED); the owner's exit
    waits ``timeout`` for it to be written, then drops it: 1006, not 1000."""
    async with ws_pair(role, stream_pair=STREAMS[transport], timeout=5.0) as (ws, peer, _):
        await block_the_writer(ws)
        await peer.send(CloseConnection(code=1000))
        with trio.fail_after(60):
            assert (await ws.receive()).type is WSMsgType.CLOSE
            assert ws.closed
            start = trio.current_time()
            await _peer.owner_exit(ws, None)
        assert trio.current_time() - start == pytest.approx(5.0)
        assert _peer.is_finished(ws)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), WSTimeoutError)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("transport", list(STREAMS))
async def test_owner_exit_on_an_error_keeps_the_timeout_behind_a_blocked_write(
    role: str, transport: str, autojump_clock: trio.abc.Clock
) -> None:
    """F1: the owner's code raised (1011 path) with the peer's CLOSE unanswered."""
    async with ws_pair(role, stream_pair=STREAMS[transport], autoclose=False, timeout=5.0) as (
        ws,
        peer,
        nursery,
    ):
        await block_the_writer(ws)
        await peer.send(CloseConnection(code=1000))
        with trio.fail_after(60):
            assert (await ws.receive()).type is WSMsgType.CLOSE

        async def exit_on_error() -> None:
            await _peer.owner_exit(ws, ValueError("handler failed"))

        assert await bounded(nursery, exit_on_error) == pytest.approx(5.0)
        assert _peer.is_finished(ws)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), WSTimeoutError)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("transport", list(STREAMS))
async def test_close_answering_a_peer_that_reads_reports_its_code(
    role: str, transport: str, autojump_clock: trio.abc.Clock
) -> None:
    """The other side of F1: once the peer takes our answer, its code stands."""
    async with ws_pair(role, stream_pair=STREAMS[transport], autoclose=False, timeout=5.0) as (
        ws,
        peer,
        nursery,
    ):
        await block_the_writer(ws)
        await peer.send(CloseConnection(code=4001))
        received: list[Any] = []
        eof = trio.Event()

        async def read_all() -> None:
            while (event := await peer.next_event()) is not None:
                received.append(event)
            eof.set()

        with trio.fail_after(60):
            assert (await ws.receive()).type is WSMsgType.CLOSE
            start = trio.current_time()
            nursery.start_soon(read_all)
            assert await ws.close() is True
            assert trio.current_time() == start  # not the timeout
            await eof.wait()
        assert isinstance(received[-1], CloseConnection)
        assert ws.close_code == 4001
        assert ws.exception() is None


async def test_server_connection_ends_within_the_close_timeout_when_the_client_stops_reading() -> (
    None
):
    """F1 end to end: a handler streams to a client that stops reading and sends CLOSE.

    The handler ends on the CLOSE (the aiohttp idiom) with ``autoclose=False``;
    the server answers it, and the connection ends after the WebSocket's
    ``timeout``, not when the server shuts down.
    """
    opened: list[web.WebSocketResponse] = []
    handler_done = trio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False, timeout=0.5)
        opened.append(ws)
        await ws.prepare(request)
        await ws.send_bytes(bytes(4 * BIG))  # the client will not read it
        async for _ in ws:
            pass
        handler_done.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    with trio.fail_after(30):
        async with open_test_server(app) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                key = base64.b64encode(os.urandom(16))
                await stream.send_all(
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
                )
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some(1)  # the 101 only, then stop reading
                assert head.startswith(b"HTTP/1.1 101")
                frames = Connection(ConnectionType.CLIENT)
                await stream.send_all(frames.send(CloseConnection(code=1000)))
                await handler_done.wait()
                with trio.fail_after(5):  # the server is still up: only the timeout ends it
                    await _peer.finished(opened[0])
                assert opened[0].close_code == WSCloseCode.ABNORMAL_CLOSURE
                assert isinstance(opened[0].exception(), WSTimeoutError)


# ------------------------------------------------------------------------ F2


async def receive_waiting_on_the_socket(
    ws: Any, peer: _peer.Peer, nursery: trio.Nursery
) -> list[WSMessage]:
    """Bring a receive() in another task to wait on the socket itself; returns what it got."""
    got: list[WSMessage] = []

    async def receiver() -> None:
        got.append(await ws.receive())
        got.append(await ws.receive())  # takes the socket and waits on it

    nursery.start_soon(receiver)
    await peer.send(TextMessage(data="hello"))
    await trio.testing.wait_all_tasks_blocked()
    assert got == [WSMessage(WSMsgType.TEXT, "hello", "")]
    return got


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("transport", list(STREAMS))
async def test_close_wakes_a_waiting_receive_while_the_writer_is_blocked(
    role: str, transport: str, autojump_clock: trio.abc.Clock
) -> None:
    """F2: receive() returns CLOSING at once, whatever the writer is doing.

    Over a socket the receive() waits on the descriptor itself and only
    ``notify_closing`` wakes it, which also ends the writer's wait: the
    writer must take that in its stride instead of deferring the wake-up
    until its write (that the peer never reads) is done.
    """
    async with ws_pair(role, stream_pair=STREAMS[transport], timeout=5.0) as (ws, peer, nursery):
        got = await receive_waiting_on_the_socket(ws, peer, nursery)
        if transport == "socket":
            assert _peer.socket_owner(ws) == "receive waits"
        await block_the_writer(ws)
        closed: list[bool] = []
        close_returned = trio.Event()

        async def closer() -> None:
            closed.append(await ws.close())
            close_returned.set()

        start = trio.current_time()
        nursery.start_soon(closer)
        await trio.testing.wait_all_tasks_blocked()
        assert got[1:] == [CLOSING]
        assert trio.current_time() == start
        with trio.fail_after(60):
            await close_returned.wait()
        assert _peer.is_finished(ws)
        assert closed == [True]
        assert trio.current_time() - start == pytest.approx(5.0)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), WSTimeoutError)


# ------------------------------------------------------------------------ F3


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_receive_timeout_after_the_end_returns_closed(role: str) -> None:
    """F3: a deadline that passes on the answer of a closed connection is not a
    timeout: CLOSED comes back and the close code of the handshake stays."""
    async with ws_pair(role) as (ws, peer, _):
        await peer.send(CloseConnection(code=4000))
        with trio.fail_after(5):
            assert await ws.receive() == WSMessage(WSMsgType.CLOSE, 4000, "")
            assert await ws.receive(timeout=1e-9) == WS_CLOSED
        assert ws.close_code == 4000
        assert ws.exception() is None


@pytest.mark.usefixtures("over_both")
async def test_client_receive_timeout_while_open_still_sets_1006() -> None:
    """The rule F3 must keep: a client timeout while open is aiohttp's 1006."""
    async with ws_pair("client") as (ws, _, _):
        with trio.fail_after(5), pytest.raises(WSTimeoutError):
            await ws.receive(timeout=0.01)
        assert not ws.closed
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE


# ------------------------------------------------------------------------ F4


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_owner_exit_cancelled_while_waiting_for_the_close_ends_every_task(
    role: str,
) -> None:
    """F4: the peer never answers our close; the owner is cancelled meanwhile."""
    async with ws_pair(role, timeout=100.0) as (ws, _, _):
        with trio.fail_after(5):
            with trio.move_on_after(0.1) as scope:
                await _peer.owner_exit(ws, None)
            assert scope.cancelled_caught
        assert _peer.is_finished(ws)  # on return, not later
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_owner_exit_cancelled_on_an_error_ends_every_task(role: str) -> None:
    """F4 on the 1011 path: shielded close, then an outer cancellation."""
    async with ws_pair(role, timeout=0.2) as (ws, _, _):
        with trio.fail_after(5), trio.CancelScope() as scope:
            scope.cancel()  # already cancelled when the exit begins
            await _peer.owner_exit(ws, ValueError("handler failed"))
        assert _peer.is_finished(ws)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), WSTimeoutError)


# ------------------------------------------------- early server close loses nothing


async def tcp_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two ends of a TCP connection over 127.0.0.1 (a reset is TCP's)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    return client, server


async def tls_stream_pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """Two handshaken TLS streams over 127.0.0.1 (the engine drives them with DirectTLS)."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    tcp_client, tcp_server = await tcp_stream_pair()
    client = trio.SSLStream(tcp_client, client_ctx, server_hostname="127.0.0.1")
    server = trio.SSLStream(tcp_server, server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server


async def socketpair_streams() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two ends of a Unix socket pair (client end first)."""
    return _peer.socket_stream_pair()


#: Larger than the client's first read and its parsing: the client's reader,
#: paused by max_queue=1 after one message, leaves the rest in the kernel.
EARLY_CLOSE_MESSAGES = [bytes([i]) * 30_000 for i in range(4)]


@pytest.mark.parametrize(
    "pair", [tcp_stream_pair, socketpair_streams, tls_stream_pair], ids=["tcp", "socketpair", "tls"]
)
async def test_early_server_close_loses_nothing_the_client_has_not_read(
    pair: Callable[[], Awaitable[tuple[trio.abc.Stream, trio.abc.Stream]]],
) -> None:
    """The server's close() with a receive() in progress: the client still reads everything.

    The client's reader is paused (max_queue=1) with the server's messages
    unread in its kernel buffer, and the client sends once the server's
    close() has begun. Closing the server's socket at once made its kernel
    answer the first send with a reset (TCP) and the next write fail (at
    once on a socket pair): the client then lost the unread messages and
    saw 1006.
    """
    with trio.fail_after(10):
        client_stream, server_stream = await pair()
        client = _peer.make_ws("client", max_queue=1)
        server = _peer.make_ws("server", timeout=10.0)
        async with trio.open_nursery() as nursery:
            _peer.start(client, nursery, client_stream)
            _peer.start(server, nursery, server_stream)
            for data in EARLY_CLOSE_MESSAGES:
                await server.send_bytes(data)
            await trio.testing.wait_all_tasks_blocked()  # the client's reader is paused
            assert client._reader_paused
            server_got: list[WSMsgType] = []
            close_returned = trio.Event()

            async def server_receiver() -> None:
                server_got.append((await server.receive()).type)
                server_got.append((await server.receive()).type)

            async def server_closer() -> None:
                assert await server.close() is True
                close_returned.set()

            nursery.start_soon(server_receiver)
            await trio.testing.wait_all_tasks_blocked()  # receive() waits
            start = trio.current_time()
            nursery.start_soon(server_closer)
            await trio.testing.wait_all_tasks_blocked()  # the server's CLOSE is written
            assert server_got == [WSMsgType.CLOSING, WSMsgType.CLOSED]
            for text in ("late", "later"):  # discarded by the server, never a reset
                with contextlib.suppress(trio_ws.ClientConnectionResetError):
                    await client.send_str(text)
                await trio.testing.wait_all_tasks_blocked()
            got = [await client.receive() for _ in EARLY_CLOSE_MESSAGES]
            assert [msg.data for msg in got] == EARLY_CLOSE_MESSAGES
            assert await client.receive() == WSMessage(WSMsgType.CLOSE, WSCloseCode.OK, "")
            await close_returned.wait()
            assert trio.current_time() - start < 2.0  # the client's answer ended the wait
            await _peer.finished(client)
            await _peer.finished(server)
        assert client.close_code == WSCloseCode.OK
        assert client.exception() is None
        assert server.close_code == WSCloseCode.OK
        assert server.exception() is None


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("cancel", [False, True], ids=["bounded", "cancelled"])
async def test_early_server_close_lingers_at_most_its_bound(
    cancel: bool, autojump_clock: trio.abc.Clock
) -> None:
    """A client that never answers nor hangs up: close() returns after LINGER_MAX.

    The connection ended when the CLOSE was written, so the code stays the
    one sent, also when cancelling close() cuts the linger short.
    """
    async with ws_pair("server", timeout=10.0) as (ws, peer, nursery):
        got: list[WSMsgType] = []

        async def receiver() -> None:
            got.append((await ws.receive()).type)

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with trio.fail_after(60), trio.move_on_after(0.5 if cancel else 60):
            assert await ws.close(code=4000) is True
        took = trio.current_time() - start
        assert got == [WSMsgType.CLOSING]
        await trio.testing.wait_all_tasks_blocked()  # a cancelled close() does not wait
        assert _peer.is_finished(ws)
        assert trio.current_time() - start == took
        assert took == pytest.approx(0.5 if cancel else LINGER_MAX)
        assert ws.close_code == 4000  # our CLOSE went out: the code stays
        assert ws.exception() is None
        event = await peer.next_event()  # what the client reads later: all of it
        assert isinstance(event, CloseConnection) and event.code == 4000
        assert await peer.next_event() is None


@pytest.fixture(params=["memory", "socket"])
def over_both(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test over in-memory streams and over a real socket pair."""
    if request.param == "socket":
        monkeypatch.setattr(_peer, "default_stream_pair", _peer.socket_stream_pair)
    return str(request.param)


# -------------------------------------- heartbeat after a stall of this process


def _slow_pong_client(port: int, delay: float, done: threading.Event) -> None:
    """A raw WebSocket client (thread) that answers each PING after ``delay`` seconds."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        buf = buf.split(b"\r\n\r\n", 1)[1]
        sock.settimeout(0.05)
        while not done.is_set():
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + (buf[1] & 0x7F):
                opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
                payload, buf = buf[2 : 2 + length], buf[2 + length :]
                if opcode == 0x9:
                    time.sleep(delay)
                    sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                elif opcode == 0x8:
                    return
    finally:
        sock.close()


async def test_heartbeat_reads_a_pong_that_arrived_while_this_process_stalled() -> None:
    """The pong came in while the loop was blocked; the late timer must not win the race.

    Heartbeat 0.2 s: the PING goes at 0.2 s, the peer answers 20 ms later, while the
    handler blocks the whole trio run from 0.21 s to 0.41 s. When the run resumes, the
    timer (due at 0.3 s) and the pong wake together: the pong must be read first.
    """
    from trio_ws import web

    outcomes: list[tuple[int | None, object]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=0.2)
        await ws.prepare(request)
        await trio.sleep(0.21)
        time.sleep(0.2)  # noqa: ASYNC251 - a stall of the whole process (a CPU-bound step)
        await trio.sleep(0.05)
        outcomes.append((ws.close_code, ws.exception()))
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            site = await nursery.start(web.serve, app, "127.0.0.1", 0)
            for _ in range(8):  # the race goes either way by chance without the fix
                done = threading.Event()
                try:
                    await trio.to_thread.run_sync(_slow_pong_client, site.port, 0.02, done)
                finally:
                    done.set()
            nursery.cancel_scope.cancel()
    assert outcomes == [(None, None)] * 8
