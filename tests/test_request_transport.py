"""``request.transport``: aiohttp's minimal transport surface, over real sockets on 127.0.0.1.

``get_extra_info`` for the socket and TLS names, ``close()`` and ``abort()``
dropping the client (before a response, or under an open WebSocket), and
``None`` once the connection has ended, as aiohttp's.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trustme

import trio_ws
from trio_ws import WSMsgType, web

pytestmark = pytest.mark.integration

NAMES = ("peername", "sockname", "socket", "sslcontext", "ssl_object", "peercert", "cipher")


@asynccontextmanager
async def serving(handler: Callable[[web.Request], Any], **kwargs: Any) -> AsyncIterator[web.Site]:
    app = web.Application()
    app.router.add_get("/", handler)
    async with trio.open_nursery() as nursery:
        site: web.Site = await nursery.start(
            lambda task_status: web.serve(app, "127.0.0.1", 0, task_status=task_status, **kwargs)
        )
        yield site
        nursery.cancel_scope.cancel()  # graceful shutdown: every connection has ended after it


async def get(stream: trio.abc.Stream) -> bytes:
    """GET / on ``stream``; everything the server sent until it closed."""
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:  # TLS: the server closed without close_notify
        pass
    return data


async def test_extra_info_on_a_plain_connection() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        transport = request.transport
        assert transport is not None
        seen.update({name: transport.get_extra_info(name) for name in NAMES})
        seen["unknown"] = transport.get_extra_info("no such name", "fallback")
        seen["closing"] = transport.is_closing()
        return web.Response(text="ok")

    with trio.fail_after(10):
        async with serving(handler) as site:
            stream = await trio.open_tcp_stream("127.0.0.1", site.port)
            async with stream:
                answer = await get(stream)
                client_address = stream.socket.getsockname()
    assert answer.startswith(b"HTTP/1.1 200")
    assert tuple(seen["peername"][:2]) == tuple(client_address[:2])
    assert tuple(seen["sockname"][:2]) == ("127.0.0.1", site.port)
    assert isinstance(seen["socket"], trio.socket.SocketType)
    for name in ("sslcontext", "ssl_object", "peercert", "cipher"):
        assert seen[name] is None, name
    assert seen["unknown"] == "fallback"
    assert seen["closing"] is False


async def test_extra_info_over_tls_with_a_client_certificate() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    ca.issue_cert("client.example").configure_cert(client_ctx)
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        transport = request.transport
        assert transport is not None
        seen.update({name: transport.get_extra_info(name) for name in NAMES})
        return web.Response(text="ok")

    with trio.fail_after(10):
        async with serving(handler, ssl_context=server_ctx) as site:
            tcp = await trio.open_tcp_stream("127.0.0.1", site.port)
            stream = trio.SSLStream(tcp, client_ctx, server_hostname="127.0.0.1")
            async with stream:
                answer = await get(stream)
    assert answer.startswith(b"HTTP/1.1 200")
    assert seen["sslcontext"] is server_ctx
    assert isinstance(seen["ssl_object"], ssl.SSLObject)
    assert ("DNS", "client.example") in seen["peercert"]["subjectAltName"]
    _name, protocol, bits = seen["cipher"]
    assert protocol.startswith("TLS") and bits > 0
    assert isinstance(seen["socket"], trio.socket.SocketType)


async def test_close_drops_the_client_before_any_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closing: list[bool] = []

    async def handler(request: web.Request) -> web.Response:
        transport = request.transport
        assert transport is not None
        transport.close()
        closing.append(transport.is_closing())
        transport.close()  # idempotent
        return web.Response(text="never sent")

    with trio.fail_after(10), caplog.at_level("ERROR", logger="trio_ws.server"):
        async with serving(handler) as site:
            stream = await trio.open_tcp_stream("127.0.0.1", site.port)
            async with stream:
                assert await get(stream) == b""  # end of stream, no response
    assert closing == [True]
    assert [r for r in caplog.records if r.name == "trio_ws.server"] == []


async def test_abort_ends_an_open_websocket_and_its_handler() -> None:
    ended: list[tuple[int | None, bool]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "drop me":
                transport = request.transport
                assert transport is not None
                transport.abort()
        # The loop ends: the reader saw the connection end under it.
        ended.append((ws.close_code, ws.closed))
        return ws

    with trio.fail_after(10):
        async with serving(handler) as site, trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{site.port}/") as ws:
                await ws.send_str("drop me")
                msg = await ws.receive()
                assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
                assert ws.close_code == trio_ws.WSCloseCode.ABNORMAL_CLOSURE
    assert ended == [(trio_ws.WSCloseCode.ABNORMAL_CLOSURE, True)]


async def test_transport_is_none_once_the_connection_has_ended() -> None:
    kept: list[web.Request] = []
    transports: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        kept.append(request)
        transports.append(request.transport)
        return web.Response(text="ok")

    with trio.fail_after(10):
        async with serving(handler) as site:
            stream = await trio.open_tcp_stream("127.0.0.1", site.port)
            async with stream:
                assert (await get(stream)).startswith(b"HTTP/1.1 200")
        # serve() has returned: every connection's task has ended.
    assert kept[0].transport is None
    old = transports[0]
    assert old.is_closing()
    assert old.get_extra_info("socket") is None
    assert old.get_extra_info("peername", "gone") == "gone"
    old.close()  # harmless once the connection has ended
    old.abort()
