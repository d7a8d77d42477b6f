"""Fault injection: a chaos client breaks 2,000 connections at every stage; the server serves on.

The server (``fault_server.py``, ``web.run_app`` with handlers of every kind)
runs in its own process, so that its file descriptors and resident memory
are measured alone. Meanwhile, in this process:

* a chaos client opens ``CONNECTIONS`` connections, at most ``CONCURRENCY``
  at a time, and breaks each at one stage (mid request line, mid headers,
  after the request, during a slow handler before the 101, mid 101, right
  after the 101, mid frame, mid close handshake) in one way: a reset
  (SO_LINGER 0), a half-close (FIN, then read until the server closes), or
  malformed bytes for that stage (then read until the server closes);
* ``ECHO_CLIENTS`` well-behaved trio_ws clients echo continuously,
  reconnecting every ``ECHOES_PER_CONNECTION`` messages.

Pass: every echo succeeds, the server process never stops (and still serves
and shuts down cleanly on SIGTERM afterwards), every broken connection is
closed by the server within ``CONNECTION_TIMEOUT``, the server logs no
internal error, and after the storm its open file descriptors are back to
baseline exactly and its RSS within ``RSS_TOLERANCE``. The figures are
printed (``pytest -s``) and written to ``FIGURES_PATH``.

"Mid 101" is seen from the client: the server writes its 101 in one send,
so the client reads part of it and then breaks the connection with the rest
unread.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_ws

pytestmark = [
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "fault_server.py"
FIGURES_PATH = Path("/tmp/trio_ws_server_faults.json")
LOG_PATH = Path("/tmp/trio_ws_server_faults.log")  # the server's log of the last run

CONNECTIONS = int(os.environ.get("TRIO_WS_FAULTS_CONNECTIONS", "2000"))
WARMUP_CONNECTIONS = 400
CONCURRENCY = 48
ECHO_CLIENTS = 20
ECHOES_PER_CONNECTION = 50
CONNECTION_TIMEOUT = 12.0  # the server's slowest answer here is a 6 s body-read timeout
RSS_TOLERANCE = 8 * 1024 * 1024
OBJECT_TOLERANCE = 200  # live objects; a leak of one object per connection would be 2,000
SEED = int(os.environ.get("TRIO_WS_FAULTS_SEED", "1414"))

STAGES = (
    "request_line",
    "headers",
    "after_request",
    "slow_handler",
    "mid_101",
    "after_101",
    "mid_frame",
    "mid_close",
)
ACTIONS = ("reset", "half_close", "malformed")
WS_PATHS = ("/echo", "/slow", "/after", "/forgot", "/sendloop")
HTTP_PATHS = ("/http", "/before", "/bad-header", "/bad-status", "/bad-return", "/body")
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


# ------------------------------------------------------------------ the server


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def server_stats(port: int) -> dict[str, Any]:
    """The server's live objects and trio tasks (its ``/stats`` handler), over one connection."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
    stats: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return stats


async def settled_stats(port: int) -> tuple[dict[str, Any], float]:
    """The server's stats once no connection but the stats one is left, and how long that took.

    A connection's task may still be finishing for a few scheduler passes after
    its socket closed: poll (bounded) until exactly one connection task (the
    one asking) is alive and two readings agree.
    """
    start = time.monotonic()
    previous: dict[str, Any] | None = None
    for _ in range(100):
        stats = await server_stats(port)
        connections = sum("_Server.handle_connection" in name for name in stats["names"])
        if connections == 1 and previous is not None and previous["tasks"] == stats["tasks"]:
            break
        previous = stats
        await trio.sleep(0.05)
    return stats, time.monotonic() - start


async def wait_fds(pid: int, target: int, timeout: float) -> int:
    """Poll (no event crosses the process boundary) until the server holds ``target`` fds."""
    polls = int(timeout / 0.05)
    for _ in range(polls):
        if proc_fds(pid) <= target:
            break
        await trio.sleep(0.05)
    return proc_fds(pid)


# ----------------------------------------------------------------- wire bytes


