"""The other end of a combination case: an echoing peer, in either role, from four implementations.

* ``websockets``: its asyncio implementation (``websockets.asyncio``), in an
  asyncio event loop on a thread of its own (:class:`AsyncioThread`); it can
  send a message in fragments (an async iterable) and a ping between them.
* ``aiohttp``: client and server, in the same asyncio thread; it cannot fragment.
* ``trio_ws``: trio_ws itself, in the test's trio loop.
* ``wsproto``: a bare wsproto connection over a trio socket; it fragments and
  interleaves pings between fragments, and is the only peer that can ask for
  ``server_no_context_takeover`` towards an aiohttp-style client offer.

Every peer echoes each TEXT/BINARY message it receives (same type, same data),
checks its sha256 first (a mismatch closes with 4001), and can add: a ping or
an unsolicited pong before each echo, the echo in fragments, a ping between
fragments, pings every few milliseconds, a heartbeat. It records what happened
in a :class:`Report`; the test checks it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

import trio_ws
from trio_ws import WSMsgType, web

from ._payload import Data, MiB, check_body

HOST = "127.0.0.1"
MAX_SIZE = 8 * MiB
T = TypeVar("T")

PEERS = ("websockets", "aiohttp", "trio_ws", "wsproto")
#: Peers that can send a message in several frames.
FRAGMENTING = ("websockets", "wsproto")
#: Peers with a heartbeat of their own.
HEARTBEATING = ("websockets", "aiohttp", "trio_ws")


@dataclass(frozen=True)
class PeerConfig:
    """How the peer behaves. ``compression`` is ``"off"``, ``"on"`` or ``"notakeover"``."""

    compression: str = "on"
    fragment: bool = False
    control_before_echo: str | None = None  # "ping" or "pong"
    control_between_fragments: bool = False
    ping_every: float | None = None
    heartbeat: float | None = None
    seed: int = 0


@dataclass
class Report:
    """What the peer saw: messages echoed, the close code it received, anything wrong."""

    echoed: int = 0
    close_code: int | None = None
    errors: list[str] = field(default_factory=list)
    finished: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)

    def finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    async def wait(self) -> None:
        await wait_future(self.finished)


def split(message: Data, rng: random.Random) -> list[Any]:
    """``message`` cut into 2 to 5 pieces at random places (empty pieces included)."""
    n = len(message)
    cuts = sorted(rng.randint(0, n) for _ in range(rng.randint(1, 4)))
    return [message[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


# ------------------------------------------------------------------ asyncio side


class AsyncioThread:
    """An asyncio event loop running on its own thread, for the asyncio peers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="asyncio-peer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.submit(drain()).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Wait in trio for a future completed on another thread; cancelling cancels it."""
    if not future.done():
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: object) -> None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
    return future.result()


async def _aio_pinger(ping: Callable[[], Awaitable[Any]], every: float, seed: int) -> None:
    rng = random.Random(seed)
    try:
        while True:
            await asyncio.sleep(every * rng.uniform(0.5, 1.5))
            await ping()
    except Exception:
        return  # the connection closed


def _websockets_kwargs(cfg: PeerConfig, server: bool) -> dict[str, Any]:
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
        ServerPerMessageDeflateFactory,
    )

    kwargs: dict[str, Any] = {
        "max_size": MAX_SIZE,
        "ping_interval": cfg.heartbeat,
        # The pong must come back within this; generous, so only a lost pong closes.
        "ping_timeout": None if cfg.heartbeat is None else max(1.0, 5 * cfg.heartbeat),
        "compression": "deflate" if cfg.compression == "on" else None,
    }
    if cfg.compression == "notakeover":
        factory = ServerPerMessageDeflateFactory if server else ClientPerMessageDeflateFactory
        kwargs["extensions"] = [
            factory(server_no_context_takeover=True, client_no_context_takeover=True)
        ]
    return kwargs


