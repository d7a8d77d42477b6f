"""``run_app(app, workers=N)``: worker processes on one port, supervised, shut down gracefully.

Every test runs a real server program (written to ``tmp_path``) in a subprocess and talks to
it over sockets: forking inside the pytest process would copy the test runner too.
:class:`ServerProcess` is also used by ``test_hub.py``.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import psutil
import pytest
import trio
import trio.lowlevel

import trio_ws
from trio_ws import WSCloseCode, WSMsgType
from trio_ws.web._reuseport import reserve, reuseport_available

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20.0  # seconds for a server program to print its address
STOP_TIMEOUT = 20.0  # seconds for it to exit after SIGTERM
TIMEOUT = 10.0  # seconds for any one exchange


class ServerProcess:
    """A server program's process and everything it printed so far (stdout and stderr)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = trio.Event()
        self.url = ""
        self.port = 0

    async def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        buffer = b""
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in complete)
            self._changed.set()
            self._changed = trio.Event()
        if buffer:
            self.lines.append(buffer.decode(errors="replace"))
        self._changed.set()

    async def wait_for_line(self, pattern: str, *, start: int = 0) -> re.Match[str]:
        """The first line from ``start`` on that matches ``pattern``; waits for it."""
        regex = re.compile(pattern)
        seen = start
        with trio.fail_after(STARTUP_TIMEOUT):
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = max(seen, len(self.lines))
                if self.process.returncode is not None and seen >= len(self.lines):
                    await trio.lowlevel.checkpoint()  # let the reader task collect the last output
                    if seen >= len(self.lines):
                        raise AssertionError(
                            f"exited ({self.process.returncode}) without printing "
                            f"{pattern!r}:\n{self.output()}"
                        )
                await self._changed.wait()

    def output(self) -> str:
        return "\n".join(self.lines)

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signum)
        with trio.fail_after(STOP_TIMEOUT):
            return await self.process.wait()


@asynccontextmanager
async def server_process(args: Sequence[str]) -> AsyncIterator[ServerProcess]:
    """Run ``python -u args...``; yield it once it printed ``Running on ...``.

    On exit the process gets SIGTERM (if it still runs), then SIGKILL after STOP_TIMEOUT.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-u", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
    )
    server = ServerProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._read)
            match = await server.wait_for_line(r"Running on (http://[^ ]+:(\d+))")
            server.url, server.port = match.group(1), int(match.group(2))
            try:
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await server.stop()
                    except trio.TooSlowError:
                        process.kill()
                        await process.wait()
                        raise
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()


APP = """
import logging, os, signal, socket, sys

from trio_ws import web

mode = sys.argv[1]
logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")


async def pid(request):
    return web.Response(text=str(os.getpid()))


async def websocket(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(str(os.getpid()))
    async for msg in ws:
        await ws.send_str(msg.data)
    return ws


async def fail(app):
    raise RuntimeError("startup failed on purpose")


app = web.Application()
app.router.add_get("/", pid)
app.router.add_get("/ws", websocket)
if mode == "crash-at-startup":
    from trio_ws.web import _workers

    app.on_startup.append(fail)
    _workers.run_workers(
        app, workers=2, host="127.0.0.1", port=0, max_restarts=2, restart_backoff=0.01
    )
    print("======== Running on http://127.0.0.1:0 ======== (unreachable)")
    sys.exit(0)
if mode == "no-reuseport":
    del socket.SO_REUSEPORT
web.run_app(app, host="127.0.0.1", port=0, workers=2, shutdown_timeout=5)
"""


@pytest.fixture
def app_script(tmp_path: Path) -> Path:
    path = tmp_path / "pid_app.py"
    path.write_text(textwrap.dedent(APP), encoding="utf-8")
    return path


async def get_pid(port: int) -> int:
    """GET / on a fresh connection: the pid of the worker that answered."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(4096):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    return int(body)


async def pids_seen(port: int, wanted: set[int] | int, attempts: int = 60) -> set[int]:
    """Connect until ``wanted`` pids (a set, or a count) have answered; at most ``attempts``."""
    seen: set[int] = set()
    for _ in range(attempts):
        seen.add(await get_pid(port))
        if (isinstance(wanted, int) and len(seen) >= wanted) or (
            isinstance(wanted, set) and wanted <= seen
        ):
            return seen
    raise AssertionError(f"after {attempts} connections only pids {seen} answered, not {wanted}")


def test_reuseport_is_available_here() -> None:
    # The tests below exercise the real multi-process path; on a platform without
    # SO_REUSEPORT only test_no_reuseport_falls_back_to_one_process would mean anything.
    assert reuseport_available()


def test_reserve_binds_every_address_on_one_port() -> None:
    sockets = reserve(["127.0.0.1", "127.0.0.1"], 0)
    try:
        assert len(sockets) == 1  # the duplicate address is bound once
        port = sockets[0].getsockname()[1]
        assert port != 0
        assert sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        # Not listening: a connection is refused until a worker listens.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    finally:
        for sock in sockets:
            sock.close()


def test_reserve_refuses_a_port_another_server_holds() -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that shares
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError) as info:
            reserve("127.0.0.1", other.getsockname()[1])
        assert info.value.errno == errno.EADDRINUSE


