"""Fixed fast load client (picows, callback based) used to drive the server benchmarks."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from contextlib import suppress

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    ws_connect,
)

from benchmarks._common import (
    DEFLATE_OFFER,
    MAX_MSG_SIZE,
    Deflate,
    NotNegotiated,
    Outcome,
    Params,
    base_scenario,
    bcast_command,
    client_args,
    deflate_from_response,
    emit,
    outcome,
    raise_fd_limit,
    text_pool,
    wait_for_harness,
)

_BINARY = WSMsgType.BINARY
_TEXT = WSMsgType.TEXT
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE

#: How many connection attempts run at once (below every server's default listen backlog).
CONNECT_CONCURRENCY = 50


def _ignore(data: bytes) -> None:
    return None


class Client(WSListener):  # type: ignore[misc]
    """One connection; every complete message is passed to ``on_message``."""

    def __init__(self, codec: Deflate | None) -> None:
        self.codec = codec
        self.transport: WSTransport | None = None
        self.on_message: Callable[[bytes], None] = _ignore
        self.parts: list[bytes] | None = None
        self.first_rsv1 = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt is _BINARY or mt is _TEXT:
            if not frame.fin:
                self.first_rsv1 = frame.rsv1
                self.parts = [frame.get_payload_as_bytes()]
            elif frame.rsv1:
                assert self.codec is not None
                self.on_message(self.codec.decompress(frame.get_payload_as_bytes()))
            else:
                self.on_message(frame.get_payload_as_bytes())
        elif mt is _CONT:
            assert self.parts is not None
            self.parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                payload = b"".join(self.parts)
                self.parts = None
                if self.first_rsv1:
                    assert self.codec is not None
                    payload = self.codec.decompress(payload)
                self.on_message(payload)
        elif mt is _CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def send(self, mt: WSMsgType, payload: bytes) -> None:
        assert self.transport is not None
        if self.codec is not None:
            self.transport.send(mt, self.codec.compress(payload), rsv1=True)
        else:
            self.transport.send(mt, payload)

    async def echo(self, mt: WSMsgType, payload: bytes) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.on_message = fut.set_result
        self.send(mt, payload)
        try:
            return await fut
        finally:
            self.on_message = _ignore

    async def close(self) -> None:
        assert self.transport is not None
        if not self.transport.is_disconnected:
            if not self.transport.is_close_frame_sent:
                self.transport.send_close(WSCloseCode.OK)
            try:
                await asyncio.wait_for(self.transport.wait_disconnected(), 10)
            except asyncio.TimeoutError:
                self.transport.disconnect(graceful=False)


async def connect(url: str, compress: bool, ssl_context: ssl.SSLContext | None = None) -> Client:
    """Open one connection; with ``compress``, fail unless permessage-deflate was negotiated."""

    def factory(request: WSUpgradeRequest, response: WSUpgradeResponse) -> Client:
        codec = None
        if compress:
            codec = deflate_from_response(response.headers.get("Sec-WebSocket-Extensions"))
        return Client(codec)

    headers = {"Sec-WebSocket-Extensions": DEFLATE_OFFER} if compress else None
    _, client = await ws_connect(
        factory,
        url,
        max_frame_size=MAX_MSG_SIZE,
        extra_headers=headers,
        websocket_handshake_timeout=10,
        ssl_context=ssl_context,
    )
    assert isinstance(client, Client)
    if compress and client.codec is None:
        raise NotNegotiated("the picows load client", "the server did not accept it")
    return client


async def connect_many(
    url: str, n: int, compress: bool = False, texts: list[bytes] | None = None
) -> list[Client]:
    """Open ``n`` connections (bounded concurrency); each has done one echo on return.

    The echo is ``hello`` (binary), or with ``texts`` one of them as a text message.
    """
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened = 0

    async def one() -> Client:
        nonlocal opened
        async with gate:
            client = await connect(url, compress)
            if texts:
                await client.echo(_TEXT, texts[opened % len(texts)])
            else:
                await client.echo(_BINARY, b"hello")
            opened += 1
            return client

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def close_many(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def pingpong(
    client: Client, payload: bytes, count: int, max_time: float
) -> tuple[int, float]:
    """Sequential round trips; returns (done, elapsed)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    done = 0
    start = time.perf_counter()
    deadline = start + max_time
    perf = time.perf_counter

    def on_message(data: bytes) -> None:
        nonlocal done
        done += 1
        if done >= count or perf() > deadline:
            fut.set_result(None)
        else:
            client.send(_BINARY, payload)

    client.on_message = on_message
    client.send(_BINARY, payload)
    await fut
    client.on_message = _ignore
    return done, perf() - start


