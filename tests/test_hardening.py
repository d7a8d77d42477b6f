"""Hostile peers over real sockets on 127.0.0.1: every documented limit, and its outcome.

Each limit is checked at its default and at a chosen value, against the outcome
``docs/limits.md`` promises. Clients are raw ``trio.open_tcp_stream`` sockets
that send exactly the bytes a case needs (hand-built frames), or trio_ws's own
client. The server side is inspected in-process (``ws._out_size``,
``ws._inbox``) where only the server knows the figure. Measured figures are
printed with a ``[measure]`` prefix (``pytest -s`` shows them).

The helpers at the top (raw frames, raw handshakes, an echo endpoint that
records its connections) are shared with ``test_capacity.py``.
"""

from __future__ import annotations

import base64
import fcntl
import gc
import math
import os
import socket
import struct
import termios
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psutil
import pytest
import trio
import trio.testing
from wsproto.utilities import generate_accept_token

import trio_ws
from trio_ws import (
    ClientConnectionResetError,
    ServerTimeoutError,
    WebSocketError,
    WSCloseCode,
    WSMessage,
    WSMsgType,
    WSTimeoutError,
    web,
)

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
MiB = 1024 * 1024

# ---------------------------------------------------------------- raw frames

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def mask_bytes(key: bytes, payload: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame as a client sends it (masked), or as told; ``length`` overrides the header."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(key, payload)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def deflate_payload(data: bytes) -> bytes:
    """permessage-deflate body of one message (RFC 7692: the sync flush tail removed)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# ------------------------------------------------------------- raw HTTP / WS


def upgrade_request(
    path: str = "/ws",
    *,
    method: str = "GET",
    drop: tuple[str, ...] = (),
    extra: list[tuple[str, str]] | None = None,
    key: str | None = None,
) -> bytes:
    headers = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key if key is not None else base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k not in drop]
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_head(stream: trio.abc.Stream, buf: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Read one response head: ``(status, {lower-case name: value}, bytes after the head)``."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(f"EOF before a complete response head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


async def read_response(stream: trio.abc.Stream) -> tuple[int, dict[str, str], bytes]:
    """One complete response: status, headers and its Content-Length body."""
    status, headers, body = await read_head(stream)
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        data = await stream.receive_some(65536)
        if not data:
            break
        body += data
    return status, headers, body


async def read_to_eof(stream: trio.abc.Stream) -> bytes:
    """Everything until EOF; a reset counts as EOF."""
    chunks = []
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


async def http_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` on a fresh connection; return the first response."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(5):
            status, headers, body = await read_response(stream)
        return status, headers, body


async def get_ok(port: int, path: str = "/") -> float:
    """A plain GET on a fresh connection must succeed; returns its latency."""
    start = trio.current_time()
    status, _, body = await http_exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert (status, body) == (200, b"hi")
    return trio.current_time() - start


def reset_socket(stream: trio.SocketStream) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER 0)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# Closed by running() on exit, so that a failed test's socket does not surface
# later as a ResourceWarning in another test.
_raw_sockets: list[RawWS] = []


class RawWS:
    """A WebSocket client that is only a socket: sends raw bytes, parses unmasked frames."""

    def __init__(self, stream: trio.SocketStream, buf: bytes = b"") -> None:
        self.stream = stream
        self.buf = bytearray(buf)
        self.eof = False
        _raw_sockets.append(self)

    @classmethod
    async def connect(
        cls, port: int, path: str = "/ws", *, extra: list[tuple[str, str]] | None = None
    ) -> tuple[RawWS, dict[str, str]]:
        stream = await trio.open_tcp_stream(HOST, port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(upgrade_request(path, extra=extra, key=key))
        with trio.fail_after(5):
            status, headers, rest = await read_head(stream)
        assert status == 101, (status, headers)
        assert headers["sec-websocket-accept"] == generate_accept_token(key.encode()).decode()
        return cls(stream, rest), headers

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self, need: int) -> bool:
        while len(self.buf) < need:
            if self.eof:
                return False
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.eof = True
                return False
            self.buf += data
        return True

    async def read_frame(self) -> tuple[int, bool, bytes] | None:
        """``(opcode, fin, payload)`` of the next frame, or None at EOF."""
        if not await self._fill(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames are not masked"
        n, pos = b1 & 0x7F, 2
        if n == 126:
            if not await self._fill(4):
                return None
            (n,), pos = struct.unpack("!H", self.buf[2:4]), 4
        elif n == 127:
            if not await self._fill(10):
                return None
            (n,), pos = struct.unpack("!Q", self.buf[2:10]), 10
        if not await self._fill(pos + n):
            return None
        payload = bytes(self.buf[pos : pos + n])
        del self.buf[: pos + n]
        return b0 & 0x0F, bool(b0 & 0x80), payload

    async def read_close(self) -> tuple[int | None, list[tuple[int, bytes]]]:
        """Read up to the close frame: ``(close code or None at EOF, frames before it)``."""
        before = []
        while True:
            got = await self.read_frame()
            if got is None:
                return None, before
            opcode, _, payload = got
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, before
            before.append((opcode, payload))

    async def at_eof(self) -> bool:
        """True when the server has closed the connection (after any data left)."""
        while await self._fill(len(self.buf) + 1):
            pass
        return self.eof

    async def aclose(self) -> None:
        await self.stream.aclose()


# --------------------------------------------------------- server under test


@asynccontextmanager
async def running(app: web.Application, **kwargs: Any) -> AsyncIterator[web.Site]:
    """``web.serve`` on 127.0.0.1, port 0; graceful shutdown on exit."""
    try:
        async with trio.open_nursery() as nursery:
            site = await nursery.start(
                lambda task_status: web.serve(app, HOST, 0, task_status=task_status, **kwargs)
            )
            yield site
            nursery.cancel_scope.cancel()
    finally:
        while _raw_sockets:
            await trio.aclose_forcefully(_raw_sockets.pop().stream)


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hi")


class Echo:
    """A WebSocket echo endpoint recording every server-side WebSocket it serves.

    ``opened`` receives each WebSocket after ``prepare()``; ``returned``
    receives ``(ws, messages)`` when its handler returns. ``factory`` builds
    the WebSocketResponse (to pass limits or an instrumented subclass).
    """

    def __init__(
        self,
        factory: Callable[[], web.WebSocketResponse] = web.WebSocketResponse,
        *,
        echo: bool = True,
    ) -> None:
        self.factory = factory
        self.echo = echo
        self.sockets: list[web.WebSocketResponse] = []
        self._opened_tx, self.opened = trio.open_memory_channel[web.WebSocketResponse](math.inf)
        self._returned_tx, self.returned = trio.open_memory_channel[
            tuple[web.WebSocketResponse, list[WSMessage]]
        ](math.inf)

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = self.factory()
        await ws.prepare(request)
        self.sockets.append(ws)
        self._opened_tx.send_nowait(ws)
        messages: list[WSMessage] = []
        try:
            async for msg in ws:
                messages.append(msg)
                if not self.echo:
                    continue
                if msg.type == WSMsgType.TEXT:
                    if msg.data == "raise":
                        raise RuntimeError("handler failure on purpose")
                    await ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
        finally:
            self._returned_tx.send_nowait((ws, messages))
        return ws

    def app(self, path: str = "/ws") -> web.Application:
        app = web.Application()
        app.router.add_get(path, self.handler)
        app.router.add_get("/echo", Echo().handler)  # an independent, default endpoint
        app.router.add_get("/", hello)
        return app


async def echo_roundtrip(port: int, count: int = 10, path: str = "/echo") -> float:
    """A fresh trio_ws client gets ``count`` echoes; returns the slowest round trip."""
    worst = 0.0
    async with (
        trio_ws.ClientSession() as session,
        session.ws_connect(f"ws://{HOST}:{port}{path}") as ws,
    ):
        for i in range(count):
            start = trio.current_time()
            await ws.send_str(f"ping {i}")
            assert await ws.receive_str(timeout=5) == f"ping {i}"
            worst = max(worst, trio.current_time() - start)
    return worst


def task_count() -> int:
    """Every task in this trio run."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


def kernel_queued(sock: trio.socket.SocketType, request: int) -> int:
    """Bytes in a socket's kernel queue: TIOCOUTQ (unsent) or FIONREAD (unread)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0])


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> None:
    """Wait (bounded) for a condition outside trio's view, such as the kernel's fd table."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - the kernel has no event to wait on
            await trio.sleep(step)


def measure(name: str, value: Any) -> None:
    print(f"[measure] {name}: {value}")


# ==================================================================== slowloris


@pytest.mark.parametrize(
    ("head_timeout", "clients"),
    [pytest.param(None, 3, marks=pytest.mark.slow), (1.0, 50)],
    ids=["default-10s", "1s"],
)
async def test_slowloris_heads_are_closed_in_time(head_timeout: float | None, clients: int) -> None:
    """Clients trickling one byte every 0.2 s get 408 (or a closed socket) at head_timeout."""
    limits = (
        web.ServerLimits() if head_timeout is None else web.ServerLimits(head_timeout=head_timeout)
    )
    timeout = limits.head_timeout
    assert web.ServerLimits().head_timeout == 10.0  # the documented default
    closed_after: list[float] = []
    outcomes: list[str] = []
    payload = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000

    async def slow_client() -> None:
        stream = await trio.open_tcp_stream(HOST, site.port)
        first: list[float] = []
        async with stream, trio.open_nursery() as nursery:

            async def trickle() -> None:
                for i in range(len(payload)):
                    try:
                        await stream.send_all(payload[i : i + 1])
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    if not first:
                        first.append(trio.current_time())
                    await trio.sleep(0.2)

            nursery.start_soon(trickle)
            answer = await read_to_eof(stream)
            closed_after.append(trio.current_time() - first[0])
            outcomes.append(answer[:12].decode() if answer else "EOF")
            nursery.cancel_scope.cancel()

    app = Echo().app()
    async with running(app, limits=limits) as site:
        with trio.fail_after(timeout + 10):
            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    nursery.start_soon(slow_client)
                # Meanwhile, normal clients are served promptly.
                await trio.sleep(min(0.5, timeout / 2))
                assert await get_ok(site.port) < 1.0
                assert await echo_roundtrip(site.port) < 1.0
    assert len(closed_after) == clients
    assert all(o in ("HTTP/1.1 408", "EOF") for o in outcomes), outcomes
    assert outcomes.count("HTTP/1.1 408") >= clients * 0.8, outcomes
    assert min(closed_after) >= timeout - 0.05
    assert max(closed_after) <= timeout + 0.5
    measure(
        f"slowloris head_timeout={timeout} clients={clients}",
        f"closed after {min(closed_after):.3f}..{max(closed_after):.3f} s, "
        f"408 x{outcomes.count('HTTP/1.1 408')}, EOF x{outcomes.count('EOF')}",
    )


@pytest.mark.parametrize("keepalive_timeout", [0.5, 1.0])
async def test_silent_connection_is_closed_after_keepalive_timeout(
    keepalive_timeout: float,
) -> None:
    """A connection that never sends a byte is closed, unanswered, after keepalive_timeout."""
    assert web.ServerLimits().keepalive_timeout == 75.0
    limits = web.ServerLimits(keepalive_timeout=keepalive_timeout, head_timeout=5.0)
    async with running(Echo().app(), limits=limits) as site:
        stream = await trio.open_tcp_stream(HOST, site.port)
        start = trio.current_time()
        with trio.fail_after(keepalive_timeout + 3):
            assert await read_to_eof(stream) == b""
        elapsed = trio.current_time() - start
        await stream.aclose()
        assert keepalive_timeout - 0.05 <= elapsed <= keepalive_timeout + 0.5
        measure(f"silent connection keepalive_timeout={keepalive_timeout}", f"{elapsed:.3f} s")
        # A keep-alive connection idle after one request is closed the same way.
        stream = await trio.open_tcp_stream(HOST, site.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(keepalive_timeout + 3):
                status, _, body = await read_response(stream)
                start = trio.current_time()
                assert (status, body) == (200, b"hi")
                assert await read_to_eof(stream) == b""
            assert trio.current_time() - start <= keepalive_timeout + 0.5


# ============================================================ request head limits


def head_of_size(size: int, where: str) -> bytes:
    """A GET request whose counted head (target + headers) is exactly ``size`` bytes."""
    base_headers = [(b"Host", b"x")]
    fixed = len(b"/") + sum(len(k) + len(v) + 4 for k, v in base_headers)
    if where == "target":
        target = b"/" + b"a" * (size - fixed)
        headers = base_headers
    else:
        target = b"/"
        headers = [*base_headers, (b"X-Big", b"b" * (size - fixed - len(b"X-Big") - 4))]
    lines = [b"GET " + target + b" HTTP/1.1", *(k + b": " + v for k, v in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.parametrize("max_head_size", [None, 2048])
@pytest.mark.parametrize("where", ["target", "header"])
@pytest.mark.parametrize("pieces", [1, 7])
async def test_head_over_max_head_size_is_431(
    max_head_size: int | None, where: str, pieces: int
) -> None:
    """A head over max_head_size gets 431 whether it arrives whole or in pieces."""
    limits = web.ServerLimits() if max_head_size is None else web.ServerLimits(max_head_size=2048)
    limit = limits.max_head_size
    assert web.ServerLimits().max_head_size == 16 * 1024
    app = Echo().app()
    app.router.add_get("/{tail:.*}", hello)
    async with running(app, limits=limits) as site:
        # At the limit: served.
        ok = head_of_size(limit - 64, where)
        status, _, _ = await http_exchange(site.port, ok)
        assert status == 200
        # Past the limit: 431, then the connection is closed.
        bad = head_of_size(limit + 64, where)
        stream = await trio.open_tcp_stream(HOST, site.port)
        async with stream:
            step = len(bad) // pieces + 1
            for i in range(0, len(bad), step):
                try:
                    await stream.send_all(bad[i : i + step])
                except trio.BrokenResourceError:
                    break
                await trio.sleep(0.01)
            with trio.fail_after(5):
                answer = await read_to_eof(stream)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert await get_ok(site.port) < 1.0


@pytest.mark.parametrize("max_headers", [None, 10])
async def test_too_many_headers_is_431(max_headers: int | None) -> None:
    limits = web.ServerLimits() if max_headers is None else web.ServerLimits(max_headers=10)
    limit = limits.max_headers
    assert web.ServerLimits().max_headers == 100

    def request(count: int) -> bytes:
        lines = ["GET / HTTP/1.1", "Host: x", *(f"X-H{i}: v" for i in range(count - 1))]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async with running(Echo().app(), limits=limits) as site:
        assert (await http_exchange(site.port, request(limit)))[0] == 200
        status, headers, _ = await http_exchange(site.port, request(limit + 1))
        assert status == 431
        assert headers.get("connection") == "close"
        assert await get_ok(site.port) < 1.0


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
    ],
    ids=[
        "garbage",
        "header-no-colon",
        "negative-length",
        "two-lengths",
        "bad-transfer-encoding",
        "nul-in-name",
        "control-char-in-target",
        "tls-hello",
    ],
)
async def test_malformed_request_is_400_and_server_keeps_serving(request_bytes: bytes) -> None:
    async with running(Echo().app()) as site:
        stream = await trio.open_tcp_stream(HOST, site.port)
        async with stream:
            await stream.send_all(request_bytes)
            with trio.fail_after(5):
                answer = await read_to_eof(stream)
        expected = b"501" if b"Transfer-Encoding: gzip" in request_bytes else b"400"
        assert answer.split(b" ")[1] == expected, answer[:80]
        assert b"Connection: close" in answer
        assert await get_ok(site.port) < 1.0
        assert await echo_roundtrip(site.port, 2) < 1.0


@pytest.mark.parametrize(
    ("request_bytes", "status", "expect_header"),
    [
        (upgrade_request(method="POST"), 405, ("allow", "GET")),
        (upgrade_request(drop=("Upgrade",)), 426, ("upgrade", "websocket")),
        (upgrade_request(extra=[("Upgrade", "h2c")], drop=("Upgrade",)), 426, None),
        (upgrade_request(drop=("Sec-WebSocket-Version",)), 426, ("sec-websocket-version", "13")),
        (
            upgrade_request(
                drop=("Sec-WebSocket-Version",), extra=[("Sec-WebSocket-Version", "12")]
            ),
            426,
            ("sec-websocket-version", "13"),
        ),
        (upgrade_request(drop=("Sec-WebSocket-Key",)), 400, None),
        (upgrade_request(key="not base64!"), 400, None),
        (upgrade_request(key=base64.b64encode(b"x" * 15).decode()), 400, None),
        (upgrade_request(key=base64.b64encode(b"x" * 17).decode()), 400, None),
        (upgrade_request(drop=("Connection",)), 400, None),
    ],
    ids=[
        "POST-405",
        "no-upgrade-426",
        "upgrade-h2c-426",
        "no-version-426",
        "version-12-426",
        "no-key-400",
        "key-not-base64-400",
        "key-15-bytes-400",
        "key-17-bytes-400",
        "no-connection-upgrade-400",
    ],
)
async def test_bad_upgrade_is_refused_before_any_websocket(
    request_bytes: bytes, status: int, expect_header: tuple[str, str] | None
) -> None:
    echo = Echo()
    app = echo.app()
    app.router.add_post("/ws", echo.handler)  # so a POST reaches the handshake check
    async with running(app) as site:
        got, headers, _ = await http_exchange(site.port, request_bytes)
        assert got == status
        if expect_header is not None:
            name, value = expect_header
            assert value in headers.get(name, ""), headers
        assert echo.sockets == []  # no WebSocket was started
        # The same server still upgrades a correct request.
        raw, _ = await RawWS.connect(site.port)
        await raw.send(frame(OP_TEXT, b"ok"))
        assert await raw.read_frame() == (OP_TEXT, True, b"ok")
        await raw.aclose()


async def test_post_to_get_only_websocket_route_is_405() -> None:
    async with running(Echo().app()) as site:
        status, headers, _ = await http_exchange(site.port, upgrade_request(method="POST"))
        assert status == 405
        assert "GET" in headers["allow"]


# ================================================================ message limits


def make_echo(**kwargs: Any) -> Echo:
    return Echo(lambda: web.WebSocketResponse(**kwargs))


@pytest.mark.parametrize("max_msg_size", [None, 1024])
async def test_declared_frame_length_over_max_msg_size_is_1009(max_msg_size: int | None) -> None:
    """The frame header alone is enough: 1009 arrives before any payload is sent."""
    echo = make_echo() if max_msg_size is None else make_echo(max_msg_size=max_msg_size)
    limit = max_msg_size or 4 * MiB
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(site.port)
        # At the limit: echoed.
        await raw.send(frame(OP_BINARY, b"z" * limit))
        with trio.fail_after(10):
            assert await raw.read_frame() == (OP_BINARY, True, b"z" * limit)
        # One byte over, header only (mask key included, no payload).
        await raw.send(frame(OP_BINARY, b"", length=limit + 1))
        with trio.fail_after(5):
            code, before = await raw.read_close()
        assert code == WSCloseCode.MESSAGE_TOO_BIG and before == []
        ws, messages = await echo.returned.receive()
        assert messages[-1].type == WSMsgType.ERROR
        assert isinstance(messages[-1].data, WebSocketError)
        assert messages[-1].data.code == 1009
        assert ws.close_code == 1009
        await raw.aclose()


@pytest.mark.parametrize("max_msg_size", [None, 4096])
async def test_fragments_running_total_over_max_msg_size_is_1009(max_msg_size: int | None) -> None:
    echo = make_echo() if max_msg_size is None else make_echo(max_msg_size=max_msg_size)
    limit = max_msg_size or 4 * MiB
    part = limit // 4
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(site.port)
        # Exactly the limit in four fragments: echoed whole.
        await raw.send(frame(OP_TEXT, b"a" * part, fin=False))
        for _ in range(2):
            await raw.send(frame(OP_CONT, b"a" * part, fin=False))
        await raw.send(frame(OP_CONT, b"a" * (limit - 3 * part)))
        with trio.fail_after(10):
            assert await raw.read_frame() == (OP_TEXT, True, b"a" * limit)
        # Five fragments of a quarter: the fifth frame's header crosses the limit.
        await raw.send(frame(OP_BINARY, b"b" * part, fin=False))
        for _ in range(3):
            await raw.send(frame(OP_CONT, b"b" * part, fin=False))
        await raw.send(frame(OP_CONT, b"b" * 1, fin=True))
        with trio.fail_after(5):
            code, before = await raw.read_close()
        assert code == 1009 and before == []
        ws, _ = await echo.returned.receive()
        assert ws.close_code == 1009
        await raw.aclose()


@pytest.mark.parametrize("where", ["pings-only", "inside-fragmented-message", "after-message"])
async def test_control_frames_do_not_count_toward_max_msg_size(where: str) -> None:
    echo = make_echo(max_msg_size=1024)
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(site.port)
        if where == "pings-only":
            # No message at all: nine 125-byte pings (1,125 bytes in total).
            await raw.send(b"".join(frame(OP_PING, bytes([i]) * 125) for i in range(9)))
            await raw.send(frame(OP_TEXT, b"done"))
            expected = [(OP_PONG, True, bytes([i]) * 125) for i in range(9)]
            expected.append((OP_TEXT, True, b"done"))
        elif where == "after-message":
            await raw.send(frame(OP_BINARY, b"a" * 1024) + frame(OP_PING, b"ping after"))
            expected = [(OP_BINARY, True, b"a" * 1024), (OP_PONG, True, b"ping after")]
        else:
            await raw.send(
                frame(OP_TEXT, b"a" * 512, fin=False)
                + frame(OP_PING, b"mid")
                + frame(OP_CONT, b"a" * 512)
            )
            expected = [(OP_PONG, True, b"mid"), (OP_TEXT, True, b"a" * 1024)]
        with trio.fail_after(5):
            got = [await raw.read_frame() for _ in expected]
        await raw.aclose()
        # The reader answers a ping at once, so a pong may overtake an echo.
        assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("max_msg_size", [None, 64 * 1024])
async def test_compressed_inflation_over_max_msg_size_is_1009(max_msg_size: int | None) -> None:
    """A small compressed frame that inflates 16x past the limit (a zip bomb) gets 1009.

    The Python heap's peak while the bomb is handled (tracemalloc) shows it was
    never inflated whole.
    """
    echo = make_echo() if max_msg_size is None else make_echo(max_msg_size=max_msg_size)
    limit = max_msg_size or 4 * MiB
    exact = deflate_payload(b"\x00" * limit)
    bomb = deflate_payload(b"\x00" * (limit * 16))
    assert len(bomb) < limit // 16  # the frame itself is far below the limit
    async with running(echo.app()) as site:
        raw, headers = await RawWS.connect(
            site.port, extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        assert headers["sec-websocket-extensions"].startswith("permessage-deflate")
        await raw.send(frame(OP_BINARY, exact, rsv=0b100))
        with trio.fail_after(10):
            opcode, fin, payload = await raw.read_frame() or (0, False, b"")
        assert (opcode, fin) == (OP_BINARY, True)
        inflate = zlib.decompressobj(-15)
        assert inflate.decompress(payload + b"\x00\x00\xff\xff") == b"\x00" * limit
        tracemalloc.start()
        try:
            await raw.send(frame(OP_BINARY, bomb, rsv=0b100))
            with trio.fail_after(10):
                code, before = await raw.read_close()
                ws, messages = await echo.returned.receive()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert code == 1009 and before == []
        assert ws.close_code == 1009 and messages[-1].data.code == 1009
        measure(
            f"zip bomb {len(bomb)} B -> {16 * limit / MiB:.0f} MiB, max_msg_size={limit}",
            f"peak Python heap while handled {peak / MiB:.2f} MiB",
        )
        assert peak < 3 * limit + MiB
        await raw.aclose()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(OP_BINARY, b"\xff\xff\xff\xff not deflate", rsv=0b100), 1007),
        (frame(OP_TEXT, b"\x00\x05\x00\x00\x00hello", rsv=0b100), 1007),  # bad stored block
        (frame(OP_TEXT, deflate_payload(b"\xff\xfe"), rsv=0b100), 1007),
        (
            frame(OP_TEXT, deflate_payload(b"ab"), rsv=0b100, fin=False)
            + frame(OP_CONT, b"c", rsv=0b100),
            1002,
        ),
    ],
    ids=["not-deflate", "bad-stored-block", "inflates-to-bad-utf8", "rsv1-on-continuation"],
)
async def test_broken_compressed_data(data: bytes, code: int) -> None:
    echo = make_echo()
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(
            site.port, extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        await raw.send(data)
        with trio.fail_after(5):
            got, before = await raw.read_close()
            assert await raw.at_eof()
        assert got == code and before == []
        ws, messages = await echo.returned.receive()
        assert [m.type for m in messages] == [WSMsgType.ERROR]
        assert messages[0].data.code == code and ws.close_code == code
        await raw.aclose()


@pytest.mark.parametrize("max_msg_size", [None, 1000])
async def test_client_max_msg_size_is_1009_seen_by_server(max_msg_size: int | None) -> None:
    """The trio_ws client enforces its max_msg_size too; the server sees close 1009."""
    limit = max_msg_size or 4 * MiB

    async def big(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.send_bytes(b"x" * limit)
        await ws.send_bytes(b"x" * (limit + 1))
        msg = await ws.receive()
        result.append(msg)
        return ws

    result: list[WSMessage] = []
    app = web.Application()
    app.router.add_get("/big", big)
    async with running(app) as site, trio_ws.ClientSession() as session:
        kwargs = {} if max_msg_size is None else {"max_msg_size": max_msg_size}
        async with session.ws_connect(f"ws://{HOST}:{site.port}/big", **kwargs) as ws:
            with trio.fail_after(10):
                assert len(await ws.receive_bytes()) == limit
                msg = await ws.receive()
            assert msg.type == WSMsgType.ERROR and msg.data.code == 1009
            assert (await ws.receive()).type == WSMsgType.CLOSED
        assert ws.close_code == 1009
    assert result[0].type == WSMsgType.CLOSE and result[0].data == 1009


@pytest.mark.parametrize(
    "frames",
    [
        [frame(OP_TEXT, b"\xff")],
        [frame(OP_TEXT, "é".encode()[:1])],
        [frame(OP_TEXT, b"ok \xe2\x82", fin=False), frame(OP_CONT, b"\xff")],
        [frame(OP_TEXT, b"\xed\xa0\x80")],  # a UTF-16 surrogate
        [frame(OP_CLOSE, close_payload(1000, b"\xc3"))],
    ],
    ids=["ff", "truncated", "fragmented", "surrogate", "close-reason"],
)
async def test_invalid_utf8_is_1007(frames: list[bytes]) -> None:
    echo = make_echo()
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(site.port)
        await raw.send(b"".join(frames))
        with trio.fail_after(5):
            code, before = await raw.read_close()
            assert await raw.at_eof()
        assert code == WSCloseCode.INVALID_TEXT and before == []
        ws, messages = await echo.returned.receive()
        assert [m.type for m in messages] == [WSMsgType.ERROR]
        assert messages[0].data.code == 1007 and ws.close_code == 1007
        await raw.aclose()


PROTOCOL_ERRORS = {
    "rsv1-without-extension": frame(OP_TEXT, b"x", rsv=0b100),
    "rsv2": frame(OP_TEXT, b"x", rsv=0b010),
    "rsv3": frame(OP_BINARY, b"x", rsv=0b001),
    "opcode-3": frame(0x3, b""),
    "opcode-b": frame(0xB, b""),
    "unmasked": frame(OP_TEXT, b"x", mask=False),
    "continuation-first": frame(OP_CONT, b"x"),
    "data-inside-fragmented": frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"),
    "fragmented-ping": frame(OP_PING, b"x", fin=False),
    "ping-126-bytes": frame(OP_PING, b"x" * 126),
    "close-1-byte": frame(OP_CLOSE, b"\x03"),
    "non-minimal-64bit-length": bytes([0x82, 0xFF]) + struct.pack("!Q", 2**63) + b"\0" * 4,
}


@pytest.mark.parametrize("data", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
async def test_protocol_errors_are_1002(data: bytes) -> None:
    echo = make_echo()
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(site.port)
        await raw.send(data)
        with trio.fail_after(5):
            code, before = await raw.read_close()
            assert await raw.at_eof()
        assert code == WSCloseCode.PROTOCOL_ERROR and before == []
        ws, messages = await echo.returned.receive()
        assert messages[-1].type == WSMsgType.ERROR and messages[-1].data.code == 1002
        assert ws.close_code == 1002
        assert isinstance(ws.exception(), WebSocketError)
        await raw.aclose()


INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999]


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES + VALID_CLOSE_CODES)
async def test_close_codes_outside_allowed_ranges_are_1002(code: int) -> None:
    echo = make_echo()
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(site.port)
        await raw.send(frame(OP_TEXT, b"first") + frame(OP_CLOSE, close_payload(code, b"bye")))
        with trio.fail_after(5):
            got, before = await raw.read_close()
            assert await raw.at_eof()
        assert before == [(OP_TEXT, b"first")]
        ws, messages = await echo.returned.receive()
        if code in VALID_CLOSE_CODES:
            assert got == code  # the server echoes the peer's code
            assert messages == [WSMessage(WSMsgType.TEXT, "first", "")]
            assert ws.close_code == code
        else:
            assert got == WSCloseCode.PROTOCOL_ERROR
            assert [m.type for m in messages] == [WSMsgType.TEXT, WSMsgType.ERROR]
            assert messages[-1].data.code == 1002
            assert ws.close_code == 1002
        await raw.aclose()


# ================================================================= backpressure


class Instrumented(web.WebSocketResponse):
    """Records the largest outgoing buffer and inbox this connection ever held."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_out = 0
        self.max_inbox = 0
        self.saw_text = trio.Event()  # a TEXT message was read from the socket

    def _write(self, data: bytes | bytearray) -> None:
        super()._write(data)
        self.max_out = max(self.max_out, self._out_size)

    def _on_data(self, data: bytes | bytearray) -> None:
        super()._on_data(data)
        self.max_inbox = max(self.max_inbox, len(self._inbox))
        if any(m.type is WSMsgType.TEXT for m in self._inbox):
            self.saw_text.set()


async def wait_stalled(progress: Callable[[], int], quiet: float = 0.5, limit: float = 20) -> int:
    """Wait until ``progress()`` stops changing for ``quiet`` seconds; return its value."""
    with trio.fail_after(limit):
        last, since = progress(), trio.current_time()
        while trio.current_time() - since < quiet:
            await trio.sleep(0.05)
            if progress() != last:
                last, since = progress(), trio.current_time()
    return last


@pytest.mark.parametrize("write_limit", [None, 8 * 1024])
async def test_non_reading_client_blocks_sender_and_memory_stays_bounded(
    write_limit: int | None,
) -> None:
    """The server sends forever to a client that never reads: send_bytes waits."""
    limit = write_limit or 64 * 1024
    chunk = 16 * 1024
    state: dict[str, Any] = {"sent": 0}

    async def flood(request: web.Request) -> web.WebSocketResponse:
        kwargs = {} if write_limit is None else {"write_limit": write_limit}
        ws = Instrumented(**kwargs)
        await ws.prepare(request)
        state["ws"] = ws
        data = b"x" * chunk
        try:
            while True:
                await ws.send_bytes(data)
                state["sent"] += 1
        except ClientConnectionResetError:
            pass
        return ws

    app = Echo().app()
    app.router.add_get("/flood", flood)
    async with running(app) as site:
        base_rss = rss()
        stream = await trio.open_tcp_stream(HOST, site.port)
        await stream.send_all(upgrade_request("/flood"))
        status, _, rest = await read_head(stream)  # and then never read again
        assert status == 101
        sent = await wait_stalled(lambda: state["sent"])
        ws: Instrumented = state["ws"]
        frame_size = chunk + 4
        # Everything the application handed over is in the kernel or in the
        # bounded buffer; the buffer never went past write_limit + one frame.
        assert ws.max_out <= limit + frame_size
        kernel = kernel_queued(ws.get_extra_info("socket"), termios.TIOCOUTQ) + kernel_queued(
            stream.socket, termios.FIONREAD
        )
        assert sent * frame_size <= kernel + len(rest) + ws.max_out
        # Another client is served meanwhile, and the flood stays stalled.
        worst = await echo_roundtrip(site.port, 20)
        assert worst < 0.5
        growth = rss() - base_rss
        assert state["sent"] - sent <= 1
        measure(
            f"non-reading client, write_limit={limit}",
            f"app sent {sent * frame_size / 1024:.0f} KiB then blocked (in kernel buffers "
            f"{kernel / 1024:.0f} KiB); max queued {ws.max_out} B; rss growth "
            f"{growth / MiB:.1f} MiB; other client's worst echo {worst * 1000:.1f} ms",
        )
        assert growth < 16 * MiB
        reset_socket(stream)
        await stream.aclose()


@pytest.mark.parametrize("max_queue", [None, 8])
async def test_flooding_client_is_slowed_and_receive_queue_bounded(max_queue: int | None) -> None:
    """A client sends faster than the handler reads: the inbox stays bounded, nothing is lost."""
    queue = max_queue or 64
    payload_size = 1024
    frame_size = payload_size + 8
    per_read = 64 * 1024 // frame_size + 1
    per_chunk = 64
    total_chunks = 600  # 38,400 messages, 40 MB: far more than the kernel buffers
    release = trio.Event()
    state: dict[str, Any] = {"chunks": 0}
    received: list[int] = []

    async def slow_reader(request: web.Request) -> web.WebSocketResponse:
        kwargs = {} if max_queue is None else {"max_queue": max_queue}
        ws = Instrumented(**kwargs)
        await ws.prepare(request)
        state["ws"] = ws
        await release.wait()
        async for msg in ws:
            received.append(int.from_bytes(msg.data[:4], "big"))
            state["max_inbox_seen"] = max(state.get("max_inbox_seen", 0), len(ws._inbox))
        return ws

    app = Echo().app()
    app.router.add_get("/slow", slow_reader)
    async with running(app) as site:
        raw, _ = await RawWS.connect(site.port, "/slow")

        async def flood() -> None:
            n = 0
            for _ in range(total_chunks):
                chunk = b"".join(
                    frame(OP_BINARY, (n + i).to_bytes(4, "big") + b"f" * (payload_size - 4))
                    for i in range(per_chunk)
                )
                n += per_chunk
                await raw.send(chunk)
                state["chunks"] += 1
            await raw.send(frame(OP_CLOSE, close_payload(1000)))

        base_rss = rss()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            chunks = await wait_stalled(lambda: state["chunks"])
            ws: Instrumented = state["ws"]
            assert chunks < total_chunks  # the client is held back by TCP
            assert len(ws._inbox) <= queue + per_read
            assert ws.max_inbox <= queue + per_read
            growth = rss() - base_rss
            assert await echo_roundtrip(site.port, 5) < 0.5
            measure(
                f"flooding client, max_queue={queue}",
                f"client stalled after {chunks * per_chunk * frame_size / MiB:.1f} MiB; "
                f"inbox max {ws.max_inbox} messages (bound {queue} + {per_read}); "
                f"rss growth {growth / MiB:.1f} MiB",
            )
            release.set()
            with trio.fail_after(60):
                code, _ = await raw.read_close()
        assert code == 1000
        assert received == list(range(total_chunks * per_chunk))  # in order, none lost
        await raw.aclose()


@pytest.mark.parametrize("write_limit", [None, 4 * 1024])
async def test_ping_flood_does_not_grow_memory(write_limit: int | None) -> None:
    """Pings from a client that never reads: pongs are coalesced past write_limit."""
    limit = write_limit or 64 * 1024
    kwargs = {} if write_limit is None else {"write_limit": write_limit}
    echo = Echo(lambda: Instrumented(**kwargs))
    pings = 200_000  # 26 MB of pings; their pongs would be 25 MB, several times the socket buffers
    per_chunk = 500
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(site.port)
        ws: Instrumented = await echo.opened.receive()
        base_rss = rss()
        start = trio.current_time()
        with trio.fail_after(60):
            for c in range(pings // per_chunk):
                await raw.send(
                    b"".join(
                        frame(OP_PING, (c * per_chunk + i).to_bytes(8, "big") + b"p" * 117)
                        for i in range(per_chunk)
                    )
                )
            await raw.send(frame(OP_TEXT, b"marker"))
            await ws.saw_text.wait()  # every ping before the marker has been read
        elapsed = trio.current_time() - start
        growth = rss() - base_rss
        assert await echo_roundtrip(site.port, 5) < 0.5  # another client is served meanwhile
        pong_frame = 2 + 125
        assert ws.max_out <= limit + pong_frame
        # Now read everything up to the close: far fewer pongs than pings, and
        # the latest ping was answered.
        pongs: list[int] = []
        with trio.fail_after(30):
            got = await raw.read_frame()
            while got is not None and got[0] != OP_TEXT:
                assert got[0] == OP_PONG
                pongs.append(int.from_bytes(got[2][:8], "big"))
                got = await raw.read_frame()
            assert got == (OP_TEXT, True, b"marker")
            await raw.send(frame(OP_PING, b"final"))
            got = await raw.read_frame()
            while got is not None and got[2] != b"final":
                pongs.append(int.from_bytes(got[2][:8], "big"))
                got = await raw.read_frame()
            assert got == (OP_PONG, True, b"final")
        assert len(pongs) < pings
        assert max(pongs) == pings - 1
        measure(
            f"ping flood write_limit={limit}",
            f"{pings} pings ({pings * 131 / MiB:.1f} MiB) in {elapsed:.2f} s; "
            f"{len(pongs)} pongs; max queued {ws.max_out} B; rss growth {growth / MiB:.1f} MiB",
        )
        assert growth < 8 * MiB
        await raw.send(frame(OP_CLOSE, close_payload(1000)))
        with trio.fail_after(5):
            assert (await raw.read_close())[0] == 1000
        await raw.aclose()


# ===================================================================== liveness


@pytest.mark.parametrize("heartbeat", [None, 0.5, 1.0])
async def test_server_heartbeat_closes_half_open_connection(heartbeat: float | None) -> None:
    """The peer goes silent without FIN: the server drops it within heartbeat * 1.5."""
    echo = make_echo() if heartbeat is None else make_echo(heartbeat=heartbeat)
    async with running(echo.app()) as site:
        raw, _ = await RawWS.connect(site.port)
        ws = await echo.opened.receive()
        start = trio.current_time()
        if heartbeat is None:
            # Off by default: a silent peer is kept (until TCP itself gives up).
            await trio.sleep(1.5)
            assert not ws.closed
            assert echo.returned.statistics().current_buffer_used == 0
            await raw.send(frame(OP_TEXT, b"still"))
            with trio.fail_after(5):
                assert await raw.read_frame() == (OP_TEXT, True, b"still")
            await raw.aclose()
            return
        with trio.fail_after(heartbeat * 1.5 + 2):
            _, messages = await echo.returned.receive()
        elapsed = trio.current_time() - start
        assert heartbeat * 1.5 - 0.05 <= elapsed <= heartbeat * 1.5 + 0.3
        assert [m.type for m in messages] == [WSMsgType.ERROR]
        assert isinstance(messages[0].data, WSTimeoutError)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), WSTimeoutError)
        # What the silent peer would have read: one ping, then EOF, no close frame.
        with trio.fail_after(5):
            assert await raw.read_frame() == (OP_PING, True, b"")
            assert await raw.read_frame() is None
        measure(f"server heartbeat={heartbeat}", f"half-open peer dropped after {elapsed:.3f} s")
        await raw.aclose()


@asynccontextmanager
async def silent_server(
    then: Callable[[trio.SocketStream], Any] | None = None,
) -> AsyncIterator[tuple[int, list[trio.SocketStream]]]:
    """Accepts one WebSocket, answers 101, then runs ``then`` (default: goes silent)."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    accepted: list[trio.SocketStream] = []

    async def serve_one() -> None:
        stream = await listeners[0].accept()
        accepted.append(stream)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(65536)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in buf.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
        )
        if then is not None:
            await then(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_one)
        yield listeners[0].socket.getsockname()[1], accepted
        nursery.cancel_scope.cancel()
    for stream in accepted:
        await stream.aclose()
    await listeners[0].aclose()


