"""Capacity over real sockets: max_connections, and thousands of idle WebSockets on one server.

The idle clients run in a child process (plain blocking sockets), so that the
resident memory measured in this process is the server's alone. Figures are
printed with a ``[measure]`` prefix (``pytest -s`` shows them).
"""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
import trio
import trio.testing

import trio_ws
from trio_ws import WSMsgType, web

from .test_hardening import (
    HOST,
    Echo,
    MiB,
    RawWS,
    echo_roundtrip,
    fd_count,
    measure,
    read_to_eof,
    rss,
    running,
    task_count,
    upgrade_request,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# ============================================================== max_connections


@pytest.mark.parametrize("max_connections", [None, 1, 5])
async def test_max_connections_answers_503_before_upgrade(max_connections: int | None) -> None:
    """Past max_connections a new connection gets 503 and no WebSocket; the held ones still work."""
    assert web.ServerLimits().max_connections is None
    held_count = max_connections or 100  # the default has no limit: 100 are all accepted
    echo = Echo()
    limits = web.ServerLimits(max_connections=max_connections)
    async with (
        running(echo.app(), limits=limits) as site,
        trio_ws.ClientSession() as session,
    ):
        url = f"ws://{HOST}:{site.port}/ws"
        held = [await session.ws_connect(url) for _ in range(held_count)]
        # A client's handshake can finish before the server's handler goes on
        # from prepare(): wait for each server side to register.
        with trio.fail_after(5):
            for _ in range(held_count):
                await echo.opened.receive()
        assert len(echo.sockets) == held_count
        if max_connections is None:
            assert await echo_roundtrip(site.port, 2, "/ws") < 1
        else:
            # A WebSocket client sees the status of the refused handshake.
            with trio.fail_after(5), pytest.raises(trio_ws.WSServerHandshakeError) as info:
                await session.ws_connect(url)
            assert info.value.status == 503
            # Raw: a 503 response, then the server closes the connection.
            for request in (upgrade_request(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
                stream = await trio.open_tcp_stream(HOST, site.port)
                async with stream:
                    await stream.send_all(request)
                    with trio.fail_after(5):
                        answer = await read_to_eof(stream)
                assert answer.startswith(b"HTTP/1.1 503 "), answer[:60]
            # A burst of 100 refused clients is answered quickly and costs nothing lasting.
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(refused, site.port)
            measure(
                f"max_connections={max_connections}: 100 refused clients",
                f"answered in {trio.current_time() - start:.3f} s",
            )
            # A connection that sends nothing is not held for long either.
            stream = await trio.open_tcp_stream(HOST, site.port)
            start = trio.current_time()
            async with stream:
                with trio.fail_after(5):
                    await read_to_eof(stream)
            silent = trio.current_time() - start
            assert silent <= 1.5
            measure(f"max_connections={max_connections}: silent refused client", f"{silent:.3f} s")
            assert len(echo.sockets) == held_count  # no WebSocket was started for any of them
        for ws in held:  # the held connections are unaffected
            await ws.send_str("still here")
            assert await ws.receive_str() == "still here"
        # A slot freed by a closing client is reusable once its handler returned.
        await held[0].close()
        with trio.fail_after(5):
            await echo.returned.receive()
        with trio.fail_after(5):
            while True:  # the connection's slot is released just after its handler returns
                try:
                    replacement = await session.ws_connect(url)
                    break
                except trio_ws.WSServerHandshakeError:
                    await trio.testing.wait_all_tasks_blocked(0.01)
        await replacement.send_str("in")
        assert await replacement.receive_str() == "in"


async def refused(port: int) -> None:
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(upgrade_request())
        with trio.fail_after(5):
            answer = await read_to_eof(stream)
    assert answer.startswith(b"HTTP/1.1 503 ")


# ============================================================ idle connections

# The idle clients: open COUNT WebSockets in batches, optionally exchange one
# compressed message on each, print "ready", hold them until stdin closes.
CLIENT_SCRIPT = r"""
import base64, os, socket, sys, zlib

port, count, deflate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
socks = []
for start in range(0, count, 100):
    batch = []
    for _ in range(min(100, count - start)):
        s = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n".encode()
        )
        batch.append(s)
    for s in batch:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = s.recv(4096)
            if not data:
                sys.exit(f"EOF during handshake {len(socks)}")
            buf += data
        if not buf.startswith(b"HTTP/1.1 101"):
            sys.exit(buf[:100].decode())
        if deflate:
            comp = zlib.compressobj(9, zlib.DEFLATED, -15)
            body = (comp.compress(b"hello " * 20) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
            s.sendall(bytes([0xC1, 0x80 | len(body)]) + b"\0\0\0\0" + body)
            if len(s.recv(4096)) < 2:
                sys.exit("no echo")
    socks.extend(batch)
print("ready", flush=True)
sys.stdin.read()
for s in socks:
    s.close()
"""


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.mark.parametrize(
    ("count", "deflate"), [(2000, False), (500, True)], ids=["2000-plain", "500-deflate"]
)
async def test_thousands_of_idle_websockets(count: int, deflate: bool) -> None:
    """Hold ``count`` idle WebSockets: a fresh client still gets prompt echoes.

    Records the server's resident memory per idle connection. With
    permessage-deflate each connection has exchanged one message, so that its
    zlib contexts exist.
    """
    raise_fd_limit(2 * count + 512)  # the children's sockets are in another process
    echo = Echo()
    async with running(echo.app()) as site:
        # Warm up: the first connection creates lazily built state.
        assert await echo_roundtrip(site.port, 2, "/ws") < 1
        with trio.fail_after(5):
            await echo.returned.receive()
        await trio.testing.wait_all_tasks_blocked(0.05)
        tasks_before, fds_before = task_count(), fd_count()
        base = rss()
        start = trio.current_time()
        child = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-c",
                CLIENT_SCRIPT,
                str(site.port),
                str(count),
                "1" if deflate else "0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stdin is not None
        try:
            with trio.fail_after(120):
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await child.stdout.receive_some(100)
                    assert chunk, f"idle clients exited with {await child.wait()}"
                    line += chunk
            assert line == b"ready\n"
            opened = trio.current_time() - start
            await trio.testing.wait_all_tasks_blocked(0.1)
            per_connection = (rss() - base) / count
            assert len(echo.sockets) == count + 1
            assert not any(ws.closed for ws in echo.sockets[1:])
            assert all(ws.compress == deflate for ws in echo.sockets[1:])
            # A fresh client is still served promptly, by the same server.
            worst = await echo_roundtrip(site.port, 20, "/ws")
            assert worst < 0.5
            raw, _ = await RawWS.connect(site.port)
            await raw.send(b"\x81\x82\0\0\0\0hi")
            with trio.fail_after(5):
                assert await raw.read_frame() == (WSMsgType.TEXT.value, True, b"hi")
            await raw.aclose()
            measure(
                f"{count} idle WebSockets (deflate={deflate})",
                f"opened in {opened:.2f} s; server memory per idle connection "
                f"{per_connection / 1024:.1f} KiB (rss +{per_connection * count / MiB:.1f} MiB); "
                f"fresh client's worst echo {worst * 1000:.1f} ms",
            )
            # Let the children go: every handler returns, nothing is left behind.
            await child.stdin.aclose()
            start = trio.current_time()
            with trio.fail_after(60):
                for _ in range(count + 2):  # + the echo round trip and the raw client
                    await echo.returned.receive()
            closed = trio.current_time() - start
            assert await child.wait() == 0
        finally:
            with trio.CancelScope(shield=True):
                child.kill()
                await child.wait()
                await child.stdin.aclose()
                await child.stdout.aclose()
        await trio.testing.wait_all_tasks_blocked(0.1)
        assert task_count() == tasks_before
        assert fd_count() == fds_before
        measure(f"{count} idle WebSockets (deflate={deflate})", f"all ended in {closed:.2f} s")
        assert per_connection < (400 if deflate else 64) * 1024
