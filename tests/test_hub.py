"""trio_ws.hub: fan-out, slow subscribers, the Redis backend, and the chat example on it.

The first tests drive a :class:`Hub` with recording fake WebSockets (no sockets, so every
interleaving is chosen by the test). Then real trio_ws servers and clients. The Redis tests
start their own ``redis-server`` on a free port (``--save '' --appendonly no``) and are
skipped only when no ``redis-server`` program can be found
(``scripts/install_system_deps.sh`` installs it).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_ws
from trio_ws import WSCloseCode, WSMsgType, web
from trio_ws.hub import Hub, RedisBackend, open_hub
from trio_ws.hub import run_app as hub_run_app

from .test_workers import server_process

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0  # seconds for any one exchange


class FakeWS:
    """Records what the hub sends; ``gate`` (when set) holds every send until it opens."""

    def __init__(self, *, gate: trio.Event | None = None, fail: bool = False) -> None:
        self.received: list[str | bytes] = []
        self.kinds: list[str] = []
        self.gate = gate
        self.fail = fail
        self.closed = False
        self.close_code: int | None = None
        self.arrived = trio.Event()

    async def _send(self, data: str | bytes, kind: str) -> None:
        if self.fail:
            raise ConnectionResetError("Cannot write to closing transport")
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        self.received.append(data)
        self.kinds.append(kind)
        self.arrived.set()
        self.arrived = trio.Event()

    async def send_str(self, data: str) -> None:
        await self._send(data, "text")

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data, "binary")

    async def close(self, *, code: int, message: bytes) -> bool:
        await trio.lowlevel.checkpoint()
        self.closed = True
        self.close_code = code
        return True

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(TIMEOUT):
            while len(self.received) < count:
                await self.arrived.wait()


# ---------------------------------------------------------------- in-process hub


async def test_publish_encodes_str_bytes_and_json() -> None:
    async with open_hub() as hub:
        ws = FakeWS()
        hub.subscribe(ws, "t")
        assert await hub.publish("t", "text") == 1
        await hub.publish("t", b"\x00bin")
        await hub.publish("t", bytearray(b"ba"))
        await hub.publish("t", {"n": [1, 2]})
        await hub.publish("other", "not for ws")
        await ws.wait_for(4)
        await trio.testing.wait_all_tasks_blocked()
    assert ws.received == ["text", b"\x00bin", b"ba", '{"n": [1, 2]}']
    assert ws.kinds == ["text", "binary", "binary", "text"]


async def test_every_subscriber_gets_every_message_in_order() -> None:
    async with open_hub(queue_size=8) as hub:
        subscribers = [FakeWS() for _ in range(5)]
        for ws in subscribers:
            hub.subscribe(ws, "room")
        for i in range(50):  # more than queue_size: publish() lets the drain tasks run
            assert await hub.publish("room", str(i)) == 5
        for ws in subscribers:
            await ws.wait_for(50)
            assert ws.received == [str(i) for i in range(50)]
        stats = hub.statistics()
    assert (stats.published, stats.queued, stats.sent, stats.dropped) == (50, 250, 250, 0)


async def test_subscribe_and_unsubscribe() -> None:
    async with open_hub() as hub:
        a, b = FakeWS(), FakeWS()
        hub.subscribe(a, "x")
        hub.subscribe(a, "x")  # twice: still one subscription
        hub.subscribe(a, "y")
        hub.subscribe(b, "x")
        assert hub.topics() == {"x", "y"}
        assert hub.topics(a) == {"x", "y"}
        assert hub.subscribers("x") == 2
        assert await hub.publish("x", "1") == 2

        hub.unsubscribe(a, "x")
        assert hub.topics(a) == {"y"}
        assert await hub.publish("x", "2") == 1
        assert await hub.publish("y", "3") == 1

        hub.unsubscribe(a)
        hub.unsubscribe(a)  # unknown now: ignored
        hub.unsubscribe(FakeWS(), "x")
        assert hub.topics(a) == set()
        assert await hub.publish("y", "4") == 0
        assert hub.topics() == {"x"}
        await b.wait_for(2)
        await trio.testing.wait_all_tasks_blocked()
        assert hub.statistics().subscribers == 1
    assert a.received == ["1", "3"]
    assert b.received == ["1", "2"]


async def test_subscribed_context_manager() -> None:
    async with open_hub() as hub:
        ws = FakeWS()
        with hub.subscribed(ws, "a", "b"):
            assert hub.topics(ws) == {"a", "b"}
            await hub.publish("b", "in")
        assert hub.topics(ws) == set()
        await hub.publish("b", "out")
        await ws.wait_for(1)
        await trio.testing.wait_all_tasks_blocked()
    assert ws.received == ["in"]


async def test_messages_queued_before_unsubscribe_are_still_sent() -> None:
    gate = trio.Event()
    async with open_hub() as hub:
        ws = FakeWS(gate=gate)
        hub.subscribe(ws, "t")
        for i in range(3):
            await hub.publish("t", str(i))
        hub.unsubscribe(ws)
        await hub.publish("t", "late")
        gate.set()
        await ws.wait_for(3)
        await trio.testing.wait_all_tasks_blocked()
    assert ws.received == ["0", "1", "2"]


async def test_a_slow_subscriber_does_not_stall_the_others() -> None:
    gate = trio.Event()
    async with open_hub(queue_size=4, overflow="drop") as hub:
        slow, fast = FakeWS(gate=gate), FakeWS()
        hub.subscribe(slow, "t")
        hub.subscribe(fast, "t")
        with trio.fail_after(TIMEOUT):
            for i in range(100):
                await hub.publish("t", str(i))
        await fast.wait_for(100)
        assert fast.received == [str(i) for i in range(100)]
        assert slow.received == []


async def test_overflow_close_disconnects_with_1013() -> None:
    gate = trio.Event()
    async with open_hub(queue_size=4) as hub:
        slow, fast = FakeWS(gate=gate), FakeWS()
        hub.subscribe(slow, "t")
        hub.subscribe(slow, "u")
        hub.subscribe(fast, "t")
        await hub.publish("t", "0")
        await trio.testing.wait_all_tasks_blocked()  # slow's drain task now holds "0"
        for i in range(1, 5):
            assert await hub.publish("t", str(i)) == 2  # fills slow's queue: 4 waiting
        assert await hub.publish("t", "5") == 1  # overflow: slow is dropped at once
        assert hub.topics(slow) == set()
        assert hub.subscribers("u") == 0
        await trio.testing.wait_all_tasks_blocked()
        assert slow.closed and slow.close_code == WSCloseCode.TRY_AGAIN_LATER
        assert slow.received == []  # its send was cancelled; its queue discarded
        await hub.publish("t", "6")
        await fast.wait_for(7)
        stats = hub.statistics()
    assert fast.received == [str(i) for i in range(7)]
    assert (stats.closed_slow, stats.dropped, stats.subscribers) == (1, 0, 1)


async def test_overflow_drop_skips_messages_and_keeps_the_subscriber() -> None:
    gate = trio.Event()
    async with open_hub(queue_size=4, overflow="drop") as hub:
        slow = FakeWS(gate=gate)
        hub.subscribe(slow, "t")
        await hub.publish("t", "0")
        await trio.testing.wait_all_tasks_blocked()  # "0" is being sent
        counts = [await hub.publish("t", str(i)) for i in range(1, 10)]
        assert counts == [1, 1, 1, 1, 0, 0, 0, 0, 0]  # 1..4 queued, 5..9 dropped
        gate.set()
        await slow.wait_for(5)
        await hub.publish("t", "10")
        await slow.wait_for(6)
        stats = hub.statistics()
    assert slow.received == ["0", "1", "2", "3", "4", "10"]
    assert not slow.closed
    assert (stats.dropped, stats.closed_slow) == (5, 0)


async def test_a_subscriber_whose_send_fails_is_forgotten() -> None:
    async with open_hub() as hub:
        broken, ok = FakeWS(fail=True), FakeWS()
        hub.subscribe(broken, "t")
        hub.subscribe(ok, "t")
        await hub.publish("t", "x")
        await trio.testing.wait_all_tasks_blocked()
        assert hub.subscribers("t") == 1
        assert hub.topics(broken) == set()
        await hub.publish("t", "y")
        await ok.wait_for(2)


async def test_leaving_the_hub_cancels_blocked_sends() -> None:
    never = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with open_hub() as hub:
            ws = FakeWS(gate=never)
            hub.subscribe(ws, "t")
            await hub.publish("t", "stuck")
            await trio.testing.wait_all_tasks_blocked()
    assert ws.received == []
    assert not hub.running
    with pytest.raises(RuntimeError, match="not running"):
        hub.subscribe(FakeWS(), "t")
    with pytest.raises(RuntimeError, match="not running"):
        await hub.publish("t", "x")


async def test_an_exception_in_the_block_comes_out_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with open_hub() as hub:
            hub.subscribe(FakeWS(gate=trio.Event()), "t")
            await hub.publish("t", "queued")
            raise KeyError("mine")


async def test_hub_misuse() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Hub(queue_size=0)
    with pytest.raises(ValueError, match="overflow"):
        Hub(overflow="block")  # type: ignore[arg-type]
    hub = Hub()
    with pytest.raises(RuntimeError, match="not running"):
        hub.subscribe(FakeWS(), "t")
    async with hub:
        await hub.wait_ready()  # no backend: ready at once
        with pytest.raises(TypeError):
            await hub.publish("t", object())
    with pytest.raises(RuntimeError, match="only once"):
        async with hub:
            pass


# ------------------------------------------------------- real WebSockets, one process


class HubApp:
    """``/ws`` subscribes to ``topic`` (the query string, default ``t``) and publishes the
    text it receives there; ``subscribed()`` waits until ``n`` handlers have subscribed."""

    def __init__(self, hub: Hub, **ws_options: Any) -> None:
        self.hub = hub
        self.ws_options = ws_options
        self.app = web.Application()
        self.app.router.add_get("/ws", self.handler)
        self._send, self._receive = trio.open_memory_channel[str](100)

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(**self.ws_options)
        await ws.prepare(request)
        topic = request.query_string or "t"
        with self.hub.subscribed(ws, topic):
            self._send.send_nowait(topic)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.hub.publish(topic, msg.data)
        return ws

    async def subscribed(self, n: int) -> None:
        with trio.fail_after(TIMEOUT):
            for _ in range(n):
                await self._receive.receive()


async def test_websockets_publish_to_each_other(nursery: trio.Nursery) -> None:
    async with open_hub() as hub:
        served = HubApp(hub)
        site = await nursery.start(web.serve, served.app, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{site.port}/ws"
        async with (
            trio_ws.ClientSession() as session,
            session.ws_connect(url) as a,
            session.ws_connect(url) as b,
            session.ws_connect(url + "?elsewhere") as c,
        ):
            await served.subscribed(3)  # the handlers subscribe after the handshake
            with trio.fail_after(TIMEOUT):
                await a.send_str("hello")
                assert (await a.receive()).data == "hello"
                assert (await b.receive()).data == "hello"
                await hub.publish("t", {"from": "server"})
                await hub.publish("elsewhere", b"bin")
                assert json.loads((await b.receive()).data) == {"from": "server"}
                msg = await c.receive()
                assert (msg.type, msg.data) == (WSMsgType.BINARY, b"bin")
        nursery.cancel_scope.cancel()


async def test_a_real_client_that_stops_reading_gets_1013(nursery: trio.Nursery) -> None:
    async with open_hub(queue_size=8) as hub:
        served = HubApp(hub, write_limit=1024)
        site = await nursery.start(web.serve, served.app, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{site.port}/ws"
        payload = "x" * 65536
        async with (
            trio_ws.ClientSession() as session,
            session.ws_connect(url, max_queue=1) as slow,
            session.ws_connect(url) as fast,
        ):
            await served.subscribed(2)
            # Publish in lockstep with the fast reader until the slow one (not reading, so
            # its socket buffers fill) overflows: bounded by the count.
            with trio.fail_after(30):
                for sent in range(1, 2001):  # noqa: B007 (used after the loop)
                    await hub.publish("t", payload)
                    assert (await fast.receive()).data == payload
                    if hub.statistics().closed_slow:
                        break
            assert hub.statistics().closed_slow == 1
            assert hub.subscribers("t") == 1
            # The slow client now reads: what was buffered, then the server's 1013.
            with trio.fail_after(TIMEOUT):
                for _ in range(sent + 1):
                    msg = await slow.receive()
                    if msg.type != WSMsgType.TEXT:
                        break
            assert msg.type == WSMsgType.CLOSE, msg
            assert msg.data == WSCloseCode.TRY_AGAIN_LATER
            # The fast one is still served.
            await hub.publish("t", "after")
            with trio.fail_after(TIMEOUT):
                assert (await fast.receive()).data == "after"
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------- Redis


def find_redis_server() -> str | None:
    for candidate in (
        shutil.which("redis-server"),
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


REDIS_SERVER = find_redis_server()
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server not found (scripts/install_system_deps.sh installs it)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throw-away redis-server on 127.0.0.1, with no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                "",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        lines = []
        for line in self.process.stdout:  # ends at EOF if it dies: bounded
            lines.append(line)
            if "Ready to accept connections" in line:
                return
        self.process.wait(TIMEOUT)
        raise AssertionError("redis-server did not start:\n" + "".join(lines))

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def backend(redis: RedisServer) -> RedisBackend:
    return RedisBackend(redis.url, reconnect_initial=0.05, reconnect_max=0.5)


async def ready(*hubs: Hub) -> None:
    with trio.fail_after(TIMEOUT):
        for hub in hubs:
            await hub.wait_ready()


@needs_redis
async def test_redis_carries_messages_between_hubs(redis: RedisServer) -> None:
    async with open_hub(backend(redis)) as one, open_hub(backend(redis)) as two:
        await ready(one, two)
        a, b = FakeWS(), FakeWS()
        one.subscribe(a, "room")
        two.subscribe(b, "room")
        two.subscribe(b, "other")
        assert await one.publish("room", "from one") == 1  # local delivery, counted
        await two.publish("other", {"only": "two"})
        await two.publish("room", b"from two")  # after "other", on the same connection
        await a.wait_for(2)
        await b.wait_for(3)
        assert a.received == ["from one", b"from two"]  # its own message once, not twice
        assert a.kinds == ["text", "binary"]
        # Each publisher's messages arrive in order; two's own come first (delivered locally).
        assert b.received[:2] == ['{"only": "two"}', b"from two"]
        assert b.received[2] == "from one"
        # "other" reached hub one too (one pattern subscription covers every topic),
        # before "from two": it was counted and dropped there, as nobody listens.
        assert one.statistics().received == 2
        assert one.statistics().backend["remote_published"] == 1


@needs_redis
async def test_redis_delivery_keeps_order_and_respects_queue_size(redis: RedisServer) -> None:
    eager = RedisBackend(redis.url, coalesce=0)
    async with open_hub(backend(redis), queue_size=4) as one, open_hub(eager, queue_size=4) as two:
        await ready(one, two)
        b = FakeWS()
        two.subscribe(b, "t")
        for i in range(100):  # more than queue_size: the deliverer yields when queues fill
            await one.publish("t", i)
        await b.wait_for(100)
        assert b.received == [str(i) for i in range(100)]
        # The other way round: one gathers a batch of up to 100, bigger than its queues.
        a = FakeWS()
        one.subscribe(a, "t")
        for i in range(100):
            await two.publish("t", i)
        await a.wait_for(100)
        assert a.received == [str(i) for i in range(100)]
        assert one.statistics().closed_slow == two.statistics().closed_slow == 0


@needs_redis
async def test_channel_prefixes_separate_applications(redis: RedisServer) -> None:
    other = RedisBackend(redis.url, channel_prefix="other-app:")
    async with open_hub(backend(redis)) as one, open_hub(other) as two:
        await ready(one, two)
        a, b = FakeWS(), FakeWS()
        one.subscribe(a, "room")
        two.subscribe(b, "room")
        await two.publish("room", "two only")
        await one.publish("room", "one only")
        await a.wait_for(1)
        await b.wait_for(1)
        await trio.testing.wait_all_tasks_blocked()
    assert a.received == ["one only"]
    assert b.received == ["two only"]


@pytest.fixture
def coredis_leaks() -> Iterator[None]:
    """For tests with Redis down: coredis leaves anyio memory streams unclosed when a
    connection attempt fails, and their ResourceWarnings surface as unraisable-exception
    warnings. The test ignores those (filterwarnings mark); collecting here makes them
    surface within that test rather than in a later one."""
    yield
    gc.collect()


@needs_redis
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_hubs_reconnect_after_a_redis_restart(
    redis: RedisServer, coredis_leaks: None
) -> None:
    async with open_hub(backend(redis)) as one, open_hub(backend(redis)) as two:
        await ready(one, two)
        a, b = FakeWS(), FakeWS()
        one.subscribe(a, "room")
        two.subscribe(b, "room")
        await one.publish("room", "before")
        await b.wait_for(1)

        redis.stop()
        with trio.fail_after(TIMEOUT):
            # No event tells when a backend notices the outage: poll its counters.
            while one.statistics().backend["connected"]:  # noqa: ASYNC110
                await trio.sleep(0.01)
        # During the outage: local subscribers only, and the loss is counted.
        await one.publish("room", "during")
        await a.wait_for(2)
        with trio.fail_after(TIMEOUT):  # the publisher notices when it tries to send
            while not one.statistics().backend["remote_dropped"]:  # noqa: ASYNC110
                await trio.sleep(0.01)

        redis.start()  # same port
        await ready(one, two)
        await one.publish("room", "after")
        await two.publish("room", "reply")
        await a.wait_for(4)
        await b.wait_for(3)
        assert a.received == ["before", "during", "after", "reply"]
        # "during" is lost for two; its own "reply" was delivered locally, maybe before "after".
        assert b.received[0] == "before"
        assert sorted(b.received[1:]) == ["after", "reply"]
        for hub in (one, two):
            stats = hub.statistics().backend
            assert stats["reconnects"] >= 1 and stats["connected"], stats


@needs_redis
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_hub_starts_while_redis_is_down_and_connects_later(coredis_leaks: None) -> None:
    down = RedisServer()  # not started yet
    slow_start = RedisBackend(
        down.url, reconnect_initial=0.05, reconnect_max=0.5, startup_timeout=0.2
    )
    async with open_hub(slow_start) as hub:
        assert not hub.statistics().backend["connected"]
        ws = FakeWS()
        hub.subscribe(ws, "t")
        await hub.publish("t", "local only")
        await ws.wait_for(1)
        down.start()
        try:
            await ready(hub)
        finally:
            down.stop()


async def chat_client(
    stack: AsyncExitStack, session: trio_ws.ClientSession, port: int, name: str
) -> tuple[trio_ws.ClientWebSocketResponse, str]:
    """Join the chat on ``port`` as ``name``; return the WebSocket and the server it reached."""
    ws = await stack.enter_async_context(session.ws_connect(f"ws://127.0.0.1:{port}/ws"))
    await ws.send_json({"type": "join", "username": name})
    welcome = await receive_json(ws)
    assert welcome["type"] == "system" and welcome["username"] == name, welcome
    return ws, str(welcome["server"])


async def receive_json(ws: trio_ws.ClientWebSocketResponse) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        msg = await ws.receive()
    assert msg.type == WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def http_get(port: int, path: str) -> bytes:
    """The raw response to ``GET path`` on a fresh connection."""
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


async def next_chat_message(ws: trio_ws.ClientWebSocketResponse) -> dict[str, Any]:
    """The next ``message``, skipping join/leave notices (which may still be in flight from
    other processes for earlier connections: pub/sub has no common order across processes)."""
    for _ in range(100):
        data = await receive_json(ws)
        if data["type"] not in ("user_joined", "user_left"):
            return data
    raise AssertionError("only join/leave notices")


async def check_conversation(
    alice: trio_ws.ClientWebSocketResponse, bob: trio_ws.ClientWebSocketResponse
) -> None:
    """alice joined first, then bob: each sees the other's messages."""
    joined = await receive_json(alice)
    assert (joined["type"], joined["username"]) == ("user_joined", "bob")
    await alice.send_json({"type": "message", "message": "hi bob"})
    expected = {"type": "message", "username": "alice", "message": "hi bob"}
    for ws in (alice, bob):
        assert await next_chat_message(ws) == expected
    await bob.send_json({"type": "message", "message": "hi alice"})
    for ws in (alice, bob):
        assert (await next_chat_message(ws))["message"] == "hi alice"


