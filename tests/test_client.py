"""The trio_ws client against real servers over sockets: other libraries, TLS, proxies, failures."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
import trio_websocket
import websockets.sync.server
from wsproto.utilities import generate_accept_token

import trio_ws
from trio_ws import WSCloseCode, WSMsgType

pytestmark = pytest.mark.integration


@contextmanager
def websockets_server() -> Iterator[int]:
    """A ``websockets`` (threaded) echo server that chooses subprotocol 'chat' if offered."""

    def handler(conn: websockets.sync.server.ServerConnection) -> None:
        for message in conn:
            if message == "close-4000":
                conn.close(4000, "asked")
                return
            conn.send(message)

    with websockets.sync.server.serve(
        handler, "127.0.0.1", 0, subprotocols=["chat"], compression="deflate"
    ) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(5)


@contextmanager
def aiohttp_server() -> Iterator[int]:
    """An aiohttp echo server in its own thread and event loop."""
    import asyncio

    from aiohttp import web as aioweb

    ready = threading.Event()
    port: list[int] = []
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def handler(request: aioweb.Request) -> aioweb.StreamResponse:
        if (
            request.headers.get("Authorization") != "Basic " + base64.b64encode(b"u:p").decode()
            and request.path == "/private"
        ):
            raise aioweb.HTTPForbidden()
        ws = aioweb.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == 1:
                await ws.send_str(msg.data + "|" + request.query.get("q", ""))
            elif msg.type == 2:
                await ws.send_bytes(msg.data)
        return ws

    def run() -> None:
        async def main() -> None:
            app = aioweb.Application()
            app.router.add_get("/ws", handler)
            app.router.add_get("/private", handler)
            runner = aioweb.AppRunner(app)
            await runner.setup()
            site = aioweb.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port.append(runner.addresses[0][1])
            stopped = asyncio.Event()
            stop.append((asyncio.get_running_loop(), stopped))
            ready.set()
            try:
                await stopped.wait()
            finally:
                await runner.cleanup()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield port[0]
    finally:
        loop, stopped = stop[0]
        loop.call_soon_threadsafe(stopped.set)
        thread.join(10)


async def test_against_websockets_server() -> None:
    with websockets_server() as port:
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(
                f"ws://127.0.0.1:{port}/", protocols=["x", "chat"], compress=15
            ) as ws:
                assert ws.protocol == "chat"
                # compress is the server's window bits: websockets limits its own to 12.
                assert ws.compress == 12
                await ws.send_str("hello ✓")
                assert await ws.receive_str() == "hello ✓"
                await ws.send_bytes(os.urandom(300000))
                assert len(await ws.receive_bytes()) == 300000
                await ws.send_str("close-4000")
                msg = await ws.receive()
                assert msg == trio_ws.WSMessage(WSMsgType.CLOSE, 4000, "asked")
            assert ws.close_code == 4000


async def test_against_aiohttp_server_with_params_and_auth() -> None:
    with aiohttp_server() as port:
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(
                f"ws://127.0.0.1:{port}/ws", params={"q": "v w"}, compress=0
            ) as ws:
                assert not ws.compress
                await ws.send_str("hi")
                assert await ws.receive_str() == "hi|v w"
            with pytest.raises(trio_ws.WSServerHandshakeError) as info:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/private"):
                    pass
            assert info.value.status == 403
            async with session.ws_connect(
                f"ws://127.0.0.1:{port}/private", auth=trio_ws.BasicAuth("u", "p")
            ) as ws:
                await ws.send_bytes(b"ok")
                assert await ws.receive_bytes() == b"ok"
            async with session.ws_connect(f"ws://u:p@127.0.0.1:{port}/private") as ws:
                await ws.send_bytes(b"url auth")
                assert await ws.receive_bytes() == b"url auth"


async def test_against_trio_websocket_server() -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        conn = await request.accept()
        try:
            while True:
                message = await conn.get_message()
                await conn.send_message(message)
        except trio_websocket.ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        port = server.port
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/") as ws:
                assert not ws.compress  # trio-websocket has no permessage-deflate
                for i in range(50):
                    await ws.send_str(str(i))
                got = [await ws.receive_str() for _ in range(50)]
                assert got == [str(i) for i in range(50)]
            assert ws.close_code == WSCloseCode.OK
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def scripted_server(response: bytes | None) -> AsyncIterator[int]:
    """A raw server that answers every request with ``response`` (or never answers).

    ``{accept}`` in the response is replaced by the correct Sec-WebSocket-Accept.
    """

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        if response is None:
            await trio.sleep_forever()
        key = next(
            line.split(b":", 1)[1].strip()
            for line in data.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        await stream.send_all(response.replace(b"{accept}", generate_accept_token(key)))
        await stream.receive_some(4096)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handle, 0)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


GOOD_HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", "Invalid response status"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            "Invalid upgrade header",
        ),
        (GOOD_HEAD + b"Sec-WebSocket-Accept: wrong=\r\n\r\n", "Invalid challenge response"),
        (
            GOOD_HEAD + b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: evil\r\n\r\n",
            "not offered",
        ),
        (
            GOOD_HEAD
            + b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: x-zip\r\n\r\n",
            "Invalid extension",
        ),
    ],
)
async def test_handshake_failures(response: bytes, message: str) -> None:
    async with scripted_server(response) as port, trio_ws.ClientSession() as session:
        with pytest.raises(trio_ws.WSServerHandshakeError, match=message) as info:
            async with session.ws_connect(
                f"ws://127.0.0.1:{port}/", protocols=["chat"], compress=15
            ):
                pass
        assert isinstance(info.value, trio_ws.ClientResponseError)
        if b"403" in response:
            assert info.value.status == 403
            assert info.value.body == b"no"


async def test_handshake_timeout() -> None:
    async with scripted_server(None) as port, trio_ws.ClientSession() as session:
        start = trio.current_time()
        with pytest.raises(trio_ws.WSHandshakeTimeout) as info:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/", timeout=0.5):
                pass
        assert trio.current_time() - start < 3
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, trio.TooSlowError)
        assert isinstance(info.value, trio_ws.ServerTimeoutError)


async def test_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with trio_ws.ClientSession() as session:
        with pytest.raises(trio_ws.ClientConnectorError) as info:
            async with session.ws_connect(f"ws://127.0.0.1:{port}/"):
                pass
        assert not isinstance(info.value, trio_ws.ClientConnectorDNSError)


async def test_dns_failure() -> None:
    async with trio_ws.ClientSession() as session:
        with trio.fail_after(20), pytest.raises(trio_ws.ClientConnectorDNSError):
            async with session.ws_connect("ws://no-such-host.invalid/", timeout=15):
                pass


@pytest.mark.parametrize("url", ["http:/x", "ftp://host/", "ws://", "ws://host:99999/"])
async def test_invalid_urls(url: str) -> None:
    async with trio_ws.ClientSession() as session:
        with pytest.raises(trio_ws.InvalidURL):
            async with session.ws_connect(url):
                pass


async def test_ipv6_literal() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        listeners = await trio.open_tcp_listeners(0, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    for listener in listeners:
        await listener.aclose()
    from trio_ws import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(request.host)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with trio.open_nursery() as nursery:
        site = await nursery.start(web.serve, app, "::1", 0)
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://[::1]:{site.port}/") as ws:
                assert await ws.receive_str() == f"[::1]:{site.port}"
        nursery.cancel_scope.cancel()


@contextmanager
def tinyproxy(auth: tuple[str, str] | None = None) -> Iterator[int]:
    binary = shutil.which("tinyproxy") or "/usr/sbin/tinyproxy"
    if not Path(binary).exists():
        pytest.fail("tinyproxy is missing: run scripts/install_system_deps.sh")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "tinyproxy.conf"
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            "Timeout 30",
            "MaxClients 20",
            f'PidFile "{tmp}/tinyproxy.pid"',
            "LogLevel Error",
        ]
        if auth:
            lines.append(f"BasicAuth {auth[0]} {auth[1]}")
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        pytest.fail("tinyproxy exited at start")
                    import time

                    time.sleep(0.05)
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_through_http_proxy_ws_and_wss() -> None:
    import ssl

    import trustme

    from trio_ws import web

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("via proxy: " + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    with tinyproxy(auth=("pu", "pp")) as proxy_port:
        async with trio.open_nursery() as nursery:
            plain = await nursery.start(web.serve, app, "127.0.0.1", 0)
            secure = await nursery.start(
                lambda task_status: web.serve(
                    app, "127.0.0.1", 0, ssl_context=server_ctx, task_status=task_status
                )
            )
            proxy = f"http://127.0.0.1:{proxy_port}"
            auth = trio_ws.BasicAuth("pu", "pp")
            async with trio_ws.ClientSession() as session:
                async with session.ws_connect(
                    f"ws://127.0.0.1:{plain.port}/", proxy=proxy, proxy_auth=auth
                ) as ws:
                    await ws.send_str("a")
                    assert await ws.receive_str() == "via proxy: a"
                async with session.ws_connect(
                    f"wss://127.0.0.1:{secure.port}/", proxy=proxy, proxy_auth=auth, ssl=client_ctx
                ) as ws:
                    await ws.send_str("b")
                    assert await ws.receive_str() == "via proxy: b"
                with pytest.raises(trio_ws.ClientHttpProxyError) as info:
                    async with session.ws_connect(f"ws://127.0.0.1:{plain.port}/", proxy=proxy):
                        pass
                assert info.value.status in (401, 407)
            nursery.cancel_scope.cancel()


async def test_await_ws_connect_needs_entered_session() -> None:
    session = trio_ws.ClientSession()
    with pytest.raises(RuntimeError, match="async with"):
        await session.ws_connect("ws://127.0.0.1:1/")
    await session.close()
    assert session.closed


async def test_cancelled_block_sends_going_away() -> None:
    from trio_ws import web

    seen: list[int] = []
    done = trio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        seen.append(ws.close_code or 0)
        done.set()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with trio.open_nursery() as nursery:
        site = await nursery.start(web.serve, app, "127.0.0.1", 0)
        async with trio_ws.ClientSession() as session:
            with trio.move_on_after(0.2):
                async with session.ws_connect(f"ws://127.0.0.1:{site.port}/") as ws:
                    await ws.receive()
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert seen == [WSCloseCode.GOING_AWAY]


# ------------------------------------------------------------ session teardown


@asynccontextmanager
async def unanswering_server() -> AsyncIterator[tuple[int, list[bytearray]]]:
    """Completes every upgrade, then reads and records everything and never answers.

    It sends no close frame and never closes first: each client's ``close()``
    waits its whole ``timeout``. Yields the port and, per connection, the
    bytes the client sent after its request.
    """
    received: list[bytearray] = []

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        request, _, rest = data.partition(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        mine = bytearray(rest)
        received.append(mine)
        await stream.send_all(
            GOOD_HEAD + b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
        )
        try:
            while chunk := await stream.receive_some(4096):
                mine += chunk
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handle, 0)
        yield listeners[0].socket.getsockname()[1], received
        nursery.cancel_scope.cancel()


def close_codes(sent: bytes) -> list[int | None]:
    """The codes of the close frames in what a client sent."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import CloseConnection

    conn = Connection(ConnectionType.SERVER)
    conn.receive_data(sent)
    return [e.code for e in conn.events() if isinstance(e, CloseConnection)]


