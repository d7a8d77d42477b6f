"""``python -m trio_ws``: the client and the echo server as real subprocesses.

The client is driven through its standard input and output; the servers it
talks to are either the echo command (also a subprocess, on port 0, its URL
read from what it prints) or small in-process applications served with
``trio_ws.testing`` where a test needs a particular behaviour. Every wait is
bounded by ``TIMEOUT``, and every process is killed if a test fails early.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from wsproto.utilities import generate_accept_token

import trio_ws
import trio_ws.testing
from trio_ws import WSCloseCode, WSMsgType, web
from trio_ws._cli import EXIT_ABNORMAL, EXIT_CONNECT, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.integration

TIMEOUT = 15.0  # generous: each process start costs an interpreter and an import
ROOT = Path(__file__).resolve().parent.parent
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and terminals")


class Lines:
    """Reads one process pipe line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self._stream = stream
        self._buffer = b""
        self.seen: list[str] = []

    async def readline(self) -> str:
        """The next line without its newline; "" at end of stream."""
        with trio.fail_after(TIMEOUT):
            while b"\n" not in self._buffer:
                data = await self._stream.receive_some(65536)
                if not data:
                    line, self._buffer = self._buffer, b""
                    return line.decode()
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        self.seen.append(line.decode())
        return self.seen[-1]

    async def until(self, pattern: str) -> re.Match[str]:
        """Read lines until one matches ``pattern``; fail at end of stream."""
        for _ in range(100):
            line = await self.readline()
            found = re.search(pattern, line)
            if found:
                return found
            if not line and not self._buffer:
                break
        pytest.fail(f"no line matched {pattern!r}; got {self.seen!r}")

    async def rest(self) -> list[str]:
        """Every remaining line, until end of stream."""
        lines = []
        for _ in range(1000):
            line = await self.readline()
            if not line and not self._buffer:
                return lines
            lines.append(line)
        pytest.fail("too much output")


class Proc:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = Lines(process.stdout)
        self.stderr = Lines(process.stderr)

    async def send(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode())

    async def end_input(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def wait(self) -> int:
        with trio.fail_after(TIMEOUT):
            return await self.process.wait()


@asynccontextmanager
async def spawn(*args: str, stdin: int | None = subprocess.PIPE) -> AsyncIterator[Proc]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_ws", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        yield Proc(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


async def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "trio_ws", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )


@asynccontextmanager
async def echo_server(*extra: str) -> AsyncIterator[tuple[Proc, str]]:
    """The echo command on port 0, with the ws:// URL it printed."""
    async with spawn("echo", "--port", "0", *extra, stdin=subprocess.DEVNULL) as proc:
        http = await proc.stdout.until(r"^======== Running on (http://127\.0\.0\.1:\d+) ========$")
        ws = await proc.stdout.until(r"^WebSocket echo on (ws://127\.0\.0\.1:\d+/) \(any path\)$")
        assert ws[1] == http[1].replace("http://", "ws://") + "/"
        yield proc, ws[1]


# ---------------------------------------------------------------- command line


async def test_help_texts() -> None:
    top = await run("--help")
    assert top.returncode == 0
    assert b"client" in top.stdout and b"echo" in top.stdout
    client = await run("client", "--help")
    assert client.returncode == 0
    for option in (b"--header", b"--subprotocol", b"--insecure", b"--wait", b"exit codes:"):
        assert option in client.stdout
    echo = await run("echo", "--help")
    assert echo.returncode == 0
    assert b"--port" in echo.stdout and b"0 for any free port" in echo.stdout
    version = await run("--version")
    assert version.stdout.decode().strip() == f"trio_ws {trio_ws.__version__}"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ((), b"required: COMMAND"),
        (("client",), b"required: URL"),
        (("client", "ws://x/", "--header", "no colon"), b"expected 'Name: value'"),
        (("client", "ws://x/", "--header", "bad name: v"), b"expected 'Name: value'"),
        (("client", "ws://x/", "--timeout", "0"), b"must be positive"),
        (("client", "ws://x/", "--wait", "-1"), b"must not be negative"),
        (("echo", "--port", "70000"), b"port must be 0-65535"),
        (("echo", "--port", "http"), b"not a port number"),
    ],
)
async def test_usage_errors_exit_2(args: tuple[str, ...], complaint: bytes) -> None:
    result = await run(*args)
    assert result.returncode == EXIT_USAGE
    assert complaint in result.stderr


# ------------------------------------------------------------------------ echo


async def http_get(url: str, path: str) -> str:
    host, port = url.split("//")[1].rstrip("/").split(":")
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data.decode()