def request_bytes(path: str, *, upgrade: bool, body_length: int = 0) -> bytes:
    method = "POST" if path == "/body" else "GET"
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: chaos"]
    if upgrade and method == "GET":
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {KEY.decode()}",
        ]
    if method == "POST":
        lines.append(f"Content-Length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame (masked unless told otherwise)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not masked:
        return bytes(head) + payload
    mask = os.urandom(4)
    return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def malformed(stage: str, rng: random.Random) -> bytes:
    """Bytes that break the protocol at ``stage``."""
    if stage == "request_line":
        return rng.choice([b"\x00\xff /\r\n\r\n", b" HTTP/9.9 \x7f\r\n\r\n", b"\r\n\r\n\r\n"])
    if stage == "headers":
        return rng.choice(
            [b"\r\nno colon here\r\n\r\n", b"\r\nX: a\x00b\r\n\r\n", b"\r\n : empty\r\n\r\n"]
        )
    if stage in ("after_request", "slow_handler", "mid_101"):
        return rng.choice([b"\xff\x00garbage\r\n\r\n", b"GET / HTTP/1.1\r\n\x00\r\n\r\n"])
    if stage == "after_101":
        return rng.choice(
            [
                frame(0x3, b"reserved opcode"),
                frame(0x1, b"unmasked", masked=False),
                frame(0x9, b"x" * 126),  # control frame too long
                frame(0x0, b"continuation with no start"),
                frame(0x8, b"x", fin=False),  # fragmented control frame
            ]
        )
    # mid_close
    return rng.choice([frame(0x8, struct.pack("!H", 1005)), frame(0x8, b"\x03")])


# -------------------------------------------------------------- chaos client


class Chaos:
    """Opens connections and breaks each at one stage; counts what happened."""

    def __init__(self, port: int, rng: random.Random) -> None:
        self.port = port
        self.rng = rng
        self.injected: collections.Counter[str] = collections.Counter()
        self.by_stage: dict[str, collections.Counter[str]] = {
            s: collections.Counter() for s in STAGES
        }
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.hung: list[str] = []
        # The unsent rest of a frame cut short (mid_frame), by id of the stream.
        self.rest: dict[int, bytes] = {}

    def plan(self) -> tuple[str, str, str, bool]:
        rng = self.rng
        stage = rng.choice(STAGES)
        action = rng.choice(ACTIONS)
        if stage == "slow_handler":
            path = "/slow"
        elif stage in ("mid_101", "after_101", "mid_frame", "mid_close"):
            path = rng.choice(WS_PATHS)
        else:
            path = rng.choice(WS_PATHS + HTTP_PATHS)
        upgrade = path in WS_PATHS or rng.random() < 0.5
        return stage, action, path, upgrade

    async def run(self, count: int) -> None:
        """Open ``count`` connections, at most ``CONCURRENCY`` at a time."""
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def one(token: object, plan: tuple[str, str, str, bool]) -> None:
            try:
                await self.connection(*plan)
            finally:
                limiter.release_on_behalf_of(token)

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                token = object()
                await limiter.acquire_on_behalf_of(token)
                nursery.start_soon(one, token, self.plan())

    async def connection(self, stage: str, action: str, path: str, upgrade: bool) -> None:
        self.injected[stage] += 1
        self.by_stage[stage][action] += 1
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        try:
            with trio.move_on_after(CONNECTION_TIMEOUT) as scope:
                try:
                    reached = await self.reach(stream, stage, path, upgrade)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    # The server answered an early error and reset: nothing left to break.
                    self.outcomes["reset_by_server_early"] += 1
                    return
                self.outcomes[f"reached_{reached}"] += 1
                await self.fault(stream, stage, action)
            if scope.cancelled_caught:
                self.hung.append(f"{stage}/{action}/{path}")
        finally:
            self.rest.pop(id(stream), None)
            await trio.aclose_forcefully(stream)

    async def reach(self, stream: trio.SocketStream, stage: str, path: str, upgrade: bool) -> str:
        """Drive the connection to ``stage``; what the server had said by then."""
        rng = self.rng
        body_length = 1000
        request = request_bytes(path, upgrade=upgrade, body_length=body_length)
        line_end = request.index(b"\r\n")
        if stage == "request_line":
            await stream.send_all(request[: rng.randrange(1, line_end)])
            return "partial"
        if stage == "headers":
            await stream.send_all(request[: rng.randrange(line_end + 2, len(request) - 3)])
            return "partial"
        if path == "/body":
            request += b"b" * rng.randrange(0, body_length)  # part of the body, maybe all
        await stream.send_all(request)
        if stage == "after_request":
            return "request"
        if stage == "slow_handler":
            # The handler's lookup takes 50-150 ms: break the connection during it.
            await trio.sleep(rng.uniform(0.0, 0.04))
            return "request"
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(rng.randrange(1, 40) if stage == "mid_101" else 4096)
            if not chunk:
                return "eof"
            head += chunk
            if stage == "mid_101":
                return "partial_101"
        assert head.startswith(b"HTTP/1.1 101 "), head[:40]
        if stage == "after_101":
            return "101"
        if stage == "mid_frame":
            # A text frame cut short. Its whole payload ends in bytes that are
            # not UTF-8: "malformed" sends the rest of it (1007), the other
            # faults never do.
            payload = b"a" * rng.randrange(10, 3000) + b"\xff\xfe"
            whole = frame(0x1, payload)
            cut = rng.randrange(1, len(whole) - 2)
            await stream.send_all(whole[:cut])
            self.rest[id(stream)] = whole[cut:]
            return "101"
        # mid_close: the close handshake under way, started by either side.
        if path == "/forgot":
            pass  # the server closes at once: its close frame is on its way
        elif path in ("/after", "/sendloop"):
            if path == "/after":
                await stream.send_all(frame(0x1, b"make it raise"))  # the server closes 1011
            await stream.send_all(frame(0x8, struct.pack("!H", 1000) + b"bye"))
            await stream.receive_some(rng.randrange(1, 8))  # part of what the server sent
            return "101"
        else:
            await stream.send_all(frame(0x8, struct.pack("!H", 1000) + b"bye"))
        if rng.random() < 0.5:
            await stream.receive_some(rng.randrange(1, 4))  # part of the server's close frame
        return "101"

    async def fault(self, stream: trio.SocketStream, stage: str, action: str) -> None:
        if action == "reset":
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
            self.outcomes["reset_by_client"] += 1
            return
        try:
            if action == "half_close":
                await stream.send_eof()
            elif stage == "mid_frame":
                await stream.send_all(self.rest.pop(id(stream)))
            else:
                await stream.send_all(malformed(stage, self.rng))
            while await stream.receive_some(65536):
                pass
            self.outcomes["closed_by_server"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.outcomes["reset_by_server"] += 1


# ------------------------------------------------------------ echo clients


class Echoers:
    def __init__(self, port: int) -> None:
        self.port = port
        self.echoes = 0
        self.connections = 0
        self.slowest = 0.0
        self.done = trio.Event()

    async def client(self, cid: int) -> None:
        n = 0
        async with trio_ws.ClientSession() as session:
            while not self.done.is_set():
                with trio.fail_after(10):
                    ws = await session.ws_connect(f"ws://127.0.0.1:{self.port}/echo")
                self.connections += 1
                try:
                    for _ in range(ECHOES_PER_CONNECTION):
                        if self.done.is_set():
                            break
                        n += 1
                        text = f"client {cid} message {n}"
                        start = trio.current_time()
                        with trio.fail_after(10):
                            await ws.send_str(text)
                            assert await ws.receive_str() == text
                        self.slowest = max(self.slowest, trio.current_time() - start)
                        self.echoes += 1
                finally:
                    with trio.fail_after(10):
                        await ws.close()
                assert ws.close_code == trio_ws.WSCloseCode.OK


# -------------------------------------------------------------------- the test


async def start_server(log: Any) -> trio.Process:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent.parent), env.get("PYTHONPATH", "")])
    return await trio.lowlevel.open_process(
        [sys.executable, str(SERVER_SCRIPT)], stdout=subprocess.PIPE, stderr=log, env=env
    )