def tasks_outside(skip: trio.Nursery) -> set[trio.lowlevel.Task]:
    """Every task of this trio run, except those under the ``skip`` nursery (a server's)."""
    found: set[trio.lowlevel.Task] = set()

    def walk(task: trio.lowlevel.Task) -> None:
        found.add(task)
        for nursery in task.child_nurseries:
            if nursery is not skip:
                for child in nursery.child_tasks:
                    walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


@pytest.mark.parametrize("how", ["session exit", "session.close()"])
async def test_session_closes_its_websockets_concurrently(how: str) -> None:
    timeout = 0.5
    with trio.fail_after(10):
        async with unanswering_server() as (port, received):
            async with trio_ws.ClientSession() as session:
                owned = [
                    await session.ws_connect(f"ws://127.0.0.1:{port}/", timeout=timeout)
                    for _ in range(4)
                ]
                start = trio.current_time()
                if how == "session.close()":
                    await session.close()
                    elapsed = trio.current_time() - start
                    assert session.closed
            if how == "session exit":
                elapsed = trio.current_time() - start
    # One after another, four unanswered closes take 4 x 0.5 = 2 s.
    assert timeout <= elapsed < 2 * timeout
    for ws in owned:
        assert ws.closed
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), trio_ws.WSTimeoutError)
    assert [close_codes(bytes(sent)) for sent in received] == [[1000]] * 4