async def test_echo_server_echoes_and_stops_on_sigint() -> None:
    async with echo_server() as (proc, url):
        page = await http_get(url, "/")
        assert page.startswith("HTTP/1.1 200 ")
        assert f"python -m trio_ws client {url}" in page
        assert (await http_get(url, "/elsewhere")).startswith("HTTP/1.1 404 ")
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(url + "any/path") as ws:
                await ws.send_str("héllo")
                assert await ws.receive_str(timeout=TIMEOUT) == "héllo"
                await ws.send_bytes(b"\x00\xff" * 1000)
                assert await ws.receive_bytes(timeout=TIMEOUT) == b"\x00\xff" * 1000
                if sys.platform == "win32":  # pragma: no cover
                    return
                # Ctrl-C: a graceful stop, the open WebSocket gets 1001.
                proc.process.send_signal(signal.SIGINT)
                msg = await ws.receive(timeout=TIMEOUT)
                assert msg.type == WSMsgType.CLOSE
                assert msg.data == WSCloseCode.GOING_AWAY
        assert await proc.wait() == EXIT_OK


async def test_echo_server_cannot_listen_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run("echo", "--port", str(port))
    assert result.returncode == EXIT_ABNORMAL
    assert f"Cannot listen on 127.0.0.1:{port}:".encode() in result.stderr
    assert b"Traceback" not in result.stderr


# ---------------------------------------------------------------------- client


async def test_client_talks_to_the_echo_server_interactively() -> None:
    async with echo_server() as (_server, url), spawn("client", url) as client:
        assert await client.stderr.readline() == f"Connected to {url}"
        await client.send("hello\n")
        assert await client.stdout.readline() == "< hello"
        await client.send("héllo wörld\r\n")  # CRLF from a Windows pipe is stripped too
        assert await client.stdout.readline() == "< héllo wörld"
        await client.send("\n")
        assert await client.stdout.readline() == "< "
        await client.end_input()
        assert await client.wait() == EXIT_OK
        assert await client.stdout.rest() == []
        assert await client.stderr.rest() == ["Closed (1000 OK)"]


async def test_client_wait_prints_replies_to_piped_input() -> None:
    async with echo_server() as (_server, url), spawn("client", url, "--wait", "1") as client:
        await client.send("one\ntwo\nlast line without newline")
        await client.end_input()
        assert await client.wait() == EXIT_OK
        assert await client.stdout.rest() == ["< one", "< two", "< last line without newline"]


async def test_client_with_input_closed_at_once_exits_0() -> None:
    async with echo_server() as (_server, url), spawn("client", url, stdin=subprocess.DEVNULL) as c:
        assert await c.wait() == EXIT_OK
        assert await c.stderr.rest() == [f"Connected to {url}", "Closed (1000 OK)"]


def scripted_app(script: list[tuple[str, object]], seen: dict[str, object]) -> web.Application:
    """A server that records the handshake, then sends ``script`` and closes."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["b", "c"])
        await ws.prepare(request)
        seen["headers"] = request.headers.getall("X-Token", [])
        seen["protocol"] = ws.protocol
        for kind, value in script:
            if kind == "text":
                assert isinstance(value, str)
                await ws.send_str(value)
            elif kind == "bytes":
                assert isinstance(value, bytes)
                await ws.send_bytes(value)
            elif kind == "close":
                assert isinstance(value, tuple)
                await ws.close(code=value[0], message=value[1])
            elif kind == "receive":
                seen["received"] = await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def test_client_prints_binary_and_sends_headers_and_subprotocols() -> None:
    seen: dict[str, object] = {}
    script: list[tuple[str, object]] = [
        ("bytes", b"\x00\x01\xfe"),
        ("bytes", bytes(range(40))),
        ("bytes", b""),
        ("text", "multi\nline"),
        ("close", (WSCloseCode.OK, b"done")),
    ]
    async with trio_ws.testing.open_test_server(scripted_app(script, seen)) as server:
        url = server.ws_url("/ws")
        args = ("-H", "X-Token: abc", "--header", "X-Token:def", "-p", "a", "--subprotocol", "c")
        async with spawn("client", url, *args) as client:
            assert await client.wait() == EXIT_OK
            assert await client.stdout.rest() == [
                "< [binary 3 bytes] 0001fe",
                f"< [binary 40 bytes] {bytes(range(32)).hex()}...",
                "< [binary 0 bytes]",
                "< multi",
                "line",
            ]
            assert await client.stderr.rest() == [
                f"Connected to {url} (subprotocol c)",
                "Server closed the connection (1000 OK): done",
            ]
    assert seen == {"headers": ["abc, def"], "protocol": "c"}


@pytest.mark.parametrize(
    ("code", "shown", "exit_code"),
    [
        (WSCloseCode.GOING_AWAY, "1001 GOING_AWAY", EXIT_OK),
        (WSCloseCode.POLICY_VIOLATION, "1008 POLICY_VIOLATION", EXIT_ABNORMAL),
        (4000, "4000", EXIT_ABNORMAL),
    ],
)
async def test_client_reports_the_server_close_code(code: int, shown: str, exit_code: int) -> None:
    seen: dict[str, object] = {}
    app = scripted_app([("close", (code, b""))], seen)
    async with (
        trio_ws.testing.open_test_server(app) as server,
        spawn("client", server.ws_url("/ws")) as client,
    ):
        # Standard input stays open: the server's close alone ends the client.
        assert await client.wait() == exit_code
        assert (await client.stderr.rest())[-1] == f"Server closed the connection ({shown})"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://127.0.0.1/", "InvalidURL: Unsupported scheme"),
        ("/ws", "InvalidURL: "),
        ("ws://127.0.0.1:{closed_port}/", "ClientConnectorError: Cannot connect to host"),
        ("ws://{server}/nowhere", "WSServerHandshakeError: 404"),
        ("wss://{server}/ws", "ClientConnectorSSLError"),  # plain HTTP: TLS fails, not the cert
    ],
)
async def test_client_cannot_connect_exits_3(url: str, expected: str) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    async with trio_ws.testing.open_test_server(scripted_app([], {})) as server:
        target = url.format(closed_port=closed_port, server=f"127.0.0.1:{server.port}")
        async with spawn("client", target) as client:
            assert await client.wait() == EXIT_CONNECT
            (line,) = await client.stderr.rest()
            assert line.startswith(f"Cannot connect to {target}: {expected}")
            assert await client.stdout.rest() == []


def handshake_then(after: bytes) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A bare server that completes the handshake and hangs up at once, or after
    sending the raw bytes ``after`` and reading until the client hangs up."""

    async def handler(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head)
        assert key is not None
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + generate_accept_token(key[1]) + b"\r\n\r\n" + after
        )
        if after:
            with trio.move_on_after(TIMEOUT):
                while await stream.receive_some(65536):
                    pass
        await stream.aclose()

    return handler


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (b"", "Connection lost (1006 ABNORMAL_CLOSURE): "),
        # A text frame whose payload is not UTF-8.
        (b"\x81\x02\xff\xfe", "Protocol error, closed (1007 INVALID_TEXT): "),
    ],
)
async def test_client_reports_a_broken_connection(after: bytes, expected: str) -> None:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, handshake_then(after), 0, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        port = listener.socket.getsockname()[1]
        async with spawn("client", f"ws://127.0.0.1:{port}/") as client:
            assert await client.wait() == EXIT_ABNORMAL
            lines = await client.stderr.rest()
            assert lines[-1].startswith(expected), lines
        nursery.cancel_scope.cancel()


