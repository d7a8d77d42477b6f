"""Scale-out benchmark: hub fan-out deliveries/s, one process vs worker processes vs Redis.

Standalone (not part of ``python -m benchmarks``)::

    .venv/bin/python benchmarks/scaleout.py                  # every configuration, ~1 min
    .venv/bin/python benchmarks/scaleout.py --configs single,workers2 --subscribers 100

Configurations (each a fresh set of server processes built on :mod:`trio_ws.hub`):

* ``single``: one process, in-process hub (no Redis);
* ``single-redis``: one process, hub on Redis (the cost of the Redis round trip alone);
* ``workers2``: ``run_app(..., workers=2)`` on one port, hubs on Redis;
* ``procs2``: two separate server processes on two ports, hubs on Redis; the subscribers are
  split evenly between them.

Method: ``--subscribers`` WebSockets subscribe to one topic. A publisher connection asks the
server it reached (``pub B SIZE``) to publish ``B`` messages of ``SIZE`` bytes to the topic,
waits until every subscriber has received all of them, and repeats (bursts keep every queue
under the hub's ``queue_size``, so nothing is dropped) until ``--messages`` were published or
``--max-time`` passed. The figure is deliveries (messages x subscribers) per second over the
timed bursts, after one warm-up burst. Subscribers are raw sockets that only count bytes, so
the client side costs as little as possible; on a 2-core machine it still competes with the
servers and Redis for the CPU, so read the figures as a comparison between configurations on
the same machine, not as a capacity.

Without ``--redis URL`` the script starts its own ``redis-server`` on a free port (with
``--save '' --appendonly no``) for the Redis configurations, and skips them if it has none.
"""

from __future__ import annotations

import argparse
import base64
import functools
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

if __package__ in (None, ""):  # run as a script: make trio_ws importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_ws
from trio_ws import WSMsgType, web
from trio_ws.hub import Hub, RedisBackend, run_app

TOPIC = "bench"
CONFIGS = ("single", "single-redis", "workers2", "procs2")
STARTUP_TIMEOUT = 30.0


# ------------------------------------------------------------------------- server side


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="scaleout.py _serve")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis")
    parser.add_argument("--queue-size", type=int, default=1024)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    hub = Hub(
        RedisBackend(args.redis) if args.redis else None,
        queue_size=args.queue_size,
        overflow="drop",
    )

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        if request.query_string == "sub":
            await ws.send_str(f"pid {os.getpid()}")
            with hub.subscribed(ws, TOPIC):
                async for _ in ws:
                    pass
            return ws
        async for msg in ws:  # the publisher
            if msg.type == WSMsgType.TEXT and msg.data.startswith("pub "):
                _, count, size = msg.data.split()
                payload = b"b" * int(size)
                for _ in range(int(count)):
                    await hub.publish(TOPIC, payload)
                stats = hub.statistics()
                await ws.send_str(f"done {stats.dropped} {stats.backend.get('remote_dropped', 0)}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    run_app(
        app,
        hub,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        print=functools.partial(print, flush=True),
    )


# ------------------------------------------------------------------------- client side


def frame_size(size: int) -> int:
    """Bytes on the wire for one unmasked server-to-client BINARY message of ``size`` bytes."""
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


@dataclass
class Progress:
    """What every subscriber must have received, and who got there."""

    subscribers: int
    target: int = 0  # bytes each subscriber must have counted
    reached: int = 0
    done: trio.Event = field(default_factory=trio.Event)

    def aim(self, target: int) -> None:
        self.target = target
        self.reached = 0
        self.done = trio.Event()


class Subscriber:
    """A raw WebSocket connection that counts the bytes of the frames it receives."""

    def __init__(self, stream: trio.SocketStream, pid: str, leftover: int) -> None:
        self.stream = stream
        self.pid = pid
        self.count = leftover
        self.counted_target = -1

    @classmethod
    async def connect(cls, port: int) -> Subscriber:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                "GET /ws?sub HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 2:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        length = rest[1] & 0x7F  # the first frame: "pid N", a short unmasked TEXT frame
        while len(rest) < 2 + length:
            rest += await stream.receive_some(65536)
        pid = rest[2 : 2 + length].decode()
        return cls(stream, pid, len(rest) - 2 - length)

    async def run(self, progress: Progress) -> None:
        while True:
            self.check(progress)
            chunk = await self.stream.receive_some(262144)
            if not chunk:
                return
            self.count += len(chunk)

    def check(self, progress: Progress) -> None:
        if self.count >= progress.target and self.counted_target != progress.target:
            self.counted_target = progress.target
            progress.reached += 1
            if progress.reached == progress.subscribers:
                progress.done.set()


@dataclass
class Result:
    config: str
    subscribers: int
    messages: int
    seconds: float
    spread: dict[str, int]
    dropped: str

    @property
    def rate(self) -> float:
        return self.messages * self.subscribers / self.seconds