@needs_redis
async def test_chat_between_two_server_processes(redis: RedisServer) -> None:
    args = ["examples/chat_hub.py", "--port", "0", "--redis", redis.url]
    async with server_process(args) as one, server_process(args) as two:
        page = await http_get(one.port, "/")
        assert page.startswith(b"HTTP/1.1 200") and b"<title>trio_ws chat</title>" in page
        async with trio_ws.ClientSession() as session, AsyncExitStack() as stack:
            alice, server_a = await chat_client(stack, session, one.port, "alice")
            bob, server_b = await chat_client(stack, session, two.port, "bob")
            assert server_a != server_b
            await check_conversation(alice, bob)
            await one.stop()
            with trio.fail_after(TIMEOUT):
                msg = await alice.receive()
            assert (msg.type, msg.data) == (WSMsgType.CLOSE, WSCloseCode.GOING_AWAY)
            left = await receive_json(bob)  # published by the server that stopped
            assert (left["type"], left["username"]) == ("user_left", "alice")
    assert one.process.returncode == 0 and two.process.returncode == 0


@needs_redis
async def test_chat_between_two_workers(redis: RedisServer) -> None:
    args = ["examples/chat_hub.py", "--port", "0", "--workers", "2", "--redis", redis.url]
    async with server_process(args) as server:
        async with trio_ws.ClientSession() as session, AsyncExitStack() as stack:
            alice, server_a = await chat_client(stack, session, server.port, "alice")
            for attempt in range(40):  # noqa: B007 (until one lands on the other worker)
                bob, server_b = await chat_client(stack, session, server.port, "bob")
                if server_b != server_a:
                    break
                await bob.close()
            assert server_b != server_a, "every connection went to one worker"
            # alice hears about each "bob" who joined on her worker first, then left.
            for _ in range(attempt * 2):
                assert (await receive_json(alice))["username"] == "bob"
            await check_conversation(alice, bob)
    assert server.process.returncode == 0, server.output()


