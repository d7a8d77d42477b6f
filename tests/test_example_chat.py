"""The chat example's protocol, spoken by the trio_ws client (no browser).

``examples/chat_server.py`` is loaded by path and served in-process with ``web.serve``; one
test also runs it as a script, to check the printed address and the graceful shutdown.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto import events as wsevents

import trio_ws
from trio_ws import WSCloseCode, WSMsgType, web

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0  # seconds for any one exchange with the server


def load_chat_server() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chat_server", ROOT / "examples" / "chat_server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


chat_server = load_chat_server()

Connect = Callable[[], AbstractAsyncContextManager[trio_ws.ClientWebSocketResponse]]


@pytest.fixture
async def port(nursery: trio.Nursery) -> int:
    site = await nursery.start(web.serve, chat_server.build_app(), "127.0.0.1", 0)
    return int(site.port)


@pytest.fixture
async def connect(port: int) -> AsyncIterator[Connect]:
    async with trio_ws.ClientSession() as session:

        @asynccontextmanager
        async def connect_() -> AsyncIterator[trio_ws.ClientWebSocketResponse]:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
                yield ws

        yield connect_


async def receive(ws: trio_ws.ClientWebSocketResponse) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        msg = await ws.receive()
    assert msg.type == WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def join(ws: trio_ws.ClientWebSocketResponse, name: object) -> dict[str, Any]:
    await ws.send_json({"type": "join", "username": name})
    welcome = await receive(ws)
    assert welcome["type"] == "system", welcome
    return welcome


async def test_join_message_and_leave(connect: Connect) -> None:
    async with connect() as alice:
        welcome = await join(alice, "alice")
        assert welcome == {
            "type": "system",
            "username": "alice",
            "message": "Welcome alice!",
            "users": ["alice"],
        }
        async with connect() as bob:
            assert (await join(bob, "bob"))["users"] == ["alice", "bob"]
            assert await receive(alice) == {
                "type": "user_joined",
                "username": "bob",
                "message": "bob joined the chat",
                "users": ["alice", "bob"],
            }

            await bob.send_json({"type": "message", "message": "hi alice"})
            expected = {"type": "message", "username": "bob", "message": "hi alice"}
            assert await receive(alice) == expected
            assert await receive(bob) == expected  # the sender sees its own line too

        assert await receive(alice) == {
            "type": "user_left",
            "username": "bob",
            "message": "bob left the chat",
            "users": ["alice"],
        }
        await alice.send_json({"type": "message", "message": "alone"})
        assert (await receive(alice))["message"] == "alone"


async def test_bad_input_gets_an_error_and_the_connection_survives(connect: Connect) -> None:
    async with connect() as ws:
        cases: list[tuple[str | bytes, str]] = [
            ("{not json", "Invalid JSON message"),
            ("[1, 2]", "Expected a JSON object"),
            ('"join"', "Expected a JSON object"),
            ('{"type": "message", "message": "early"}', "Join first"),
            ('{"type": "dance"}', "Unknown message type: 'dance'"),
            ("{}", "Unknown message type: None"),
            (b"\x00\x01", "Send JSON text, not binary"),
        ]
        for payload, error in cases:
            if isinstance(payload, bytes):
                await ws.send_bytes(payload)
            else:
                await ws.send_str(payload)
            answer = await receive(ws)
            assert answer["type"] == "error", payload
            assert answer["message"].startswith(error), (payload, answer)

        await join(ws, "carol")
        for payload, error in [
            ({"type": "join", "username": "again"}, "Already joined as carol"),
            ({"type": "message", "message": "   "}, "A message needs some text"),
            ({"type": "message", "message": 42}, "A message needs some text"),
            ({"type": "message", "message": "x" * 2001}, "Message too long"),
        ]:
            await ws.send_json(payload)
            answer = await receive(ws)
            assert answer["type"] == "error", payload
            assert answer["message"].startswith(error), (payload, answer)
        await ws.send_json({"type": "message", "message": "x" * 2000})
        assert (await receive(ws))["message"] == "x" * 2000
        assert not ws.closed


async def test_names_are_cleaned_and_unique(connect: Connect) -> None:
    async with connect() as a, connect() as b, connect() as c, connect() as d, connect() as e:
        assert (await join(a, "  dora \n"))["username"] == "dora"
        assert (await join(b, "dora"))["username"] == "dora (2)"
        assert (await join(c, ""))["username"] == "Anonymous"
        assert (await join(d, None))["username"] == "Anonymous (2)"
        welcome = await join(e, "z" * 100)
        assert welcome["username"] == "z" * 32
        assert welcome["users"] == ["Anonymous", "Anonymous (2)", "dora", "dora (2)", "z" * 32]


async def test_index_serves_a_page_that_connects_to_its_own_host(port: int) -> None:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"content-type: text/html" in head.lower()
    page = body.decode()
    assert '"/ws"' in page and "location.host" in page
    assert "localhost:8080" not in page
    assert "prompt(" not in page


class FakeWebSocket:
    """Stands in for a WebSocketResponse in the writer: healthy, failing or stuck."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sent: list[dict[str, Any]] = []

    async def send_json(self, message: dict[str, Any]) -> None:
        if self.behaviour == "fails":
            raise ConnectionResetError("Cannot write to closing transport")
        if self.behaviour == "stuck":
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        self.sent.append(message)