async def measure(config: str, ports: list[int], args: argparse.Namespace) -> Result:
    per_message = frame_size(args.size)
    progress = Progress(args.subscribers)
    async with trio_ws.ClientSession() as session, AsyncExitStack() as stack:
        subscribers = []
        for index in range(args.subscribers):
            sub = await Subscriber.connect(ports[index % len(ports)])
            stack.push_async_callback(sub.stream.aclose)
            subscribers.append(sub)
        publisher = await stack.enter_async_context(
            session.ws_connect(f"ws://127.0.0.1:{ports[0]}/ws?pub")
        )
        # In the Redis configurations, let each server's listener settle before timing.
        await trio.sleep(0.5)
        async with trio.open_nursery() as nursery:
            for sub in subscribers:
                nursery.start_soon(sub.run, progress)
            published = 0
            report = ""

            async def burst() -> None:
                nonlocal published, report
                published += args.burst
                progress.aim(published * per_message)
                for sub in subscribers:
                    sub.check(progress)
                await publisher.send_str(f"pub {args.burst} {args.size}")
                with trio.fail_after(60):
                    report = (await publisher.receive_str()).removeprefix("done ")
                    await progress.done.wait()

            await burst()  # warm-up
            start = time.perf_counter()
            timed = 0
            while timed < args.messages and time.perf_counter() - start < args.max_time:
                await burst()
                timed += args.burst
            seconds = time.perf_counter() - start
            nursery.cancel_scope.cancel()
    spread = dict(Counter(sub.pid for sub in subscribers))
    return Result(config, args.subscribers, timed, seconds, spread, report)


# ------------------------------------------------------------------------- processes


@asynccontextmanager
async def server(extra: list[str]) -> AsyncIterator[int]:
    """Start ``scaleout.py _serve extra...``; yield its port; SIGTERM it afterwards."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-u", __file__, "_serve", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            while not (match := re.search(rb"Running on http://[^:]+:(\d+)", output)):
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    raise RuntimeError(f"server exited:\n{output.decode(errors='replace')}")
                output += chunk
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_discard, process.stdout)
            yield int(match.group(1))
            process.terminate()
            with trio.fail_after(30):
                await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()


async def _discard(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass


@asynccontextmanager
async def redis_server() -> AsyncIterator[str | None]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(binary, os.X_OK):
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = await trio.lowlevel.open_process(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            while b"Ready to accept connections" not in output:
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    raise RuntimeError(output.decode(errors="replace"))
                output += chunk
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_discard, process.stdout)
            yield f"redis://127.0.0.1:{port}"
            process.terminate()
            await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()


async def run_config(config: str, redis: str | None, args: argparse.Namespace) -> Result:
    queue = ["--queue-size", str(max(1024, 2 * args.burst))]
    async with AsyncExitStack() as stack:
        if config == "single":
            ports = [await stack.enter_async_context(server(queue))]
        elif config == "single-redis":
            assert redis is not None
            ports = [await stack.enter_async_context(server([*queue, "--redis", redis]))]
        elif config == "workers2":
            assert redis is not None
            extra = [*queue, "--redis", redis, "--workers", "2"]
            ports = [await stack.enter_async_context(server(extra))]
        else:
            assert redis is not None
            ports = [
                await stack.enter_async_context(server([*queue, "--redis", redis]))
                for _ in range(2)
            ]
        return await measure(config, ports, args)


async def bench(args: argparse.Namespace) -> None:
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configurations: {', '.join(sorted(unknown))}")
    print(
        f"# scaleout: {args.subscribers} subscribers, {args.size}-byte messages, "
        f"bursts of {args.burst}, up to {args.messages} messages or {args.max_time:g} s; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    print("| configuration | deliveries/s | messages | subscribers per process | dropped |")
    print("|---|---:|---:|---|---|")
    async with AsyncExitStack() as stack:
        redis = args.redis
        if redis is None and any(c != "single" for c in configs):
            redis = await stack.enter_async_context(redis_server())
        for config in configs:
            if config != "single" and redis is None:
                print(f"| {config} | skipped: no redis-server | | | |", flush=True)
                continue
            result = await run_config(config, redis, args)
            spread = ", ".join(str(n) for n in sorted(result.spread.values(), reverse=True))
            print(
                f"| {config} | {result.rate:,.0f} | {result.messages} | {spread} "
                f"| {result.dropped} |",
                flush=True,
            )


def main() -> None:
    if sys.argv[1:2] == ["_serve"]:
        serve_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--max-time", type=float, default=10.0)
    parser.add_argument("--redis", metavar="URL", help="use this Redis instead of starting one")
    trio.run(bench, parser.parse_args())


if __name__ == "__main__":
    main()