async def _websockets_echo(conn: Any, cfg: PeerConfig, report: Report) -> None:
    rng = random.Random(cfg.seed)
    pinger = (
        asyncio.ensure_future(_aio_pinger(conn.ping, cfg.ping_every, cfg.seed))
        if cfg.ping_every
        else None
    )

    async def with_pings(chunks: list[Any]) -> AsyncIterator[Any]:
        for i, chunk in enumerate(chunks):
            if i:
                await conn.ping()  # websockets wants a distinct payload per ping: its own
            yield chunk

    try:
        async for message in conn:
            problem = check_body(message)
            if problem:
                report.errors.append(problem)
                await conn.close(4001, "bad message")
                return
            if cfg.control_before_echo == "ping":
                await conn.ping()
            elif cfg.control_before_echo == "pong":
                await conn.pong(b"unsolicited")
            if cfg.fragment:
                chunks = split(message, rng)
                await conn.send(with_pings(chunks) if cfg.control_between_fragments else chunks)
            else:
                await conn.send(message)
            report.echoed += 1
    except Exception as exc:  # ConnectionClosedError included
        report.errors.append(f"websockets: {exc!r}")
    finally:
        if pinger is not None:
            pinger.cancel()
        received = conn.protocol.close_rcvd
        report.close_code = received.code if received is not None else None
        report.finish()


async def _aiohttp_echo(ws: Any, cfg: PeerConfig, report: Report) -> None:
    import aiohttp

    pinger = (
        asyncio.ensure_future(_aio_pinger(lambda: ws.ping(b"p"), cfg.ping_every, cfg.seed))
        if cfg.ping_every
        else None
    )
    try:
        async for msg in ws:
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                report.errors.append(f"aiohttp: {msg!r}, exception {ws.exception()!r}")
                continue
            problem = check_body(msg.data)
            if problem:
                report.errors.append(problem)
                await ws.close(code=4001, message=b"bad message")
                return
            if cfg.control_before_echo == "ping":
                await ws.ping(b"before echo")
            elif cfg.control_before_echo == "pong":
                await ws.pong(b"unsolicited")
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            else:
                await ws.send_bytes(msg.data)
            report.echoed += 1
    except Exception as exc:
        report.errors.append(f"aiohttp: {exc!r}")
    finally:
        if pinger is not None:
            pinger.cancel()
        report.close_code = ws.close_code
        if ws.exception() is not None:
            report.errors.append(f"aiohttp exception(): {ws.exception()!r}")
        report.finish()


async def _start_websockets_server(cfg: PeerConfig, report: Report) -> tuple[int, Any]:
    from websockets.asyncio.server import serve

    async def handler(conn: Any) -> None:
        await _websockets_echo(conn, cfg, report)

    server = await serve(handler, HOST, 0, **_websockets_kwargs(cfg, server=True))
    return server.sockets[0].getsockname()[1], server


async def _start_aiohttp_server(cfg: PeerConfig, report: Report) -> tuple[int, Any]:
    from aiohttp import web as aioweb

    async def handler(request: aioweb.Request) -> aioweb.StreamResponse:
        ws = aioweb.WebSocketResponse(
            compress=cfg.compression != "off", heartbeat=cfg.heartbeat, max_msg_size=MAX_SIZE
        )
        await ws.prepare(request)
        await _aiohttp_echo(ws, cfg, report)
        return ws

    app = aioweb.Application()
    app.router.add_get("/", handler)
    runner = aioweb.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = aioweb.TCPSite(runner, HOST, 0)
    await site.start()
    return runner.addresses[0][1], runner


async def _stop_server(kind: str, server: Any) -> None:
    if kind == "websockets":
        server.close()
        await server.wait_closed()
    else:
        await server.cleanup()


async def _websockets_client(url: str, cfg: PeerConfig, report: Report) -> None:
    from websockets.asyncio.client import connect

    try:
        async with connect(url, **_websockets_kwargs(cfg, server=False)) as conn:
            await _websockets_echo(conn, cfg, report)
    except Exception as exc:
        report.errors.append(f"websockets client: {exc!r}")
    finally:
        report.finish()


async def _aiohttp_client(url: str, cfg: PeerConfig, report: Report) -> None:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                url,
                compress=0 if cfg.compression == "off" else 15,
                heartbeat=cfg.heartbeat,
                max_msg_size=MAX_SIZE,
            ) as ws,
        ):
            await _aiohttp_echo(ws, cfg, report)
    except Exception as exc:
        report.errors.append(f"aiohttp client: {exc!r}")
    finally:
        report.finish()


# --------------------------------------------------------------------- trio side


