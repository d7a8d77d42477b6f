"""The client against a scripted server that misbehaves at every stage of ``ws_connect``.

The server is a raw trio TCP server on 127.0.0.1. It reads the upgrade
request's head and then runs one script: it resets, closes, stalls, answers
with the wrong thing, or completes the handshake and misbehaves afterwards.
Each case checks what the client gives (the exception from ``ws_connect``, or
what ``receive()`` and ``close()`` return afterwards) and that nothing is
left behind: no task beyond the test's own, no client socket to the server,
and the process's open file descriptors back to their count before the case.
Every case runs in both client forms: ``async with session.ws_connect(...)``
and ``ws = await session.ws_connect(...)`` inside the session.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psutil
import pytest
import trio
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection
from wsproto.utilities import generate_accept_token

import trio_ws
from trio_ws import WSCloseCode, WSMsgType

pytestmark = pytest.mark.faults

HOST = "127.0.0.1"
#: The client's ``timeout`` in every case: the handshake bound and the close wait.
TIMEOUT = 0.5
#: The whole of one case, whatever happens.
CASE_BOUND = 10


# ------------------------------------------------------------------ the server


@dataclass
class Peer:
    """One accepted connection, as a script sees it."""

    stream: trio.SocketStream
    key: bytes
    #: Bytes the client sent after its request head (frames, once upgraded).
    received: bytearray = field(default_factory=bytearray)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data.replace(b"{accept}", generate_accept_token(self.key)))

    async def reset(self) -> None:
        """Close with SO_LINGER 0: the client gets an RST, not a FIN."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def read_some(self) -> bytes:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        self.received += data
        return data

    async def drain(self) -> None:
        """Read (and record) until the client closes: never answer anything."""
        while await self.read_some():
            pass

    def close_codes(self) -> list[int | None]:
        """The codes of the close frames the client sent."""
        conn = Connection(ConnectionType.SERVER)
        conn.receive_data(bytes(self.received))
        return [e.code for e in conn.events() if isinstance(e, CloseConnection)]


Script = Callable[[Peer], Awaitable[None]]


@dataclass
class Server:
    port: int
    nursery: trio.Nursery
    peers: list[Peer]
    #: Set when a script has finished (the server side of that connection is closed).
    finished: trio.Event