async def test_two_workers_share_the_port(app_script: Path) -> None:
    async with server_process([str(app_script), "normal"]) as server:
        await server.wait_for_line(r"\(2 worker processes")
        pids = await pids_seen(server.port, 2)
        parent = server.process.pid
        assert parent not in pids
        for pid in pids:
            assert psutil.Process(pid).ppid() == parent
    assert server.process.returncode == 0, server.output()


async def test_a_killed_worker_is_restarted(app_script: Path) -> None:
    async with server_process([str(app_script), "normal"]) as server:
        before = await pids_seen(server.port, 2)
        victim = min(before)
        mark = len(server.lines)
        os.kill(victim, signal.SIGKILL)
        match = await server.wait_for_line(
            rf"Worker (\d+) \(pid {victim}\) was killed by SIGKILL; restarting it in",
            start=mark,
        )
        slot = match.group(1)
        new = int(
            (await server.wait_for_line(rf"Worker {slot} serving \(pid (\d+)\)", start=mark)).group(
                1
            )
        )
        assert new not in before
        survivor = (before - {victim}).pop()
        seen = await pids_seen(server.port, {new, survivor})
        assert victim not in seen
    assert server.process.returncode == 0, server.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_closes_every_websocket_with_1001(app_script: Path, signum: int) -> None:
    async with server_process([str(app_script), "normal"]) as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with trio_ws.ClientSession() as session, AsyncExitStack() as stack:
            # Open WebSockets until both workers hold some (bounded), then stop the server.
            sockets: list[tuple[int, trio_ws.ClientWebSocketResponse]] = []
            for _ in range(40):
                ws = await stack.enter_async_context(session.ws_connect(url))
                with trio.fail_after(TIMEOUT):
                    sockets.append((int((await ws.receive()).data), ws))
                if len({pid for pid, _ in sockets}) == 2:
                    break
            assert len({pid for pid, _ in sockets}) == 2, "one worker served every client"
            assert await server.stop(signum) == 0, server.output()
            for _, ws in sockets:
                with trio.fail_after(TIMEOUT):
                    msg = await ws.receive()
                assert msg.type == WSMsgType.CLOSE, msg
                assert msg.data == WSCloseCode.GOING_AWAY
        assert "Killing" not in server.output()


async def test_workers_that_keep_crashing_stop_the_server(app_script: Path) -> None:
    env_args = [str(app_script), "crash-at-startup"]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-u", *env_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    server = ServerProcess(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server._read)
        with trio.fail_after(STOP_TIMEOUT):
            code = await process.wait()
    assert process.stdout is not None
    await process.stdout.aclose()
    output = server.output()
    assert code == 1, output
    assert "startup failed on purpose" in output
    assert output.count("restarting it in") == 2, output
    assert "more than 2 restarts within 60 s: giving up" in output
    assert "RuntimeError" in output
    assert "Running on" not in output


async def test_workers_exit_when_the_supervisor_is_killed(app_script: Path) -> None:
    async with server_process([str(app_script), "normal"]) as server:
        pids = await pids_seen(server.port, 2)
        workers = [psutil.Process(pid) for pid in pids]
        server.process.kill()
        await server.process.wait()

        def gone(process: psutil.Process) -> bool:
            try:
                return bool(process.status() == psutil.STATUS_ZOMBIE)
            except psutil.NoSuchProcess:
                return True

        with trio.fail_after(STOP_TIMEOUT):
            while not all(gone(p) for p in workers):  # noqa: ASYNC110 (no event to wait on)
                await trio.sleep(0.05)
        await server.wait_for_line(r"The supervisor process is gone")


async def test_no_reuseport_falls_back_to_one_process(app_script: Path) -> None:
    async with server_process([str(app_script), "no-reuseport"]) as server:
        output = server.output()
        assert "SO_REUSEPORT is not available on this platform: serving from one process" in (
            output
        )
        seen = {await get_pid(server.port) for _ in range(5)}
        assert seen == {server.process.pid}
    assert server.process.returncode == 0, server.output()