async def test_session_forgets_websockets_that_ended() -> None:
    from trio_ws import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.data == "bye":
                await ws.close(code=4000)
            else:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    cycles = 30
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            site = await nursery.start(web.serve, app, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{site.port}/"
            before = tasks_outside(nursery)
            async with trio_ws.ClientSession() as session:
                for i in range(cycles):
                    ws = await session.ws_connect(url)
                    await ws.send_str(str(i))
                    assert await ws.receive_str() == str(i)
                    if i % 2:
                        await ws.close()  # the client ends it
                    else:
                        await ws.send_str("bye")  # the server ends it
                        assert (await ws.receive()).data == 4000
                    assert ws.closed
                await trio.testing.wait_all_tasks_blocked()
                assert len(session._owned) == 0
                kept = [await session.ws_connect(url) for _ in range(3)]
                assert list(session._owned) == kept
                await kept[1].close()
                await trio.testing.wait_all_tasks_blocked()
                assert list(session._owned) == [kept[0], kept[2]]
            # Structured: nothing the session started outlives its block.
            assert all(ws.closed for ws in kept)
            assert tasks_outside(nursery) == before
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("body", "code"),
    [("raises", WSCloseCode.INTERNAL_ERROR), ("cancelled", WSCloseCode.GOING_AWAY)],
)
async def test_session_exit_after_error_or_cancel(body: str, code: int) -> None:
    """The owned WebSockets are closed concurrently; the body's exception comes out unwrapped."""
    timeout = 0.5

    async def session_block(port: int) -> None:
        async with trio_ws.ClientSession() as session:
            for _ in range(3):
                await session.ws_connect(f"ws://127.0.0.1:{port}/", timeout=timeout)
            if body == "raises":
                raise ValueError("boom")
            await trio.sleep_forever()

    with trio.fail_after(10):
        async with unanswering_server() as (port, received):
            start = trio.current_time()
            if body == "raises":
                with pytest.raises(ValueError, match="boom"):
                    await session_block(port)
            else:
                with trio.move_on_after(0.2) as scope:
                    await session_block(port)
                assert scope.cancelled_caught
            elapsed = trio.current_time() - start
            await trio.testing.wait_all_tasks_blocked()
    assert [close_codes(bytes(sent)) for sent in received] == [[code]] * 3
    # 1011 waits for the server's answer: one timeout for all three, not three.
    assert elapsed < 0.2 + 2 * timeout