async def pipeline(
    client: Client, payloads: list[bytes], mt: WSMsgType, count: int, window: int, max_time: float
) -> tuple[int, float]:
    """Keep ``window`` messages in flight; returns (echoes received, elapsed)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    sent = received = 0
    stopping = False
    npay = len(payloads)
    start = time.perf_counter()
    deadline = start + max_time
    perf = time.perf_counter

    def on_message(data: bytes) -> None:
        nonlocal sent, received, stopping
        received += 1
        if not stopping:
            if sent >= count or (received & 63 == 0 and perf() > deadline):
                stopping = True
            else:
                client.send(mt, payloads[sent % npay])
                sent += 1
        if stopping and received >= sent:
            fut.set_result(None)

    client.on_message = on_message
    for _ in range(min(window, count)):
        client.send(mt, payloads[sent % npay])
        sent += 1
    await fut
    client.on_message = _ignore
    return received, perf() - start


async def run(
    url: str, scenario: str, p: Params, ssl_context: ssl.SSLContext | None = None
) -> Outcome:
    """Run ``scenario`` (a ``wss_*`` one as its plain counterpart, over TLS)."""
    kind = base_scenario(scenario)
    if kind in ("rtt64", "big1m"):
        client = await connect(url, False, ssl_context)
        payload = bytes(i & 0xFF for i in range(p.size))
        await pingpong(client, payload, max(1, p.count // 20), p.max_time)
        done, elapsed = await pingpong(client, payload, p.count, p.max_time)
        await client.close()
        return outcome(scenario, p, done, elapsed)

    if kind in ("pipe64", "deflate"):
        client = await connect(url, p.compress, ssl_context)
        if kind == "deflate":
            payloads = [t.encode() for t in text_pool(p.size)]
            mt = _TEXT
        else:
            payloads = [bytes(i & 0xFF for i in range(p.size))]
            mt = _BINARY
        await pipeline(client, payloads, mt, max(1, p.count // 20), p.window, p.max_time)
        done, elapsed = await pipeline(client, payloads, mt, p.count, p.window, p.max_time)
        await client.close()
        return outcome(scenario, p, done, elapsed)

    if kind == "fanout":
        clients = await connect_many(url, p.conns)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        counts = [0] * p.conns
        remaining = p.conns
        per_client = p.count

        def counter(i: int) -> Callable[[bytes], None]:
            def on_message(data: bytes) -> None:
                nonlocal remaining
                counts[i] += 1
                if counts[i] == per_client:
                    remaining -= 1
                    if remaining == 0:
                        fut.set_result(None)

            return on_message

        for i, c in enumerate(clients):
            c.on_message = counter(i)
        start = time.perf_counter()
        clients[0].send(_TEXT, bcast_command(p.count, p.size).encode())
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), p.max_time)
        elapsed = time.perf_counter() - start
        await close_many(clients)
        return outcome(scenario, p, sum(counts), elapsed)

    if kind == "handshake":
        payload = b"h" * p.size
        perf = time.perf_counter
        start = perf()
        deadline = start + p.max_time
        done = 0
        while done < p.count and perf() < deadline:
            client = await connect(url, False)
            await client.echo(_BINARY, payload)
            await client.close()
            done += 1
        return outcome(scenario, p, done, perf() - start)

    if kind in ("idle", "idle_deflate"):
        texts = [t.encode() for t in text_pool(p.size)] if p.compress else None
        warm = await connect_many(url, 1, p.compress, texts)
        emit("PHASE base")
        await asyncio.to_thread(wait_for_harness)
        clients = await asyncio.wait_for(connect_many(url, p.conns, p.compress, texts), p.max_time)
        emit("PHASE loaded")
        await asyncio.to_thread(wait_for_harness)
        await close_many(clients + warm)
        return outcome(scenario, p, len(clients), 1.0)

    raise SystemExit(f"unknown scenario {scenario}")


def main() -> None:
    url, scenario, params, ssl_context = client_args()
    raise_fd_limit()
    asyncio.run(run(url, scenario, params, ssl_context)).emit()


if __name__ == "__main__":
    main()
