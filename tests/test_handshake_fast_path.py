"""The hand-read handshake heads over real sockets: pieces, early frames, and the way back to h11.

The server reads a plain upgrade request without h11 and creates h11 only
when the request turns out not to be an upgrade (``_http/_server.py``); the
client writes its request and reads a plain 101 by hand (``_http/_client.py``).
These tests drive both over 127.0.0.1 where the two paths meet: heads that
arrive a byte at a time, frames that come in the same segment as a head,
and an upgrade-looking request answered with plain HTTP on a connection
that then goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import trio_ws
from trio_ws import WSMsgType, web
from trio_ws._protocol._handshake import accept_token

pytestmark = pytest.mark.integration

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n"
)


def masked_text(text: bytes) -> bytes:
    """One client TEXT frame (short payload, masked)."""
    mask = b"\x01\x02\x03\x04"
    return (
        bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    )


async def echo(request: web.Request) -> web.StreamResponse:
    if request.query.get("plain"):
        return web.Response(text="plain answer")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


@asynccontextmanager
async def running() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/hello", hello)
    async with trio.open_nursery() as nursery:
        site = await nursery.start(web.serve, app, "127.0.0.1", 0)
        yield site.port
        nursery.cancel_scope.cancel()


async def read_until(stream: trio.SocketStream, buf: bytearray, marker: bytes) -> bytes:
    """Read into ``buf`` until it holds ``marker``; return (and drop) what precedes it."""
    while marker not in buf:
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed before {marker!r}; got {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(marker)
    buf[:] = rest
    return head


async def read_exactly(stream: trio.SocketStream, buf: bytearray, size: int) -> bytes:
    while len(buf) < size:
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed with {bytes(buf)!r}"
        buf += chunk
    out = bytes(buf[:size])
    buf[:] = buf[size:]
    return out


async def test_an_upgrade_sent_a_byte_at_a_time_is_upgraded() -> None:
    with trio.fail_after(10):
        async with running() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                for i in range(len(UPGRADE)):
                    await stream.send_all(UPGRADE[i : i + 1])
                buf = bytearray()
                head = await read_until(stream, buf, b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
                assert b"Sec-WebSocket-Accept: " + accept_token(KEY).encode() in head
                await stream.send_all(masked_text(b"hi"))
                assert await read_exactly(stream, buf, 4) == b"\x81\x02hi"


async def test_a_frame_in_the_requests_segment_reaches_the_handler() -> None:
    with trio.fail_after(10):
        async with running() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(UPGRADE + masked_text(b"early"))
                buf = bytearray()
                await read_until(stream, buf, b"\r\n\r\n")
                assert await read_exactly(stream, buf, 7) == b"\x81\x05early"


async def test_an_upgrade_answered_with_plain_http_keeps_its_connection() -> None:
    # The fast path read the head; the handler answers plain HTTP, so h11
    # takes over from that same head and the connection serves the next one.
    plain = UPGRADE.replace(b"GET /ws ", b"GET /ws?plain=1 ")
    with trio.fail_after(10):
        async with running() as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(plain)
                buf = bytearray()
                head = await read_until(stream, buf, b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                assert await read_exactly(stream, buf, len(b"plain answer")) == b"plain answer"
                await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await read_until(stream, buf, b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                assert await read_exactly(stream, buf, 5) == b"hello"
                # And an upgrade after that (h11 reads it now) still works.
                await stream.send_all(UPGRADE)
                head = await read_until(stream, buf, b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 ")
                await stream.send_all(masked_text(b"ok"))
                assert await read_exactly(stream, buf, 4) == b"\x81\x02ok"


async def fixed_server(
    answer_parts: list[bytes], task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer one connection's request with ``answer_parts`` sent one by one, then echo a frame."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        task_status.started(listener.socket.getsockname()[1])
        stream = await listener.accept()
    async with stream:
        buf = bytearray()
        head = await read_until(stream, buf, b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        for part in answer_parts:
            await stream.send_all(part.replace(b"{accept}", accept_token(key).encode()))
        # Echo the client's first TEXT frame (masked) unmasked, then close.
        first = await read_exactly(stream, buf, 2)
        size = first[1] & 0x7F
        mask = await read_exactly(stream, buf, 4)
        payload = await read_exactly(stream, buf, size)
        await stream.send_all(
            b"\x81" + bytes([size]) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        )
        await stream.send_all(b"\x88\x02\x03\xe8")


async def test_the_client_reads_a_101_sent_a_byte_at_a_time() -> None:
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fixed_server, [answer[:1], *answer[1:].split(b"\r")])
            async with trio_ws.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/") as ws:
                    await ws.send_str("hi")
                    assert await ws.receive_str() == "hi"


async def test_the_client_keeps_a_frame_sent_with_the_101() -> None:
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: {accept}\r\n\r\n\x81\x05early"
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fixed_server, [answer])
            async with trio_ws.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/") as ws:
                    assert await ws.receive_str() == "early"
                    await ws.send_str("hi")
                    assert await ws.receive_str() == "hi"


async def test_the_client_hands_an_answer_that_is_not_a_plain_101_to_h11() -> None:
    # A 100 Continue before the 101: not for the fast path; h11 skips it.
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fixed_server, [answer[:20], answer[20:]])
            async with trio_ws.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/") as ws:
                    await ws.send_str("hi")
                    assert await ws.receive_str() == "hi"