@asynccontextmanager
async def scripted_server(script: Script, *, raw: bool = False) -> AsyncIterator[Server]:
    """A raw TCP server that runs ``script`` on each connection after the request head.

    With ``raw``, the script runs as soon as the connection is accepted (for
    the TLS stage: nothing has been read, and ``key`` is empty).
    """
    peers: list[Peer] = []
    finished = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        head = b""
        try:
            if raw:
                peers.append(Peer(stream, b""))
                await script(peers[-1])
                return
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            peer = Peer(stream, key, bytearray(rest))
            peers.append(peer)
            await script(peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            finished.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
        try:
            yield Server(listeners[0].socket.getsockname()[1], nursery, peers, finished)
        finally:
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- leak checks


def tasks_outside(skip: trio.Nursery | None) -> set[trio.lowlevel.Task]:
    """Every task of this trio run, except those under the ``skip`` nursery."""
    found: set[trio.lowlevel.Task] = set()

    def walk(task: trio.lowlevel.Task) -> None:
        found.add(task)
        for nursery in task.child_nurseries:
            if nursery is not skip:
                for child in nursery.child_tasks:
                    walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


def client_sockets(port: int) -> list[Any]:
    """This process's open sockets whose remote end is the server's port."""
    return [
        c for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port
    ]


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------- the scripts


def head(status: bytes, *headers: bytes, end: bool = True) -> bytes:
    """A response head; ``{accept}`` becomes the right Sec-WebSocket-Accept."""
    lines = [b"HTTP/1.1 " + status, *headers]
    return b"\r\n".join(lines) + (b"\r\n\r\n" if end else b"\r\n")


UPGRADE = b"Upgrade: websocket"
CONNECTION = b"Connection: Upgrade"
ACCEPT = b"Sec-WebSocket-Accept: {accept}"
OK_101 = head(b"101 Switching Protocols", UPGRADE, CONNECTION, ACCEPT)


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """An unmasked (server) frame with a short payload."""
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


def then_close(data: bytes) -> Script:
    async def script(peer: Peer) -> None:
        await peer.send(data)
        await peer.stream.aclose()

    return script


def then_reset(data: bytes) -> Script:
    async def script(peer: Peer) -> None:
        if data:
            await peer.send(data)
        await peer.reset()

    return script


def then_drain(data: bytes) -> Script:
    """Send ``data``, then read whatever comes and never answer."""

    async def script(peer: Peer) -> None:
        await peer.send(data)
        await peer.drain()

    return script


def then_trickle(data: bytes, forever: bytes, period: float = 0.05) -> Script:
    """Send ``data``, then ``forever`` a piece at a time without end."""

    async def script(peer: Peer) -> None:
        await peer.send(data)
        while True:
            for i in range(len(forever)):
                await peer.send(forever[i : i + 1])
                await trio.sleep(period)

    return script


async def silent(peer: Peer) -> None:
    await peer.drain()


async def endless_body(peer: Peer) -> None:
    await peer.send(head(b"500 Internal Server Error", b"Content-Length: 1000000000"))
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB at most, then hold the connection open
        await peer.send(chunk)
    await peer.drain()


@dataclass
class Refusal:
    """A handshake-stage case: ``ws_connect`` must raise ``error`` (matching ``match``)."""

    script: Script
    error: type[BaseException]
    match: str
    status: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


#: What ws_connect raises at each stage (docs/limits.md, "Client: a misbehaving server").
HANDSHAKE_CASES: dict[str, Refusal] = {
    "reset before the response": Refusal(
        then_reset(b""), trio_ws.ServerConnectionError, "Connection lost"
    ),
    "close before the response": Refusal(
        then_close(b""), trio_ws.ServerDisconnectedError, "disconnected before a response"
    ),
    "close mid status line": Refusal(
        then_close(b"HTTP/1.1 10"),
        trio_ws.ServerDisconnectedError,
        "middle of the response head",
    ),
    "reset mid status line": Refusal(
        then_reset(b"HTTP/1.1 10"), trio_ws.ServerConnectionError, "Connection lost"
    ),
    "close mid headers": Refusal(
        then_close(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs"),
        trio_ws.ServerDisconnectedError,
        "middle of the response head",
    ),
    "reset mid headers": Refusal(
        then_reset(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs"),
        trio_ws.ServerConnectionError,
        "Connection lost",
    ),
    "403 with a body": Refusal(
        then_close(head(b"403 Forbidden", b"Content-Length: 2") + b"no"),
        trio_ws.WSServerHandshakeError,
        "Invalid response status",
        status=403,
    ),
    "403 with its body cut short": Refusal(
        then_close(head(b"403 Forbidden", b"Content-Length: 100") + b"cut"),
        trio_ws.WSServerHandshakeError,
        "Invalid response status",
        status=403,
    ),
    "200 instead of 101": Refusal(
        then_drain(head(b"200 OK", b"Content-Length: 0")),
        trio_ws.WSServerHandshakeError,
        "Invalid response status",
        status=200,
    ),
    "500 with an endless body": Refusal(
        endless_body, trio_ws.WSServerHandshakeError, "Invalid response status", status=500
    ),
    "101 without Sec-WebSocket-Accept": Refusal(
        then_drain(head(b"101 Switching Protocols", UPGRADE, CONNECTION)),
        trio_ws.WSServerHandshakeError,
        "Invalid challenge response",
        status=101,
    ),
    "101 with a wrong Sec-WebSocket-Accept": Refusal(
        then_drain(
            head(b"101 Switching Protocols", UPGRADE, CONNECTION, b"Sec-WebSocket-Accept: x=")
        ),
        trio_ws.WSServerHandshakeError,
        "Invalid challenge response",
        status=101,
    ),
    "101 without Upgrade": Refusal(
        then_drain(head(b"101 Switching Protocols", CONNECTION, ACCEPT)),
        trio_ws.WSServerHandshakeError,
        "Invalid upgrade header",
    ),
    "101 with Upgrade: h2c": Refusal(
        then_drain(head(b"101 Switching Protocols", b"Upgrade: h2c", CONNECTION, ACCEPT)),
        trio_ws.WSServerHandshakeError,
        "Invalid upgrade header",
    ),
    "101 without Connection": Refusal(
        then_drain(head(b"101 Switching Protocols", UPGRADE, ACCEPT)),
        trio_ws.WSServerHandshakeError,
        "Invalid connection header",
    ),
    "101 with Connection: close": Refusal(
        then_drain(head(b"101 Switching Protocols", UPGRADE, b"Connection: close", ACCEPT)),
        trio_ws.WSServerHandshakeError,
        "Invalid connection header",
    ),
    "101 with an unoffered subprotocol": Refusal(
        then_drain(
            head(
                b"101 Switching Protocols",
                UPGRADE,
                CONNECTION,
                ACCEPT,
                b"Sec-WebSocket-Protocol: evil",
            )
        ),
        trio_ws.WSServerHandshakeError,
        "not offered",
        options={"protocols": ["chat"]},
    ),
    "101 with a subprotocol when none was offered": Refusal(
        then_drain(
            head(
                b"101 Switching Protocols",
                UPGRADE,
                CONNECTION,
                ACCEPT,
                b"Sec-WebSocket-Protocol: chat",
            )
        ),
        trio_ws.WSServerHandshakeError,
        "not offered",
    ),
    "101 with an extension when none was offered": Refusal(
        then_drain(
            head(
                b"101 Switching Protocols",
                UPGRADE,
                CONNECTION,
                ACCEPT,
                b"Sec-WebSocket-Extensions: permessage-deflate",
            )
        ),
        trio_ws.WSServerHandshakeError,
        "not offered",
        options={"compress": 0},
    ),
    "101 with an unknown extension": Refusal(
        then_drain(
            head(
                b"101 Switching Protocols",
                UPGRADE,
                CONNECTION,
                ACCEPT,
                b"Sec-WebSocket-Extensions: x-zip",
            )
        ),
        trio_ws.WSServerHandshakeError,
        "Invalid extension",
        options={"compress": 15},
    ),
    "101 with bad deflate parameters": Refusal(
        then_drain(
            head(
                b"101 Switching Protocols",
                UPGRADE,
                CONNECTION,
                ACCEPT,
                b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=3",
            )
        ),
        trio_ws.WSServerHandshakeError,
        "Invalid extension",
        options={"compress": 15},
    ),
    "garbage instead of HTTP": Refusal(
        then_drain(b"\x00\x01\x02garbage\r\n\r\n"), trio_ws.ServerConnectionError, "Invalid HTTP"
    ),
    "a TLS alert on a plain connection": Refusal(
        then_close(b"\x15\x03\x01\x00\x02\x02\x46"), trio_ws.ServerConnectionError, "Invalid HTTP"
    ),
    "a huge header block": Refusal(
        then_drain(
            head(b"101 Switching Protocols", end=False) + b"X-Pad: %s\r\n" % (b"a" * 90) * 1000
        ),
        trio_ws.ServerConnectionError,
        "Invalid HTTP",
    ),
    "one huge header line": Refusal(
        then_drain(head(b"101 Switching Protocols", end=False) + b"X-Pad: " + b"a" * 100_000),
        trio_ws.ServerConnectionError,
        "Invalid HTTP",
    ),
    "silence": Refusal(silent, trio_ws.WSHandshakeTimeout, "timed out"),
    "a stall mid headers": Refusal(
        then_drain(head(b"101 Switching Protocols", UPGRADE, end=False)),
        trio_ws.WSHandshakeTimeout,
        "timed out",
    ),
    "a header trickling one byte at a time": Refusal(
        then_trickle(head(b"101 Switching Protocols", UPGRADE, end=False), b"X-Slow: aaaaaaaa"),
        trio_ws.WSHandshakeTimeout,
        "timed out",
    ),
    "endless 102 Processing": Refusal(
        then_trickle(b"", b"HTTP/1.1 102 Processing\r\n\r\n", period=0.002),
        trio_ws.WSHandshakeTimeout,
        "timed out",
    ),
}

FORMS = ["async with", "await"]


async def connect_and_use(
    session: trio_ws.ClientSession,
    url: str,
    form: str,
    use: Callable[[trio_ws.ClientWebSocketResponse], Awaitable[None]],
    **options: Any,
) -> None:
    """Connect in ``form`` and run ``use``; on return every task of the connection has ended."""
    options.setdefault("timeout", TIMEOUT)
    if form == "async with":
        async with session.ws_connect(url, **options) as ws:
            await use(ws)
    else:
        ws = await session.ws_connect(url, **options)
        await use(ws)
        # The session forgets the connection once its tasks have ended.
        await trio.testing.wait_all_tasks_blocked()
        assert ws not in session._owned


async def nothing(ws: trio_ws.ClientWebSocketResponse) -> None:
    raise AssertionError("ws_connect should have failed")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", list(HANDSHAKE_CASES))
async def test_handshake_stage_faults(case: str, form: str) -> None:
    spec = HANDSHAKE_CASES[case]
    fds = fd_count()
    with trio.fail_after(CASE_BOUND):
        async with scripted_server(spec.script) as server:
            baseline = tasks_outside(server.nursery)
            url = f"ws://{HOST}:{server.port}/"
            async with trio_ws.ClientSession() as session:
                start = trio.current_time()
                with pytest.raises(spec.error, match=spec.match) as info:
                    await connect_and_use(session, url, form, nothing, **spec.options)
                elapsed = trio.current_time() - start
                if spec.error is trio_ws.WSHandshakeTimeout:
                    assert TIMEOUT <= elapsed < TIMEOUT + 1
                    # Connected: not a connection timeout.
                    assert not isinstance(info.value, trio_ws.ConnectionTimeoutError)
                else:
                    # Answered at once, not at the handshake timeout.
                    assert elapsed < TIMEOUT
                if spec.status is not None:
                    assert isinstance(info.value, trio_ws.WSServerHandshakeError)
                    assert info.value.status == spec.status
                assert isinstance(info.value, trio_ws.ClientError)
                # Nothing left: no task beyond the test's own, no socket to the server.
                assert tasks_outside(server.nursery) == baseline
                assert client_sockets(server.port) == []
            assert tasks_outside(server.nursery) == baseline
    assert fd_count() == fds


@pytest.mark.parametrize("form", FORMS)
async def test_connection_refused(form: str) -> None:
    fds = fd_count()
    baseline = tasks_outside(None)
    # Bound and not listening: the port is ours and every connect is refused.
    with socket.socket() as reserved, trio.fail_after(CASE_BOUND):
        reserved.bind((HOST, 0))
        port = reserved.getsockname()[1]
        async with trio_ws.ClientSession() as session:
            with pytest.raises(trio_ws.ClientConnectorError, match="Cannot connect"):
                await connect_and_use(session, f"ws://{HOST}:{port}/", form, nothing)
            assert tasks_outside(None) == baseline
            assert client_sockets(port) == []
    assert fd_count() == fds


# ------------------------------------------------------------ after the 101


async def closed_without_frame(ws: trio_ws.ClientWebSocketResponse) -> None:
    """TCP ended with no close frame (aiohttp's row 17)."""
    msg = await ws.receive()
    assert msg.type == WSMsgType.CLOSED
    assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
    assert isinstance(ws.exception(), trio_ws.ClientConnectionResetError)
    assert await ws.close() is False
    assert (await ws.receive()).type == WSMsgType.CLOSED


def protocol_error(code: int) -> Callable[[trio_ws.ClientWebSocketResponse], Awaitable[None]]:
    """One ERROR message carrying WebSocketError(code), then CLOSED (aiohttp's row 16)."""

    async def check(ws: trio_ws.ClientWebSocketResponse) -> None:
        msg = await ws.receive()
        assert msg.type == WSMsgType.ERROR
        assert isinstance(msg.data, trio_ws.WebSocketError)
        assert msg.data.code == code
        assert ws.close_code == code
        assert (await ws.receive()).type == WSMsgType.CLOSED
        assert await ws.close() is False

    return check


async def close_then_gone(ws: trio_ws.ClientWebSocketResponse) -> None:
    msg = await ws.receive()
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1000, "bye")
    # The reply may or may not have been written before the reset arrived.
    assert ws.close_code in (WSCloseCode.OK, WSCloseCode.ABNORMAL_CLOSURE)
    assert await ws.close() is False
    assert (await ws.receive()).type == WSMsgType.CLOSED


async def unanswered_close(ws: trio_ws.ClientWebSocketResponse) -> None:
    start = trio.current_time()
    assert await ws.close() is True
    assert TIMEOUT <= trio.current_time() - start < TIMEOUT + 1
    assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
    assert isinstance(ws.exception(), trio_ws.WSTimeoutError)


async def answered_close(ws: trio_ws.ClientWebSocketResponse) -> None:
    start = trio.current_time()
    assert await ws.close() is True
    # The client does not wait for the server's FIN once the close frames crossed.
    assert trio.current_time() - start < TIMEOUT
    assert ws.close_code == WSCloseCode.OK
    assert ws.exception() is None


async def early_frame(ws: trio_ws.ClientWebSocketResponse) -> None:
    assert await ws.receive_str() == "hi"
    msg = await ws.receive()
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1000)
    assert ws.close_code == WSCloseCode.OK


async def answer_close_keep_tcp(peer: Peer) -> None:
    """Complete the handshake, answer the client's close frame, never close TCP first."""
    await peer.send(OK_101)
    while not peer.close_codes():
        if not await peer.read_some():
            return
    await peer.send(close_frame(1000))
    await peer.drain()


@dataclass
class Upgraded:
    """An after-the-101 case: ``check`` runs on the connected WebSocket."""

    script: Script
    check: Callable[[trio_ws.ClientWebSocketResponse], Awaitable[None]]
    #: The close frames the client must have sent, in order.
    client_closes: list[int | None] | None = None


UPGRADED_CASES: dict[str, Upgraded] = {
    "reset right after the 101": Upgraded(then_reset(OK_101), closed_without_frame),
    "EOF right after the 101": Upgraded(then_close(OK_101), closed_without_frame),
    "half a frame, then EOF": Upgraded(then_close(OK_101 + b"\x81\x05he"), closed_without_frame),
    "a reserved opcode as the first frame": Upgraded(
        then_drain(OK_101 + frame(0xF, b"")), protocol_error(1002), [1002]
    ),
    "a masked server frame": Upgraded(
        then_drain(
            OK_101 + b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"ab", strict=True))
        ),
        protocol_error(1002),
        [1002],
    ),
    "invalid UTF-8 in a text frame": Upgraded(
        then_drain(OK_101 + frame(0x1, b"\xff\xfe")), protocol_error(1007), [1007]
    ),
    "a frame declaring 1 TiB": Upgraded(
        then_drain(OK_101 + b"\x82\x7f" + struct.pack("!Q", 2**40)), protocol_error(1009), [1009]
    ),
    "a close frame, then a reset": Upgraded(
        then_reset(OK_101 + close_frame(1000, b"bye")), close_then_gone
    ),
    "a close frame, then EOF": Upgraded(
        then_close(OK_101 + close_frame(1000, b"bye")), close_then_gone
    ),
    "never answers the client's close": Upgraded(then_drain(OK_101), unanswered_close, [1000]),
    "answers the close but keeps TCP open": Upgraded(answer_close_keep_tcp, answered_close, [1000]),
    "a frame in the same packet as the 101": Upgraded(
        then_drain(OK_101 + frame(0x1, b"hi") + close_frame(1000)), early_frame, [1000]
    ),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", list(UPGRADED_CASES))