@pytest.mark.parametrize("heartbeat", [None, 0.5, 1.0])
async def test_client_heartbeat_closes_half_open_connection(heartbeat: float | None) -> None:
    async with silent_server() as (port, _), trio_ws.ClientSession() as session:
        url = f"ws://{HOST}:{port}/"
        # timeout=0.5: closing the default case does not wait 10 s for a silent peer.
        async with session.ws_connect(url, heartbeat=heartbeat, timeout=0.5) as ws:
            start = trio.current_time()
            if heartbeat is None:
                with trio.move_on_after(1.5):
                    await ws.receive()
                    pytest.fail("a silent server produced a message")
                assert not ws.closed
                return
            with trio.fail_after(heartbeat * 1.5 + 2):
                msg = await ws.receive()
            elapsed = trio.current_time() - start
            assert msg.type == WSMsgType.ERROR and isinstance(msg.data, ServerTimeoutError)
            assert (await ws.receive()).type == WSMsgType.CLOSED
            assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
            assert isinstance(ws.exception(), ServerTimeoutError)
            assert heartbeat * 1.5 - 0.05 <= elapsed <= heartbeat * 1.5 + 0.3
            measure(f"client heartbeat={heartbeat}", f"silent server dropped after {elapsed:.3f} s")


RESET_POINTS = {
    "mid-head": upgrade_request()[:30],
    "after-upgrade": b"",
    "mid-frame-header": frame(OP_BINARY, b"x" * 300)[:3],
    "mid-payload": frame(OP_BINARY, b"x" * 100_000)[:50_000],
    "mid-fragmented-message": frame(OP_TEXT, b"part", fin=False) + frame(OP_CONT, b"ab")[:5],
    "mid-close-frame": frame(OP_CLOSE, close_payload(1000, b"bye"))[:4],
}