def test_workers_need_redis_in_the_example() -> None:
    result = subprocess.run(
        [sys.executable, "examples/chat_hub.py", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers needs --redis" in result.stderr


@needs_redis
@pytest.mark.slow
def test_scaleout_benchmark_runs(redis: RedisServer) -> None:
    """benchmarks/scaleout.py end to end with tiny counts: every configuration reports a
    positive figure and drops nothing. Not a timing assertion."""
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/scaleout.py",
            "--subscribers",
            "10",
            "--burst",
            "50",
            "--messages",
            "200",
            "--max-time",
            "2",
            "--redis",
            redis.url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")]
    figures = {row[1].strip(): row for row in rows[1:]}
    assert set(figures) == {"single", "single-redis", "workers2", "procs2"}, result.stdout
    for row in figures.values():
        assert float(row[2].replace(",", "")) > 0, row
        assert row[5].strip() == "0 0", row  # nothing dropped in the hub or on the way to Redis


def test_hub_run_app_raises_a_bind_error_unwrapped() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        hub = Hub()
        with pytest.raises(OSError) as info:
            hub_run_app(
                web.Application(), hub, host="127.0.0.1", port=taken.getsockname()[1], print=None
            )
    assert info.value.errno == errno.EADDRINUSE
    assert not hub.running  # started around the server, stopped again


async def test_hub_run_app_refuses_a_running_hub() -> None:
    async with open_hub() as hub:
        with pytest.raises(RuntimeError, match="not running"):
            hub_run_app(web.Application(), hub, port=0, print=None)