async def test_after_upgrade_faults(case: str, form: str) -> None:
    spec = UPGRADED_CASES[case]
    fds = fd_count()
    with trio.fail_after(CASE_BOUND):
        async with scripted_server(spec.script) as server:
            baseline = tasks_outside(server.nursery)
            url = f"ws://{HOST}:{server.port}/"
            async with trio_ws.ClientSession() as session:
                await connect_and_use(session, url, form, spec.check)
                assert tasks_outside(server.nursery) == baseline
                assert client_sockets(server.port) == []
            assert tasks_outside(server.nursery) == baseline
            if spec.client_closes is not None:
                # The client closed its socket: the server's script sees EOF and ends.
                await server.finished.wait()
                assert [p.close_codes() for p in server.peers] == [spec.client_closes]
    assert fd_count() == fds


# ------------------------------------------------------------- the TLS stage


async def read_then(peer: Peer, then: Callable[[], Awaitable[None]]) -> None:
    """Read the client's TLS hello, then act."""
    await peer.read_some()
    await then()


TLS_CASES: dict[str, tuple[Script, type[BaseException], str]] = {
    "close before the TLS hello is answered": (
        lambda peer: read_then(peer, peer.stream.aclose),
        trio_ws.ClientConnectorError,
        "Cannot connect to host",
    ),
    "reset before the TLS hello is answered": (
        lambda peer: read_then(peer, peer.reset),
        trio_ws.ClientConnectorError,
        "Cannot connect to host",
    ),
    "plain HTTP instead of TLS": (
        lambda peer: read_then(
            peer, lambda: peer.send(head(b"400 Bad Request", b"Content-Length: 0"))
        ),
        # Not a certificate problem: TLS itself failed (as aiohttp reports it).
        trio_ws.ClientConnectorSSLError,
        "WRONG_VERSION_NUMBER|wrong version number",
    ),
    # Still connecting: aiohttp's ConnectionTimeoutError (also a WSHandshakeTimeout).
    "silence instead of TLS": (silent, trio_ws.ConnectionTimeoutError, "timed out"),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", list(TLS_CASES))
async def test_tls_stage_faults(case: str, form: str) -> None:
    script, error, match = TLS_CASES[case]
    fds = fd_count()
    with trio.fail_after(CASE_BOUND):
        async with scripted_server(script, raw=True) as server:
            baseline = tasks_outside(server.nursery)
            url = f"wss://{HOST}:{server.port}/"
            async with trio_ws.ClientSession() as session:
                with pytest.raises(error, match=match) as info:
                    await connect_and_use(session, url, form, nothing, ssl=False)
                if error is trio_ws.ClientConnectorError:
                    # The server hung up: the connection broke, TLS itself did not fail.
                    assert not isinstance(info.value, trio_ws.ClientSSLError)
                    assert info.value.errno is not None
                if error is trio_ws.ClientConnectorSSLError:
                    assert not isinstance(info.value, trio_ws.ClientConnectorCertificateError)
                assert tasks_outside(server.nursery) == baseline
                assert client_sockets(server.port) == []
    assert fd_count() == fds


# ------------------------------------------------------------- cancellation


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("stage", ["before the response", "mid headers", "after the 101"])
async def test_cancelled_by_the_caller(stage: str, form: str) -> None:
    """The caller's own deadline (not ``timeout``) ends ws_connect: nothing is left."""
    data = {
        "before the response": b"",
        "mid headers": head(b"101 Switching Protocols", UPGRADE, end=False),
        "after the 101": OK_101,
    }[stage]

    async def use(ws: trio_ws.ClientWebSocketResponse) -> None:
        await ws.receive()  # the server sends nothing more

    fds = fd_count()
    with trio.fail_after(CASE_BOUND):
        async with scripted_server(then_drain(data)) as server:
            baseline = tasks_outside(server.nursery)
            url = f"ws://{HOST}:{server.port}/"
            async with trio_ws.ClientSession() as session:
                with trio.move_on_after(0.2) as scope:
                    await connect_and_use(session, url, form, use, timeout=2)
                assert scope.cancelled_caught
                if form == "await":
                    # The session still owns a WebSocket that connected: it ends with the block.
                    await trio.testing.wait_all_tasks_blocked()
                    assert len(session._owned) == (stage == "after the 101")
            assert tasks_outside(server.nursery) == baseline
            assert client_sockets(server.port) == []
    assert fd_count() == fds