@pytest.mark.parametrize("where", RESET_POINTS.keys())
async def test_abrupt_reset_leaves_no_task_and_no_fd(where: str) -> None:
    echo = make_echo()
    async with running(echo.app()) as site:
        # One connection first, so that lazily created resources exist before the baseline.
        assert await echo_roundtrip(site.port, 1) < 1
        await trio.testing.wait_all_tasks_blocked(0.05)
        tasks_before, fds_before = task_count(), fd_count()
        if where == "mid-head":
            stream = await trio.open_tcp_stream(HOST, site.port)
            await stream.send_all(RESET_POINTS[where])
            await trio.testing.wait_all_tasks_blocked(0.05)
        else:
            raw, _ = await RawWS.connect(site.port)
            stream = raw.stream
            ws = await echo.opened.receive()
            await raw.send(RESET_POINTS[where])
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert not ws.closed
        reset_socket(stream)
        await stream.aclose()
        if where != "mid-head":
            with trio.fail_after(5):
                returned, messages = await echo.returned.receive()
            assert returned is ws and ws.closed
            assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
            assert isinstance(ws.exception(), ClientConnectionResetError)
            assert [m.type for m in messages] == []  # nothing partial was delivered
            with trio.fail_after(5):
                await ws._done.wait()
        await until(lambda: fd_count() <= fds_before)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert task_count() == tasks_before
        assert fd_count() == fds_before
        assert await echo_roundtrip(site.port, 1) < 1