async def test_client_exits_when_its_output_is_closed() -> None:
    async with echo_server() as (_server, url), spawn("client", url) as client:
        await client.stderr.until("^Connected to ")
        assert client.process.stdout is not None
        await client.process.stdout.aclose()
        await client.send("nobody reads this\n")
        assert await client.wait() == EXIT_ABNORMAL
        assert await client.stderr.rest() == ["Standard output is closed: closing with 1001"]


@posix_only
async def test_client_ctrl_c_closes_with_1001() -> None:
    seen: dict[str, object] = {}
    app = scripted_app([("receive", None)], seen)
    async with trio_ws.testing.open_test_server(app) as server:
        async with spawn("client", server.ws_url("/ws")) as client:
            await client.stderr.until("^Connected to ")
            client.process.send_signal(signal.SIGINT)
            assert await client.wait() == EXIT_INTERRUPTED
            assert await client.stderr.rest() == [
                "Interrupted: closing (Ctrl-C again to quit at once)",
                "Closed (1001 GOING_AWAY)",
            ]
    received = seen["received"]
    assert isinstance(received, trio_ws.WSMessage)
    assert received.type == WSMsgType.CLOSE
    assert received.data == WSCloseCode.GOING_AWAY


@posix_only
async def test_client_on_a_terminal_restores_blocking_mode() -> None:
    import pty  # POSIX only

    seen: dict[str, object] = {}
    app = scripted_app([("text", "hi"), ("receive", None)], seen)
    controller, terminal = pty.openpty()
    try:
        assert os.get_blocking(terminal)
        async with trio_ws.testing.open_test_server(app) as server:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trio_ws", "client", server.ws_url("/ws")],
                stdin=terminal,
                stdout=terminal,
                stderr=terminal,
                cwd=ROOT,
            )
            try:
                output = b""
                with trio.fail_after(TIMEOUT):
                    while b"< hi" not in output:
                        await trio.lowlevel.wait_readable(controller)
                        output += os.read(controller, 65536)
                    # While it runs, the shared terminal is non-blocking...
                    assert not os.get_blocking(terminal)
                    os.write(controller, b"typed\n\x04")  # a line, then Ctrl-D
                    assert await process.wait() == EXIT_OK
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
        # ...and after it exits, blocking again for the shell that owns it.
        assert os.get_blocking(terminal)
        received = seen["received"]
        assert isinstance(received, trio_ws.WSMessage)
        assert received.data == "typed"
    finally:
        os.close(controller)
        os.close(terminal)