async def test_broadcast_outlives_failing_and_slow_clients(
    autojump_clock: trio.testing.MockClock,
) -> None:
    room = chat_server.ChatRoom()
    clients = {}
    async with trio.open_nursery() as nursery:
        for name in ("healthy", "fails", "stuck", "flooded"):
            send, receive_ = trio.open_memory_channel[dict[str, Any]](chat_server.OUTBOX_SIZE)
            behaviour = "stuck" if name == "flooded" else name
            client = chat_server.Client(FakeWebSocket(behaviour), send)
            room.add_client(client, name)
            clients[name] = client

            async def writer(client: Any = client, receive_: Any = receive_) -> None:
                with client.cancel_scope:  # as the handler does
                    await chat_server.write_outbox(client, receive_)

            nursery.start_soon(writer)

        room.broadcast({"n": 0}, exclude=clients["flooded"])
        await trio.testing.wait_all_tasks_blocked()
        assert clients["healthy"].ws.sent == [{"n": 0}]
        assert clients["fails"].kicked is not None
        assert clients["fails"].kicked.startswith("send failed")
        assert clients["stuck"].kicked is None  # not yet: it has SEND_TIMEOUT seconds

        # "flooded" never finishes a send either: its outbox fills long before a timeout.
        flooded = clients["flooded"]
        accepted = [flooded.send({"n": n}) for n in range(chat_server.OUTBOX_SIZE + 2)]
        # (the writer, waiting in receive(), takes the first one straight from the channel)
        assert accepted[: chat_server.OUTBOX_SIZE] == [True] * chat_server.OUTBOX_SIZE
        assert accepted[-1] is False
        assert flooded.kicked == "too slow: outbox full"

        start = trio.current_time()
        await trio.sleep(chat_server.SEND_TIMEOUT + 1)
        kicked = clients["stuck"].kicked
        assert kicked is not None and kicked.startswith("too slow: a send took")
        room.broadcast({"n": 1})  # the kicked clients' writers are gone: no error, no wait
        assert trio.current_time() == start + chat_server.SEND_TIMEOUT + 1
        await trio.testing.wait_all_tasks_blocked()
        assert clients["healthy"].ws.sent == [{"n": 0}, {"n": 1}]
        assert clients["healthy"].kicked is None
        clients["healthy"].cancel_scope.cancel()