async def test_reset_while_the_server_discards_an_unread_body() -> None:
    """A client that resets while the server skips the body a handler did not read.

    The server answers, then reads the rest of the body to reach the next
    keep-alive request; an RST then must end that connection only (it once
    escaped as an exception group and ended serve()).
    """
    echo = make_echo()
    app = echo.app()
    app.router.add_post("/", hello)
    async with running(app) as site:
        assert await echo_roundtrip(site.port, 1) < 1
        await trio.testing.wait_all_tasks_blocked(0.05)
        tasks_before, fds_before = task_count(), fd_count()
        stream = await trio.open_tcp_stream(HOST, site.port)
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000
        )
        with trio.fail_after(5):
            status, _, body = await read_response(stream)
        assert (status, body) == (200, b"hi")
        await stream.send_all(b"x" * 1000)
        await trio.testing.wait_all_tasks_blocked(0.05)  # the server waits for more body
        reset_socket(stream)
        await stream.aclose()
        await until(lambda: fd_count() <= fds_before)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert task_count() == tasks_before
        assert await get_ok(site.port) < 1
        assert await echo_roundtrip(site.port, 1) < 1


async def test_client_side_reset_mid_frame_ends_client_tasks() -> None:
    async def reset_mid_frame(stream: trio.SocketStream) -> None:
        await stream.send_all(frame(OP_BINARY, b"y" * 1000, mask=False)[:500])
        reset_socket(stream)
        await stream.aclose()

    tasks_before = task_count()
    async with silent_server(reset_mid_frame) as (port, _), trio_ws.ClientSession() as session:
        fds_before = fd_count()
        async with session.ws_connect(f"ws://{HOST}:{port}/") as ws:
            with trio.fail_after(5):
                msg = await ws.receive()
            assert msg.type == WSMsgType.CLOSED
            assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
            assert isinstance(ws.exception(), ClientConnectionResetError)
            with trio.fail_after(5):
                await ws._done.wait()
        assert fd_count() == fds_before  # both ends of the connection are closed
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert task_count() == tasks_before