async def read_port(proc: trio.Process) -> int:
    assert proc.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await proc.stdout.receive_some(1)
        assert chunk, f"the server exited before listening: {proc.returncode}"
        line += chunk
    assert line.startswith(b"PORT "), line
    return int(line.split()[1])


async def test_chaos_storm_leaves_server_serving() -> None:
    log_path = LOG_PATH
    with log_path.open("wb") as log_file:
        proc = await start_server(log_file)
    figures: dict[str, Any] = {"seed": SEED}
    try:
        with trio.fail_after(180):
            with trio.fail_after(20):
                port = await read_port(proc)
            pid = proc.pid
            fds_start = proc_fds(pid)
            rng = random.Random(SEED)

            # Warm up at the storm's concurrency: every kind of connection, and
            # the echo clients, so that lazily built state (imports, caches)
            # and the allocator's high-water mark are in the baseline.
            warm = Chaos(port, rng)
            warm_echo = Echoers(port)
            async with trio.open_nursery() as nursery:
                for cid in range(ECHO_CLIENTS):
                    nursery.start_soon(warm_echo.client, cid)
                await warm.run(WARMUP_CONNECTIONS)
                warm_echo.done.set()
            assert not warm.hung, warm.hung
            fds_before = await wait_fds(pid, fds_start, 15)
            assert fds_before == fds_start
            stats_before, _ = await settled_stats(port)
            await wait_fds(pid, fds_before, 5)
            rss_before = proc_rss(pid)

            # The storm.
            chaos = Chaos(port, rng)
            echoers = Echoers(port)
            started = time.monotonic()
            async with trio.open_nursery() as nursery:
                for cid in range(ECHO_CLIENTS):
                    nursery.start_soon(echoers.client, cid)
                await chaos.run(CONNECTIONS)
                echoers.done.set()
            storm_seconds = time.monotonic() - started
            assert proc.returncode is None, "the server stopped"

            fds_after = await wait_fds(pid, fds_before, 15)
            stats_after, settle_seconds = await settled_stats(port)
            await wait_fds(pid, fds_before, 5)
            rss_after = proc_rss(pid)

            # Still serving: one more echo, then a clean shutdown on SIGTERM.
            async with trio_ws.ClientSession() as session:
                with trio.fail_after(10):
                    async with session.ws_connect(f"ws://127.0.0.1:{port}/echo") as ws:
                        await ws.send_str("after the storm")
                        assert await ws.receive_str() == "after the storm"
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                returncode = await proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()

    log = await trio.Path(log_path).read_text(errors="replace")
    levels = collections.Counter(line.split(" ", 1)[0] for line in log.splitlines())
    figures.update(
        connections_injected=sum(chaos.injected.values()),
        warmup_connections=sum(warm.injected.values()),
        faults_by_stage={s: dict(chaos.by_stage[s]) for s in STAGES},
        outcomes=dict(chaos.outcomes),
        hung=chaos.hung,
        echo_clients=ECHO_CLIENTS,
        echoes_completed=echoers.echoes,
        echo_connections=echoers.connections,
        slowest_echo_ms=round(echoers.slowest * 1000, 1),
        storm_seconds=round(storm_seconds, 1),
        fds_before=fds_before,
        fds_after=fds_after,
        rss_before_kib=rss_before // 1024,
        rss_after_kib=rss_after // 1024,
        rss_growth_kib=(rss_after - rss_before) // 1024,
        server_tasks_before=stats_before["tasks"],
        server_tasks_after=stats_after["tasks"],
        server_objects_before=stats_before["objects"],
        server_objects_after=stats_after["objects"],
        server_task_names_after=stats_after["names"],
        server_tasks_settle_seconds=round(settle_seconds, 3),
        server_log_lines=dict(levels),
        server_internal_errors=log.count("Internal error"),
        server_returncode=returncode,
    )
    await trio.Path(FIGURES_PATH).write_text(json.dumps(figures, indent=2) + "\n")
    print("\nserver fault injection:", json.dumps(figures, indent=2))

    assert not chaos.hung, chaos.hung
    assert sum(chaos.injected.values()) == CONNECTIONS
    assert all(chaos.injected[s] > 0 for s in STAGES)
    assert echoers.echoes > 0
    assert fds_after == fds_before
    assert stats_after["tasks"] == stats_before["tasks"], stats_after["names"]
    assert stats_after["objects"] - stats_before["objects"] <= OBJECT_TOLERANCE
    assert rss_after - rss_before <= RSS_TOLERANCE
    assert figures["server_internal_errors"] == 0, log[-3000:]
    assert returncode == 0