async def open_stalled_client(port: int, name: str) -> tuple[trio.SocketStream, WSConnection]:
    """A raw client with a tiny receive window that joins and then stops reading."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    conn = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(conn.send(wsevents.Request(host="127.0.0.1", target="/ws")))
    events: list[wsevents.Event] = []
    while not events:
        data = await stream.receive_some(65536)
        assert data, "the server closed during the handshake"
        conn.receive_data(data)
        events = list(conn.events())
    assert isinstance(events[0], wsevents.AcceptConnection), events
    join = json.dumps({"type": "join", "username": name})
    await stream.send_all(conn.send(wsevents.TextMessage(join)))
    return stream, conn


async def test_a_burst_reaches_everyone_and_nobody_is_dropped(connect: Connect) -> None:
    """Hundreds of lines in one TCP segment must not overflow the outboxes of fast readers."""
    burst = 5 * chat_server.OUTBOX_SIZE
    async with connect() as alice, connect() as bob:
        await join(alice, "alice")
        await join(bob, "bob")
        assert (await receive(alice))["type"] == "user_joined"
        for n in range(burst):
            await alice.send_json({"type": "message", "message": str(n)})
        for ws in (alice, bob):
            lines = [await receive(ws) for _ in range(burst)]
            assert [line["message"] for line in lines] == [str(n) for n in range(burst)]
            assert {line["type"] for line in lines} == {"message"}


async def test_a_client_that_stops_reading_is_dropped_and_the_room_goes_on(
    port: int, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = 60_000
    monkeypatch.setattr(chat_server, "MAX_MESSAGE_LENGTH", big)  # fill buffers sooner
    with trio.fail_after(30):
        stream, conn = await open_stalled_client(port, "bob")
        async with stream, connect() as alice:
            await join(alice, "alice")
            # Alice talks in lockstep: each line comes back to her before she sends the next.
            # Bob reads nothing, so his socket, his WebSocket's buffer and then his outbox
            # fill up, and the server drops him; Alice never waits on him.
            sent = 0
            while True:
                sent += 1
                assert sent < 2000, "bob was never dropped"
                await alice.send_json(
                    {"type": "message", "message": f"{sent:06}" + "x" * (big - 6)}
                )
                answer = await receive(alice)
                if answer["type"] == "user_left":
                    break
                assert answer["type"] == "message" and answer["message"].startswith(f"{sent:06}")
            assert answer["username"] == "bob" and answer["users"] == ["alice"]
            await alice.send_json({"type": "message", "message": "still here"})
            answer = await receive(alice)
            if answer["message"].startswith(f"{sent:06}"):  # the line bob was dropped on
                answer = await receive(alice)
            assert answer["message"] == "still here"

            # Bob, reading at last, finds the backlog and then a 1008 close.
            close: wsevents.CloseConnection | None = None
            lines = 0
            while close is None:
                data = await stream.receive_some(65536)
                assert data, f"EOF without a close frame after {lines} lines"
                conn.receive_data(data)
                for event in conn.events():
                    if isinstance(event, wsevents.TextMessage) and event.message_finished:
                        lines += 1
                    elif isinstance(event, wsevents.CloseConnection):
                        close = event
            assert close.code == WSCloseCode.POLICY_VIOLATION
            assert 0 < lines < sent


async def test_heartbeat_sets_how_soon_an_idle_client_is_pinged(nursery: trio.Nursery) -> None:
    assert chat_server.build_app()[chat_server.CHAT_HEARTBEAT] == 30  # the default, as before
    site = await nursery.start(web.serve, chat_server.build_app(heartbeat=0.1), "127.0.0.1", 0)
    async with (
        trio_ws.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{site.port}/ws", autoping=False) as ws,
    ):
        with trio.fail_after(TIMEOUT):  # far less than the default 30 s
            msg = await ws.receive()
        assert msg.type == WSMsgType.PING, msg


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_heartbeat_must_be_positive_or_none(value: float) -> None:
    with pytest.raises(ValueError, match="heartbeat must be positive"):
        chat_server.build_app(heartbeat=value)


@pytest.mark.parametrize("argument", ["-1", "nan", "soon"])
def test_heartbeat_option_rejects_what_is_no_duration(
    argument: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        chat_server.main(["--heartbeat", argument])
    assert exit_.value.code == 2
    assert "--heartbeat" in capsys.readouterr().err


async def test_script_prints_its_address_and_shuts_down_gracefully() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-u", str(ROOT / "examples" / "chat_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the server exited before printing its address"
                line += chunk
        match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line.decode())
        assert match is not None, line
        port = int(match[1])
        async with (
            trio_ws.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws,
        ):
            assert (await join(ws, "eve"))["users"] == ["eve"]
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(TIMEOUT):
                msg = await ws.receive()
            assert msg.type == WSMsgType.CLOSE, msg
            assert msg.data == WSCloseCode.GOING_AWAY
        with trio.fail_after(TIMEOUT):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()