# ================================================================ nothing lost


def burst(count: int) -> list[str | bytes]:
    """Messages of mixed types and sizes, each carrying its index."""
    sizes = [0, 1, 125, 126, 65535, 65536, 200_000]
    out: list[str | bytes] = []
    for i in range(count):
        body = str(i).encode() + b":" + b"m" * sizes[i % len(sizes)]
        out.append(body.decode() if i % 2 else body)
    return out


@pytest.mark.parametrize("compress", [15, 0])
@pytest.mark.parametrize("count", [1, 300])
async def test_server_messages_sent_before_close_arrive_before_close_frame(
    compress: int, count: int
) -> None:
    messages = burst(count)

    async def sender(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for m in messages:
            if isinstance(m, str):
                await ws.send_str(m)
            else:
                await ws.send_bytes(m)
        assert await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/send", sender)
    async with running(app) as site, trio_ws.ClientSession() as session:
        async with session.ws_connect(f"ws://{HOST}:{site.port}/send", compress=compress) as ws:
            got = []
            with trio.fail_after(30):
                async for msg in ws:
                    got.append(msg.data)
            assert ws.close_code == 1000
        assert got == messages


@pytest.mark.parametrize("compress", [15, 0])
@pytest.mark.parametrize("count", [1, 300])
async def test_client_messages_sent_before_close_reach_handler(compress: int, count: int) -> None:
    messages = burst(count)
    echo = make_echo()
    echo.echo = False
    async with running(echo.app()) as site, trio_ws.ClientSession() as session:
        async with session.ws_connect(f"ws://{HOST}:{site.port}/ws", compress=compress) as ws:
            for m in messages:
                if isinstance(m, str):
                    await ws.send_str(m)
                else:
                    await ws.send_bytes(m)
            with trio.fail_after(30):
                assert await ws.close()
            assert ws.close_code == 1000
        _, got = await echo.returned.receive()
    assert [m.data for m in got] == messages  # the loop ended at the CLOSE after them


@pytest.mark.parametrize("clients", [1, 20])
async def test_graceful_shutdown_every_client_gets_1001_after_its_data(clients: int) -> None:
    """Cancelling serve: what on_shutdown sends is delivered, then every WebSocket gets 1001."""
    stopped = trio.Event()
    sockets_seen: list[web.WebSocketResponse] = []

    async def talker(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets_seen.append(ws)
        await ws.send_str("before shutdown")
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    async def say_goodbye(app: web.Application) -> None:
        for ws in sockets_seen:
            await ws.send_str("server going down")

    app = web.Application()
    app.router.add_get("/t", talker)
    app.on_shutdown.append(say_goodbye)
    server_scope = trio.CancelScope()
    results: list[tuple[list[Any], int | None]] = []
    async with trio.open_nursery() as nursery:

        async def run_server(task_status: trio.TaskStatus[web.Site]) -> None:
            with server_scope:
                await web.serve(app, HOST, 0, shutdown_timeout=5, task_status=task_status)
            stopped.set()

        site = await nursery.start(run_server)
        async with trio_ws.ClientSession() as session:
            sockets = [
                await session.ws_connect(f"ws://{HOST}:{site.port}/t") for _ in range(clients)
            ]
            for ws in sockets:
                assert await ws.receive_str() == "before shutdown"
                await ws.send_str("echo me")
            for ws in sockets:
                assert await ws.receive_str() == "echo me"
            begin = trio.current_time()
            server_scope.cancel()
            with trio.fail_after(5):
                for ws in sockets:
                    seen = []
                    async for msg in ws:
                        seen.append(msg.data)
                    results.append((seen, ws.close_code))
                await stopped.wait()
            elapsed = trio.current_time() - begin
    assert results == [(["server going down"], WSCloseCode.GOING_AWAY)] * clients
    measure(f"graceful shutdown with {clients} clients", f"{elapsed * 1000:.1f} ms")


async def test_handler_exception_affects_only_its_connection() -> None:
    echo = make_echo()
    async with running(echo.app()) as site, trio_ws.ClientSession() as session:
        url = f"ws://{HOST}:{site.port}/ws"
        async with session.ws_connect(url) as a, session.ws_connect(url) as b:
            await a.send_str("one")
            assert await a.receive_str() == "one"
            await b.send_str("raise")
            with trio.fail_after(5):
                msg = await b.receive()
            assert (msg.type, msg.data) == (WSMsgType.CLOSE, WSCloseCode.INTERNAL_ERROR)
            await a.send_str("two")
            assert await a.receive_str() == "two"
            async with session.ws_connect(url) as c:
                await c.send_str("three")
                assert await c.receive_str() == "three"
        assert b.close_code == WSCloseCode.INTERNAL_ERROR
