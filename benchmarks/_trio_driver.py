"""Scenario driver for client implementations that run on trio."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import trio

from benchmarks._common import (
    Outcome,
    Params,
    base_scenario,
    bcast_command,
    emit,
    outcome,
    text_pool,
    wait_for_harness,
)
from benchmarks._conn import CONNECT_CONCURRENCY, HELLO, Conn, Connect


async def _pingpong(conn: Conn, payload: bytes, count: int, max_time: float) -> tuple[int, float]:
    send = conn.send_bytes
    recv = conn.recv_bytes
    perf = time.perf_counter
    start = perf()
    deadline = start + max_time
    done = 0
    while done < count:
        await send(payload)
        await recv()
        done += 1
        if perf() > deadline:
            break
    return done, perf() - start


class _Window:
    """Credit for messages in flight: ``take()`` waits only when none is left.

    ``trio.Semaphore.acquire`` yields to the scheduler even when a permit is free, which
    would add one scheduler pass per message to every trio client and measure the driver
    instead of the library.  This waits (and so yields) only when the window is full,
    like ``asyncio.Semaphore`` in the asyncio driver; whether a send yields is left to
    the library under test.
    """

    __slots__ = ("_wakeup", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._wakeup: trio.Event | None = None

    async def take(self) -> None:
        while self.free <= 0:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        self.free -= 1

    def give(self) -> None:
        self.free += 1
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()


async def _pipeline(
    conn: Conn, payloads: list[bytes] | list[str], count: int, window: int, max_time: float
) -> tuple[int, float]:
    text = isinstance(payloads[0], str)
    send = conn.send_text if text else conn.send_bytes
    recv = conn.recv_text if text else conn.recv_bytes
    npay = len(payloads)
    credit = _Window(window)
    perf = time.perf_counter
    start = perf()
    deadline = start + max_time
    sent = received = 0
    target = count

    async def reader() -> None:
        nonlocal received
        while received < target:
            await recv()
            received += 1
            credit.give()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        while sent < count:
            await credit.take()
            await send(payloads[sent % npay])  # type: ignore[arg-type]
            sent += 1
            if sent & 63 == 0 and perf() > deadline:
                break
        target = sent
        if received >= target:
            nursery.cancel_scope.cancel()
    return received, perf() - start


async def run(connect: Connect, url: str, scenario: str, p: Params) -> Outcome:
    """Run ``scenario`` (a ``wss_*`` one as its plain counterpart: the URL says wss)."""
    kind = base_scenario(scenario)
    if kind in ("rtt64", "big1m"):
        payload = bytes(i & 0xFF for i in range(p.size))
        async with connect(url, False) as conn:
            await _pingpong(conn, payload, max(1, p.count // 20), p.max_time)
            done, elapsed = await _pingpong(conn, payload, p.count, p.max_time)
        return outcome(scenario, p, done, elapsed)

    if kind in ("pipe64", "deflate"):
        payloads: list[bytes] | list[str]
        if kind == "deflate":
            payloads = text_pool(p.size)
        else:
            payloads = [bytes(i & 0xFF for i in range(p.size))]
        async with connect(url, p.compress) as conn:
            await _pipeline(conn, payloads, max(1, p.count // 20), p.window, p.max_time)
            done, elapsed = await _pipeline(conn, payloads, p.count, p.window, p.max_time)
        return outcome(scenario, p, done, elapsed)

    if kind == "fanout":
        return await _fanout(connect, url, p)

    if kind == "handshake":
        payload = b"h" * p.size
        perf = time.perf_counter
        start = perf()
        deadline = start + p.max_time
        done = 0
        while done < p.count and perf() < deadline:
            async with connect(url, False) as conn:
                await conn.send_bytes(payload)
                await conn.recv_bytes()
            done += 1
        return outcome(scenario, p, done, perf() - start)

    if kind in ("idle", "idle_deflate"):
        return await _idle(connect, url, scenario, p)

    raise SystemExit(f"unknown scenario {scenario}")


async def _fanout(connect: Connect, url: str, p: Params) -> Outcome:
    gate = trio.Semaphore(CONNECT_CONCURRENCY)
    all_ready = trio.Event()
    finished = trio.Event()
    counts = [0] * p.conns
    ready = 0
    remaining = p.conns
    start = end = 0.0
    deadline = 0.0

    async def member(i: int) -> None:
        nonlocal ready, remaining, start, end, deadline
        async with AsyncExitStack() as stack:
            async with gate:
                conn = await stack.enter_async_context(connect(url, False))
                await conn.send_bytes(HELLO)
                await conn.recv_bytes()
            ready += 1
            if ready == p.conns:
                deadline = trio.current_time() + p.max_time
                all_ready.set()
            await all_ready.wait()
            if i == 0:
                start = time.perf_counter()
                await conn.send_text(bcast_command(p.count, p.size))
            with trio.move_on_at(deadline):
                recv = conn.recv_bytes
                for _ in range(p.count):
                    await recv()
                    counts[i] += 1
            remaining -= 1
            if remaining == 0:
                end = time.perf_counter()
                finished.set()
            await finished.wait()

    with trio.fail_after(p.max_time + 120):
        async with trio.open_nursery() as nursery:
            for i in range(p.conns):
                nursery.start_soon(member, i)
    return outcome("fanout", p, sum(counts), end - start)


async def _idle(connect: Connect, url: str, scenario: str, p: Params) -> Outcome:
    """Open ``p.conns`` connections that each did one echo, and hold them open.

    Without compression the echo is ``HELLO``; with it (``idle_deflate``) a ``p.size``
    character compressible text, so both zlib streams of every connection exist.
    """
    texts = text_pool(p.size) if p.compress else []
    gate = trio.Semaphore(CONNECT_CONCURRENCY)
    release = trio.Event()

    async def member(counter: list[int], expected: int, ready: trio.Event) -> None:
        async with AsyncExitStack() as stack:
            async with gate:
                conn = await stack.enter_async_context(connect(url, p.compress))
                if texts:
                    await conn.send_text(texts[counter[0] % len(texts)])
                    await conn.recv_text()
                else:
                    await conn.send_bytes(HELLO)
                    await conn.recv_bytes()
            counter[0] += 1
            if counter[0] == expected:
                ready.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        warm_ready = trio.Event()
        nursery.start_soon(member, [0], 1, warm_ready)
        await warm_ready.wait()
        emit("PHASE base")
        await trio.to_thread.run_sync(wait_for_harness)
        all_ready = trio.Event()
        with trio.fail_after(p.max_time):
            counter = [0]
            for _ in range(p.conns):
                nursery.start_soon(member, counter, p.conns, all_ready)
            await all_ready.wait()
        emit("PHASE loaded")
        await trio.to_thread.run_sync(wait_for_harness)
        release.set()
    return outcome(scenario, p, p.conns, 1.0)