async def _trio_ws_echo(ws: Any, cfg: PeerConfig, report: Report) -> None:
    async def pinger() -> None:
        assert cfg.ping_every is not None
        rng = random.Random(cfg.seed)
        try:
            while True:
                await trio.sleep(cfg.ping_every * rng.uniform(0.5, 1.5))
                await ws.ping(b"p")
        except trio_ws.ClientConnectionResetError:
            return

    try:
        async with trio.open_nursery() as nursery:
            if cfg.ping_every:
                nursery.start_soon(pinger)
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    report.errors.append(f"trio_ws peer: {msg!r}")
                    continue
                problem = check_body(msg.data)
                if problem:
                    report.errors.append(problem)
                    await ws.close(code=4001, message=b"bad message")
                    break
                if cfg.control_before_echo == "ping":
                    await ws.ping(b"before echo")
                elif cfg.control_before_echo == "pong":
                    await ws.pong(b"unsolicited")
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                else:
                    await ws.send_bytes(msg.data)
                report.echoed += 1
            nursery.cancel_scope.cancel()
    except Exception as exc:
        report.errors.append(f"trio_ws peer: {exc!r}")
    finally:
        report.close_code = ws.close_code
        report.finish()


class _WsprotoPeer:
    """A bare wsproto connection over a trio stream, echoing."""

    def __init__(self, stream: trio.abc.Stream, client: bool, cfg: PeerConfig) -> None:
        self.stream = stream
        self.conn = WSConnection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self.cfg = cfg
        self.lock = trio.Lock()
        self.pending: list[Event] = []

    def extensions(self) -> list[Any]:
        if self.cfg.compression == "off":
            return []
        nt = self.cfg.compression == "notakeover"
        return [PerMessageDeflate(client_no_context_takeover=nt, server_no_context_takeover=nt)]

    async def send(self, *events: Event) -> None:
        async with self.lock:  # frames leave in the order the compressor saw them
            data = b"".join(self.conn.send(event) for event in events)
            await self.stream.send_all(data)

    async def send_control(self, event: Ping | Pong) -> None:
        """Send a ping or pong unless the close handshake has begun (wsproto refuses then)."""
        async with self.lock:
            if self.conn.state is ConnectionState.OPEN:
                await self.stream.send_all(self.conn.send(event))

    async def next_event(self) -> Event | None:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.conn.receive_data(data or None)
            self.pending.extend(self.conn.events())
            if not data and not self.pending:
                return None
        return self.pending.pop(0)

    async def client_handshake(self, port: int) -> None:
        await self.send(Request(host=f"{HOST}:{port}", target="/", extensions=self.extensions()))
        event = await self.next_event()
        if not isinstance(event, AcceptConnection):
            raise AssertionError(f"wsproto client: handshake answered with {event!r}")

    async def server_handshake(self) -> None:
        event = await self.next_event()
        if not isinstance(event, Request):
            raise AssertionError(f"wsproto server: got {event!r} instead of a request")
        await self.send(AcceptConnection(extensions=self.extensions()))

    async def echo(self, report: Report) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed)

        async def pinger() -> None:
            assert cfg.ping_every is not None
            prng = random.Random(cfg.seed)
            while self.conn.state is ConnectionState.OPEN:
                await self.send_control(Ping(b"p"))
                await trio.sleep(cfg.ping_every * prng.uniform(0.5, 1.5))

        parts: list[Any] = []
        async with trio.open_nursery() as nursery:
            if cfg.ping_every:
                nursery.start_soon(pinger)
            while True:
                event = await self.next_event()
                if event is None:
                    report.errors.append("wsproto: EOF without a close frame")
                    break
                if isinstance(event, Ping):
                    # A ping read in the same chunk as the close frame after it
                    # finds wsproto already closing: no pong then (RFC 6455 5.5.2).
                    await self.send_control(event.response())
                elif isinstance(event, Pong):
                    pass
                elif isinstance(event, CloseConnection):
                    report.close_code = event.code
                    await self.send(event.response())
                    break
                elif isinstance(event, (TextMessage, BytesMessage)):
                    parts.append(event.data)
                    if not event.message_finished:
                        continue
                    text = isinstance(event, TextMessage)
                    message: Data = "".join(parts) if text else b"".join(parts)
                    parts = []
                    problem = check_body(message)
                    if problem:
                        report.errors.append(problem)
                        await self.send(CloseConnection(4001, "bad message"))
                        break
                    await self._echo_one(message, text, rng)
                    report.echoed += 1
                else:
                    report.errors.append(f"wsproto: unexpected {event!r}")
            nursery.cancel_scope.cancel()

    async def _echo_one(self, message: Data, text: bool, rng: random.Random) -> None:
        cfg = self.cfg
        kind = TextMessage if text else BytesMessage
        if cfg.control_before_echo == "ping":
            await self.send(Ping(b"before echo"))
        elif cfg.control_before_echo == "pong":
            await self.send(Pong(b"unsolicited"))
        if not cfg.fragment:
            await self.send(kind(data=message))
            return
        chunks = split(message, rng)
        for i, chunk in enumerate(chunks):
            if i and cfg.control_between_fragments:
                await self.send(Ping(b"between fragments"))
            await self.send(kind(data=chunk, message_finished=i == len(chunks) - 1))


