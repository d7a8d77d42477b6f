"""Compressed messages next to control frames, in both roles, over real sockets.

The regression this file guards: a permessage-deflate message that came
after a ping or pong was handed to the application still compressed (or
closed the connection with 1007), because the parser kept per-frame deflate
state that control frames left stale. Every case here failed before the fix.

The peer is wsproto (a real RFC 6455 implementation) over a TCP connection
on 127.0.0.1; it *sends* each scripted sequence of pings, pongs and
(fragmented) compressed messages, and trio_ws must receive every message
intact. The peer's own receive path is not exercised with control frames
between compressed fragments: wsproto gets that case wrong (its extension
forgets that a message is compressed when a control frame completes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import websockets.sync.client
import websockets.sync.server
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

import trio_ws
from trio_ws import WSMsgType, web

pytestmark = pytest.mark.integration

A = "compressible " * 40
B = "another compressible message " * 20

# A script is the list of events the peer sends once the connection is open
# (after answering our side's ping when ``solicited``), and the texts our
# side must then receive, in order. "PING" and "PONG" are control frames
# from the peer; a tuple is a fragmented message.
Script = list[str | tuple[str, ...]]

SCRIPTS: dict[str, Script] = {
    "ping-before": ["PING", A],
    "pong-before": ["PONG", A],
    "between-two": [A, "PING", A, "PONG", B],
    "between-fragments": [(A[:100], "PING", A[100:300], "PONG", A[300:]), A],
    "fragments-then-ping": [(B[:10], B[10:]), "PING", B],
}


def _events(script: Script) -> list[Event]:
    events: list[Event] = []
    for item in script:
        if item == "PING":
            events.append(Ping(b"peer-ping"))
        elif item == "PONG":
            events.append(Pong(b"unsolicited"))
        elif isinstance(item, tuple):
            parts = [p for p in item if p not in ("PING", "PONG")]
            for part in item:
                if part == "PING":
                    events.append(Ping(b"mid"))
                elif part == "PONG":
                    events.append(Pong(b"mid"))
                else:
                    last = part is parts[-1]
                    events.append(TextMessage(data=part, message_finished=last))
        else:
            events.append(TextMessage(data=item))
    return events


def _expected(script: Script) -> list[str]:
    out = []
    for item in script:
        if isinstance(item, tuple):
            out.append("".join(p for p in item if p not in ("PING", "PONG")))
        elif item not in ("PING", "PONG"):
            out.append(item)
    return out


class WsprotoPeer:
    """A wsproto connection over a trio TCP stream, for either role."""

    def __init__(self, stream: trio.SocketStream, conn: WSConnection) -> None:
        self.stream = stream
        self.conn = conn
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def next_event(self) -> Event:
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.conn.receive_data(data or None)
            self.events.extend(self.conn.events())
            if not data and not self.events:
                raise EOFError
        return self.events.pop(0)

    async def run_script(self, script: Script, *, solicited: bool) -> None:
        if solicited:
            # Our side pings first; answer it, then send the script.
            while not isinstance(event := await self.next_event(), Ping):
                pass
            await self.send(event.response())
        for event in _events(script):
            await self.send(event)
        await self.send(TextMessage(data="done"))
        # Drain until our side closes: answer its pings and its close.
        while True:
            try:
                event = await self.next_event()
            except EOFError:
                return
            if isinstance(event, Ping):
                await self.send(event.response())
            elif isinstance(event, CloseConnection):
                await self.send(event.response())
                return


def _offer(notakeover: bool) -> PerMessageDeflate:
    return PerMessageDeflate(client_no_context_takeover=notakeover)


async def _receive_texts(ws: trio_ws.ClientWebSocketResponse | web.WebSocketResponse) -> list[str]:
    got: list[str] = []
    async for msg in ws:
        assert msg.type == WSMsgType.TEXT, msg
        if msg.data == "done":
            break
        got.append(msg.data)
    return got


@asynccontextmanager
async def _server(handler: Callable[[web.Request], object]) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/ws", handler)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        site = await nursery.start(web.serve, app, "127.0.0.1", 0)
        yield site.port
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("notakeover", [False, True], ids=["takeover", "no-takeover"])
@pytest.mark.parametrize("solicited", [False, True], ids=["peer-first", "we-ping-first"])
@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_server_inflates_after_control_frames(
    name: str, solicited: bool, notakeover: bool
) -> None:
    script = SCRIPTS[name]
    received: list[list[str]] = []
    compressed: list[bool] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        compressed.append(bool(ws.compress))
        if solicited:
            await ws.ping(b"we-ping")
        received.append(await _receive_texts(ws))
        await ws.close()
        return ws

    with trio.fail_after(10):
        async with _server(handler) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                peer = WsprotoPeer(stream, WSConnection(ConnectionType.CLIENT))
                await peer.send(
                    Request(host=f"127.0.0.1:{port}", target="/ws", extensions=[_offer(notakeover)])
                )
                accepted = await peer.next_event()
                assert isinstance(accepted, AcceptConnection)
                assert accepted.extensions, "permessage-deflate was not negotiated"
                await peer.run_script(script, solicited=solicited)
    assert compressed == [True]
    assert received == [_expected(script)]


@pytest.mark.parametrize("notakeover", [False, True], ids=["takeover", "no-takeover"])
@pytest.mark.parametrize("solicited", [False, True], ids=["peer-first", "we-ping-first"])
@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_client_inflates_after_control_frames(
    name: str, solicited: bool, notakeover: bool
) -> None:
    script = SCRIPTS[name]

    async def serve_one(stream: trio.SocketStream) -> None:
        peer = WsprotoPeer(stream, WSConnection(ConnectionType.SERVER))
        request = await peer.next_event()
        assert isinstance(request, Request)
        ext = PerMessageDeflate(server_no_context_takeover=notakeover)
        await peer.send(AcceptConnection(extensions=[ext]))
        await peer.run_script(script, solicited=solicited)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, serve_one, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with trio_ws.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/ws", compress=15) as ws:
                    assert ws.compress
                    if solicited:
                        await ws.ping(b"we-ping")
                    got = await _receive_texts(ws)
                    await ws.close()
            nursery.cancel_scope.cancel()
    assert got == _expected(script)


# --------------------------------------- the issue's two reproductions


async def test_issue_reproduction_server_pings_then_websockets_client_sends() -> None:
    """websockets' client (default compression) sends after our ping is answered."""
    got: list[object] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.ping(b"x")
        msg = await ws.receive()
        got.append(msg.data)
        await ws.send_str("ok")
        await ws.close()
        return ws

    def client(port: int) -> str:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws") as conn:
            assert conn.protocol.extensions, "websockets did not negotiate deflate"
            # Our ping arrives first and websockets answers it on its own.
            conn.send("after")
            reply = conn.recv(timeout=5)
            assert isinstance(reply, str)
            return reply

    with trio.fail_after(10):
        async with _server(handler) as port:
            reply = await trio.to_thread.run_sync(client, port)
    assert got == ["after"]
    assert reply == "ok"


async def test_issue_reproduction_client_pings_websockets_server() -> None:
    """A trio_ws client pings a websockets server, then gets its compressed echo."""

    def echo(conn: websockets.sync.server.ServerConnection) -> None:
        for message in conn:
            conn.send(message)

    server = websockets.sync.server.serve(echo, "127.0.0.1", 0)
    port = server.socket.getsockname()[1]
    with server:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.to_thread.run_sync, server.serve_forever))
            try:
                with trio.fail_after(10):
                    async with trio_ws.ClientSession() as session:
                        async with session.ws_connect(
                            f"ws://127.0.0.1:{port}", compress=15
                        ) as ws:
                            assert ws.compress
                            await ws.ping(b"p")
                            for text in ("first " * 50, "second " * 50):
                                await ws.send_str(text)
                                msg = await ws.receive()
                                assert (msg.type, msg.data) == (WSMsgType.TEXT, text)
                            await ws.close()
                            assert ws.close_code == 1000
            finally:
                server.shutdown()
