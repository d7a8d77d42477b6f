"""Scenario driver for client implementations that run on asyncio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any

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


async def _pipeline(
    conn: Conn, payloads: list[bytes] | list[str], count: int, window: int, max_time: float
) -> tuple[int, float]:
    text = isinstance(payloads[0], str)
    send = conn.send_text if text else conn.send_bytes
    recv = conn.recv_text if text else conn.recv_bytes
    npay = len(payloads)
    credit = asyncio.Semaphore(window)
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
            credit.release()

    task = asyncio.ensure_future(reader())
    try:
        while sent < count:
            await credit.acquire()
            await send(payloads[sent % npay])  # type: ignore[arg-type]
            sent += 1
            if sent & 63 == 0 and perf() > deadline:
                break
        target = sent
        if received >= target:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    finally:
        task.cancel()
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
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    all_ready = asyncio.Event()
    finished = asyncio.Event()
    counts = [0] * p.conns
    ready = 0
    remaining = p.conns
    start = end = 0.0
    deadline = 0.0

    async def receive_all(conn: Conn, i: int) -> None:
        recv = conn.recv_bytes
        for _ in range(p.count):
            await recv()
            counts[i] += 1

    async def member(i: int) -> None:
        nonlocal ready, remaining, start, end, deadline
        async with AsyncExitStack() as stack:
            async with gate:
                conn = await stack.enter_async_context(connect(url, False))
                await conn.send_bytes(HELLO)
                await conn.recv_bytes()
            ready += 1
            if ready == p.conns:
                deadline = loop.time() + p.max_time
                all_ready.set()
            await all_ready.wait()
            if i == 0:
                start = time.perf_counter()
                await conn.send_text(bcast_command(p.count, p.size))
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(receive_all(conn, i), max(0.0, deadline - loop.time()))
            remaining -= 1
            if remaining == 0:
                end = time.perf_counter()
                finished.set()
            await finished.wait()

    await asyncio.wait_for(asyncio.gather(*(member(i) for i in range(p.conns))), p.max_time + 120)
    return outcome("fanout", p, sum(counts), end - start)


async def _ready_or_failed(
    ready: asyncio.Event, tasks: Sequence[asyncio.Future[None]], timeout: float
) -> None:
    """Wait until ``ready`` is set; raise the error of a task that failed first.

    The members of ``idle`` only end early by failing (they wait for the release), and a
    failed member never sets ``ready``: waiting on ``ready`` alone would hang the run
    instead of failing it (trio's nursery does this by itself). Raises
    ``asyncio.TimeoutError`` after ``timeout`` seconds.
    """
    waiter: asyncio.Future[Any] = asyncio.ensure_future(ready.wait())
    watched: list[asyncio.Future[Any]] = [waiter, *tasks]
    try:
        done, _ = await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if waiter in done:
        return
    for task in done:
        task.result()  # a failed member: raise its error
    raise asyncio.TimeoutError(f"connections not ready within {timeout} s")


async def _idle(connect: Connect, url: str, scenario: str, p: Params) -> Outcome:
    """Open ``p.conns`` connections that each did one echo, and hold them open.

    Without compression the echo is ``HELLO``; with it (``idle_deflate``) a ``p.size``
    character compressible text, so both zlib streams of every connection exist.
    """
    texts = text_pool(p.size) if p.compress else []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    release = asyncio.Event()

    async def member(counter: list[int], expected: int, ready: asyncio.Event) -> None:
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

    warm_ready = asyncio.Event()
    tasks = [asyncio.ensure_future(member([0], 1, warm_ready))]
    await _ready_or_failed(warm_ready, tasks, p.max_time)
    emit("PHASE base")
    await asyncio.to_thread(wait_for_harness)
    all_ready = asyncio.Event()
    counter = [0]
    tasks += [asyncio.ensure_future(member(counter, p.conns, all_ready)) for _ in range(p.conns)]
    await _ready_or_failed(all_ready, tasks, p.max_time)
    emit("PHASE loaded")
    await asyncio.to_thread(wait_for_harness)
    release.set()
    await asyncio.gather(*tasks)
    return outcome(scenario, p, p.conns, 1.0)