async def _wsproto_run(
    stream: trio.abc.Stream, client: bool, port: int, cfg: PeerConfig, report: Report
) -> None:
    peer = _WsprotoPeer(stream, client, cfg)
    try:
        if client:
            await peer.client_handshake(port)
        else:
            await peer.server_handshake()
        await peer.echo(report)
    except Exception as exc:
        report.errors.append(f"wsproto: {exc!r}")
    finally:
        await trio.aclose_forcefully(stream)
        report.finish()


# ------------------------------------------------------------------ entry points


@asynccontextmanager
async def peer_server(
    kind: str, cfg: PeerConfig, report: Report, aio: AsyncioThread
) -> AsyncIterator[str]:
    """Run a ``kind`` echo server for one connection; yields its ``ws://`` URL."""
    if kind in ("websockets", "aiohttp"):
        start = _start_websockets_server if kind == "websockets" else _start_aiohttp_server
        port, server = await wait_future(aio.submit(start(cfg, report)))
        try:
            yield f"ws://{HOST}:{port}/"
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await wait_future(aio.submit(_stop_server(kind, server)))
        return
    async with trio.open_nursery() as nursery:
        if kind == "trio_ws":

            async def handler(request: web.Request) -> web.WebSocketResponse:
                ws = web.WebSocketResponse(
                    compress=cfg.compression != "off",
                    heartbeat=cfg.heartbeat,
                    max_msg_size=MAX_SIZE,
                )
                await ws.prepare(request)
                await _trio_ws_echo(ws, cfg, report)
                return ws

            app = web.Application()
            app.router.add_get("/", handler)
            site = await nursery.start(
                lambda task_status: web.serve(app, HOST, 0, task_status=task_status)
            )
            port = site.port
        else:
            listeners = await trio.open_tcp_listeners(0, host=HOST)
            port = listeners[0].socket.getsockname()[1]

            async def serve_one() -> None:
                async with listeners[0]:
                    stream = await listeners[0].accept()
                await _wsproto_run(stream, False, port, cfg, report)

            nursery.start_soon(serve_one)
        yield f"ws://{HOST}:{port}/"
        nursery.cancel_scope.cancel()


async def run_peer_client(
    kind: str, url: str, cfg: PeerConfig, report: Report, aio: AsyncioThread
) -> None:
    """Connect a ``kind`` echo client to ``url`` and run it until the connection ends."""
    if kind == "websockets":
        await wait_future(aio.submit(_websockets_client(url, cfg, report)))
    elif kind == "aiohttp":
        await wait_future(aio.submit(_aiohttp_client(url, cfg, report)))
    elif kind == "trio_ws":
        try:
            async with (
                trio_ws.ClientSession() as session,
                session.ws_connect(
                    url,
                    compress=0 if cfg.compression == "off" else 15,
                    notakeover=cfg.compression == "notakeover",
                    heartbeat=cfg.heartbeat,
                    max_msg_size=MAX_SIZE,
                ) as ws,
            ):
                await _trio_ws_echo(ws, cfg, report)
        except Exception as exc:
            report.errors.append(f"trio_ws client: {exc!r}")
        finally:
            report.finish()
    else:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        stream = await trio.open_tcp_stream(HOST, port)
        await _wsproto_run(stream, True, port, cfg, report)


__all__ = [
    "FRAGMENTING",
    "HEARTBEATING",
    "PEERS",
    "AsyncioThread",
    "PeerConfig",
    "Report",
    "peer_server",
    "run_peer_client",
    "wait_future",
]
