"""trio_ws.web over real sockets on 127.0.0.1: HTTP, routing, upgrade, errors, shutdown, interop."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import trio
import trustme
import websockets.sync.client
from websockets.exceptions import ConnectionClosed, InvalidStatus

import trio_ws
from trio_ws import WSCloseCode, WSMsgType, web

pytestmark = pytest.mark.integration


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=["chat", "superchat"])
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if msg.data == "raise":
                raise ValueError("handler failure")
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello {request.match_info['name']} {request.query.get('q', '')}")


async def post_json(request: web.Request) -> web.Response:
    data = await request.json()
    return web.json_response({"got": data, "method": request.method})


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail")


async def deny(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != "Bearer good":
        raise web.HTTPUnauthorized()
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str("welcome")
    await ws.close()
    return ws


def build_app() -> web.Application:
    app = web.Application(client_max_size=1024)
    app.router.add_get("/ws", echo)
    app.router.add_get("/hello/{name}", hello)
    app.router.add_post("/json", post_json)
    app.router.add_get("/boom", boom)
    app.router.add_get("/auth", deny)
    return app


@asynccontextmanager
async def running(app: web.Application | None = None, **kwargs: Any) -> AsyncIterator[web.Site]:
    async with trio.open_nursery() as nursery:
        site = await nursery.start(
            lambda task_status: web.serve(
                app if app is not None else build_app(),
                "127.0.0.1",
                0,
                task_status=task_status,
                **kwargs,
            )
        )
        yield site
        nursery.cancel_scope.cancel()


async def raw_http(port: int, data: bytes, *, read_all: bool = True) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        chunks = []
        with trio.fail_after(5):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not read_all:
                    break
        return b"".join(chunks)


async def test_keep_alive_routing_and_query() -> None:
    async with running() as site:
        req = (
            b"GET /hello/ann?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /hello/bob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = await raw_http(site.port, req)
        assert answer.count(b"HTTP/1.1 200 OK") == 2
        assert b"hello ann 1" in answer and b"hello bob " in answer


async def test_404_405_500_and_body() -> None:
    async with running() as site:

        def client() -> list[Any]:
            import urllib.error
            import urllib.request

            out: list[Any] = []
            base = f"http://127.0.0.1:{site.port}"
            for path, data in (("/nope", None), ("/json", None), ("/boom", None)):
                try:
                    urllib.request.urlopen(base + path, data=data)
                except urllib.error.HTTPError as exc:
                    out.append((exc.code, exc.read(), exc.headers.get("Allow")))
            req = urllib.request.Request(
                base + "/json", data=b'{"a": 1}', headers={"Content-Type": "application/json"}
            )
            out.append(json.loads(urllib.request.urlopen(req).read()))
            try:
                urllib.request.urlopen(base + "/json", data=b"x" * 5000)
            except urllib.error.HTTPError as exc:
                out.append(exc.code)
            return out

        got = await trio.to_thread.run_sync(client)
        assert got[0][0] == 404
        assert got[1][0] == 405 and "POST" in got[1][2]
        assert got[2][0] == 500 and b"secret" not in got[2][1]
        assert got[3] == {"got": {"a": 1}, "method": "POST"}
        assert got[4] == 413


async def test_handler_exception_before_prepare_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with running() as site:
        with caplog.at_level(logging.ERROR):
            answer = await raw_http(
                site.port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
        assert answer.startswith(b"HTTP/1.1 500")
        assert "secret internal detail" in caplog.text


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"426"),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 12\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            b"426",
        ),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
            b"400",
        ),
    ],
)
async def test_bad_requests_get_4xx_and_server_keeps_serving(
    request_bytes: bytes, status: bytes
) -> None:
    async with running() as site:
        # A declined upgrade keeps the connection (keep-alive): read one answer.
        answer = await raw_http(site.port, request_bytes, read_all=False)
        assert answer.split(b" ")[1] == status
        if status == b"426" and b"Version: 12" in request_bytes:
            assert b"Sec-WebSocket-Version: 13, 8, 7" in answer
        ok = await raw_http(
            site.port, b"GET /hello/z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert ok.startswith(b"HTTP/1.1 200")


async def test_idle_keepalive_and_slow_head_are_closed() -> None:
    limits = web.ServerLimits(head_timeout=0.3, keepalive_timeout=0.3)
    async with running(limits=limits) as site:
        with trio.fail_after(3):
            assert await raw_http(site.port, b"") == b""  # idle: closed without answer
            answer = await raw_http(site.port, b"GET / HTTP/1.1\r\n")  # head never finishes
        assert answer.startswith(b"HTTP/1.1 408")


async def test_trio_ws_client_echo_subprotocol_and_compression() -> None:
    async with running() as site, trio_ws.ClientSession() as session:
        async with session.ws_connect(
            f"ws://127.0.0.1:{site.port}/ws", protocols=["nope", "superchat", "chat"], compress=15
        ) as ws:
            assert ws.protocol == "superchat"
            assert ws.compress
            await ws.send_str("x" * 100000)
            assert await ws.receive_str() == "x" * 100000
        assert ws.close_code == WSCloseCode.OK


async def test_handler_exception_after_prepare_closes_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as site, trio_ws.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{site.port}/ws") as other:
            async with session.ws_connect(f"ws://127.0.0.1:{site.port}/ws") as ws:
                with caplog.at_level(logging.ERROR):
                    await ws.send_str("raise")
                    msg = await ws.receive()
                assert msg.type == WSMsgType.CLOSE
                assert msg.data == WSCloseCode.INTERNAL_ERROR
                assert "handler failure" in caplog.text
            # the other connection is unaffected
            await other.send_str("still here")
            assert await other.receive_str() == "still here"


async def test_reject_before_prepare_status_seen_by_client() -> None:
    async with running() as site, trio_ws.ClientSession() as session:
        with pytest.raises(trio_ws.WSServerHandshakeError) as info:
            async with session.ws_connect(f"ws://127.0.0.1:{site.port}/auth"):
                pass
        assert info.value.status == 401
        async with session.ws_connect(
            f"ws://127.0.0.1:{site.port}/auth", headers={"Authorization": "Bearer good"}
        ) as ws:
            assert await ws.receive_str() == "welcome"


async def test_origin_check() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(origins=["https://good.example"])
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with running(app) as site, trio_ws.ClientSession() as session:
        with pytest.raises(trio_ws.WSServerHandshakeError) as info:
            async with session.ws_connect(
                f"ws://127.0.0.1:{site.port}/ws", origin="https://evil.example"
            ):
                pass
        assert info.value.status == 403
        async with session.ws_connect(
            f"ws://127.0.0.1:{site.port}/ws", origin="https://good.example"
        ) as ws:
            assert (await ws.receive()).type == WSMsgType.CLOSE


async def test_can_prepare_and_ready() -> None:
    results: list[Any] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=["p"])
        ready = ws.can_prepare(request)
        results.append(ready)
        if not ready:
            return web.Response(text="plain page")
        results.append(await ws.prepare(request))
        results.append(await ws.prepare(request))  # idempotent
        with pytest.raises(RuntimeError, match="Already started"):
            ws.can_prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with running(app) as site:
        answer = await raw_http(
            site.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert b"plain page" in answer
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{site.port}/", protocols=["p"]):
                pass
    assert not results[0] and results[0] == trio_ws.WebSocketReady.ERROR
    assert results[1] and results[1] == "OK" and results[1].protocol == "p"
    assert results[2] == results[1]


async def test_graceful_shutdown_sends_1001() -> None:
    hooks: list[str] = []
    app = build_app()

    async def on_shutdown(app: web.Application) -> None:
        hooks.append("shutdown")

    async def on_cleanup(app: web.Application) -> None:
        hooks.append("cleanup")

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    codes: list[int | None] = []
    async with trio.open_nursery() as outer:
        server_scope = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[web.Site]) -> None:
            with server_scope:
                await web.serve(app, "127.0.0.1", 0, task_status=task_status)

        site = await outer.start(run_server)
        async with trio_ws.ClientSession() as session:
            conns = [await session.ws_connect(f"ws://127.0.0.1:{site.port}/ws") for _ in range(5)]
            for ws in conns:
                await ws.send_str("hi")
                assert await ws.receive_str() == "hi"
            server_scope.cancel()
            for ws in conns:
                msg = await ws.receive()
                assert msg.type == WSMsgType.CLOSE
                codes.append(msg.data)
    assert codes == [WSCloseCode.GOING_AWAY] * 5
    assert hooks == ["shutdown", "cleanup"]


async def test_max_connections_503() -> None:
    async with running(limits=web.ServerLimits(max_connections=1)) as site:
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{site.port}/ws"):
                with pytest.raises(trio_ws.WSServerHandshakeError) as info:
                    async with session.ws_connect(f"ws://127.0.0.1:{site.port}/ws"):
                        pass
                assert info.value.status == 503


async def test_tls_server_with_trio_ws_client() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with running(ssl_context=server_ctx) as site, trio_ws.ClientSession() as session:
        assert site.url.startswith("https://")
        async with session.ws_connect(f"wss://127.0.0.1:{site.port}/ws", ssl=client_ctx) as ws:
            await ws.send_bytes(b"secure")
            assert await ws.receive_bytes() == b"secure"
        with pytest.raises(trio_ws.ClientConnectorCertificateError):
            async with session.ws_connect(f"wss://127.0.0.1:{site.port}/ws"):
                pass  # default context does not trust the test CA
        async with session.ws_connect(f"wss://127.0.0.1:{site.port}/ws", ssl=False) as ws:
            await ws.send_str("no verify")
            assert await ws.receive_str() == "no verify"


async def test_interop_websockets_client() -> None:
    async with running() as site:

        def client() -> tuple[str | None, str, bytes, int | None]:
            with websockets.sync.client.connect(
                f"ws://127.0.0.1:{site.port}/ws", subprotocols=["chat"]
            ) as ws:
                ws.send("text ✓")
                text = ws.recv()
                ws.send(b"\x00" * 200000)
                data = ws.recv()
                proto = ws.subprotocol
                ws.send("raise")
                try:
                    ws.recv()
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd else None
            assert isinstance(text, str) and isinstance(data, bytes)
            return proto, text, data, code

        proto, text, data, code = await trio.to_thread.run_sync(client)
        assert proto == "chat"
        assert text == "text ✓"
        assert data == b"\x00" * 200000
        assert code == 1011

        def rejected() -> int:
            try:
                with websockets.sync.client.connect(f"ws://127.0.0.1:{site.port}/auth"):
                    return 0
            except InvalidStatus as exc:
                return exc.response.status_code

        assert await trio.to_thread.run_sync(rejected) == 401


async def test_interop_aiohttp_client() -> None:
    async with running() as site:

        def client() -> list[Any]:
            import asyncio

            async def main() -> list[Any]:
                out: list[Any] = []
                async with aiohttp.ClientSession() as session:
                    async with session.ws_connect(
                        f"http://127.0.0.1:{site.port}/ws", protocols=["chat"], compress=15
                    ) as ws:
                        out.append(ws.protocol)
                        await ws.send_str("from aiohttp")
                        out.append((await ws.receive()).data)
                        await ws.send_bytes(b"b" * 70000)
                        out.append(len((await ws.receive()).data))
                        await ws.ping(b"pp")
                        await ws.close()
                        out.append(ws.close_code)
                return out

            return asyncio.run(main())

        assert await trio.to_thread.run_sync(client) == ["chat", "from aiohttp", 70000, 1000]


@pytest.mark.parametrize("version", [b"13", b"8", b"7"])
async def test_the_versions_aiohttp_accepts_are_upgraded(version: bytes) -> None:
    request = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: " + version + b"\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with trio.fail_after(10):
        async with running() as site:
            answer = await raw_http(site.port, request, read_all=False)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in answer
