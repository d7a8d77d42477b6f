"""aiohttp's application idioms on trio_ws.web, over real sockets on 127.0.0.1.

Route tables and definitions, middlewares (an auth check before the upgrade),
static files, typed application keys and ``cleanup_ctx``: how aiohttp
WebSocket services are written, served by trio_ws unchanged.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import trio_ws
from trio_ws import WSMsgType, web
from trio_ws.testing import open_test_client

pytestmark = pytest.mark.integration

routes = web.RouteTableDef()


@routes.get("/ws")
async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(f"{request.app[GREETING]} {msg.data}")
    return ws


@routes.post("/echo")
async def echo_post(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


GREETING = web.AppKey("GREETING", str)


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def test_route_table_and_definitions() -> None:
    app = web.Application()
    app[GREETING] = "hi"
    app.add_routes(routes)
    added = app.add_routes([web.get("/hello", hello), web.put("/hello", hello)])
    assert [r.method for r in added] == ["HEAD", "GET", "PUT"]
    with trio.fail_after(10):
        async with open_test_client(app) as client:
            async with client.ws_connect("/ws") as ws:
                await ws.send_str("there")
                assert await ws.receive_str() == "hi there"
            assert (await client.get("/hello")).status == 200
            head = await client.request("HEAD", "/hello")
            assert head.status == 200 and head.body == b""
            assert (await client.request("POST", "/echo", data=b"abc")).body == b"abc"
            assert (await client.request("PUT", "/hello")).status == 200
            assert (await client.request("DELETE", "/hello")).status == 405


async def test_tuple_routes_answer_head() -> None:
    app = web.Application()
    app.add_routes([("GET", "/hello", hello)])
    with trio.fail_after(10):
        async with open_test_client(app) as client:
            assert (await client.request("HEAD", "/hello")).status == 200


async def test_middleware_refuses_before_the_upgrade_and_wraps_in_order() -> None:
    seen: list[str] = []

    @web.middleware
    async def outer(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        seen.append("outer")
        return await handler(request)

    @web.middleware
    async def auth(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        seen.append("auth")
        if request.query.get("token") != "good":
            raise web.HTTPUnauthorized()
        return await handler(request)

    app = web.Application(middlewares=[outer, auth])
    app[GREETING] = "welcome"
    app.add_routes(routes)
    with trio.fail_after(10):
        async with open_test_client(app) as client:
            with pytest.raises(trio_ws.WSServerHandshakeError) as info:
                await client.ws_connect("/ws?token=bad")
            assert info.value.status == 401
            async with client.ws_connect("/ws?token=good") as ws:
                await ws.send_str("in")
                assert await ws.receive_str() == "welcome in"
    assert seen == ["outer", "auth", "outer", "auth"]


async def test_static_files_and_their_limits(tmp_path: Path) -> None:
    (tmp_path / "chat.html").write_text("<h1>chat</h1>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_text("let x = 1;")
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_text("secret")
    (tmp_path / "link.txt").symlink_to(secret)
    app = web.Application()
    app.router.add_static("/static", tmp_path)
    app.add_routes([web.static("/open", tmp_path, show_index=True, follow_symlinks=True)])
    with trio.fail_after(10):
        async with open_test_client(app) as client:
            page = await client.get("/static/chat.html")
            assert page.status == 200 and page.body == b"<h1>chat</h1>"
            assert page.headers["Content-Type"].startswith("text/html")
            script = await client.get("/static/js/app.js")
            assert script.body == b"let x = 1;"
            assert (await client.get("/static/missing.txt")).status == 404
            assert (await client.get("/static/../" + secret.name)).status == 404
            assert (await client.get("/static/%2e%2e/" + secret.name)).status == 404
            assert (await client.get("/static/link.txt")).status == 404
            assert (await client.get("/static/js")).status == 403
            assert (await client.get("/open/link.txt")).body == b"secret"
            index = await client.get("/open/js")
            assert index.status == 200 and b"app.js" in index.body
    with pytest.raises(ValueError):
        app.router.add_static("/nope", tmp_path / "no-such-dir")


async def test_cleanup_ctx_and_hooks_run_in_aiohttp_order() -> None:
    order: list[str] = []

    async def resource(app: web.Application) -> AsyncIterator[None]:
        order.append("ctx-enter")
        app[GREETING] = "from ctx"
        yield
        order.append("ctx-exit")

    async def on_startup(app: web.Application) -> None:
        order.append("startup")

    async def on_shutdown(app: web.Application) -> None:
        order.append("shutdown")

    async def on_cleanup(app: web.Application) -> None:
        order.append("cleanup")

    app = web.Application()
    app.cleanup_ctx.append(resource)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    app.add_routes(routes)
    with trio.fail_after(10):
        async with open_test_client(app) as client:
            assert order == ["ctx-enter", "startup"]
            async with client.ws_connect("/ws") as ws:
                await ws.send_str("x")
                assert await ws.receive_str() == "from ctx x"
    assert order == ["ctx-enter", "startup", "shutdown", "ctx-exit", "cleanup"]


async def test_application_lifecycle_methods_run_the_hooks() -> None:
    calls: list[str] = []

    async def hook(app: web.Application) -> None:
        calls.append("shutdown")

    app = web.Application()
    app.on_shutdown.append(hook)
    await app.shutdown()
    assert calls == ["shutdown"]


def test_app_key_is_typed_and_distinct_from_strings() -> None:
    app = web.Application()
    key = web.AppKey("name", str)
    app[key] = "typed"
    app["name"] = "untyped"
    assert app[key] == "typed" and app["name"] == "untyped"
    assert len(app) == 2
    assert "AppKey(name" in repr(key)


async def test_declined_upgrade_keeps_the_connection_for_the_next_request() -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise web.HTTPUnauthorized()

    app = web.Application()
    app.router.add_get("/ws", refuse)
    app.router.add_get("/hello", hello)
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    follow = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with trio.fail_after(10):
        async with open_test_client(app) as client:
            stream = await trio.open_tcp_stream("127.0.0.1", client.server.port)
            async with stream:
                await stream.send_all(upgrade + follow)
                answer = b""
                while chunk := await stream.receive_some(65536):
                    answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert answer.count(b"HTTP/1.1 ") == 2
    assert answer.endswith(b"hello")


async def test_app_runner_and_tcp_sites_as_aiohttp_code_starts_them() -> None:
    order: list[str] = []

    async def on_startup(app: web.Application) -> None:
        order.append("startup")

    async def on_shutdown(app: web.Application) -> None:
        order.append("shutdown")

    async def on_cleanup(app: web.Application) -> None:
        order.append("cleanup")

    app = web.Application()
    app[GREETING] = "runner"
    app.add_routes(routes)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    with trio.fail_after(10):
        async with trio_ws.ClientSession() as session:
            async with web.AppRunner(app, shutdown_timeout=2) as runner:
                await runner.setup()
                first = web.TCPSite(runner, "127.0.0.1", 0)
                second = web.TCPSite(runner, "127.0.0.1", 0)
                await first.start()
                await second.start()
                assert order == ["startup"]  # once for both sites
                assert first.port != second.port and first.port > 0
                assert len(runner.addresses) == 2
                for site in (first, second):
                    ws = await session.ws_connect(f"ws://127.0.0.1:{site.port}/ws")
                    await ws.send_str("up")
                    assert await ws.receive_str() == "runner up"
                    assert ws.closed is False
                await runner.cleanup()
                assert order == ["startup", "shutdown", "cleanup"]
                with pytest.raises(OSError):
                    await trio.open_tcp_stream("127.0.0.1", first.port)
            # Leaving the block after cleanup() runs nothing twice.
            assert order == ["startup", "shutdown", "cleanup"]


async def test_app_runner_block_error_comes_out_unwrapped_and_stops_the_site() -> None:
    app = web.Application()
    app.add_routes(routes)
    with trio.fail_after(10):
        with pytest.raises(KeyError):
            async with web.AppRunner(app, shutdown_timeout=1) as runner:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()  # setup() is implied
                raise KeyError("boom")
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", site.port)


async def test_app_runner_outside_its_block_says_how_to_use_it() -> None:
    runner = web.AppRunner(web.Application())
    with pytest.raises(RuntimeError, match=r"async with web\.AppRunner"):
        await runner.setup()


FACTORY_PROGRAM = """
from trio_ws import web


async def hello(request):
    return web.Response(text=request.app["greeting"])


async def init_app():
    app = web.Application()
    app["greeting"] = "made by a factory"
    app.router.add_get("/", hello)
    return app


web.run_app(init_app(), host="127.0.0.1", port=0)
"""


async def test_run_app_accepts_an_async_application_factory(tmp_path: Path) -> None:
    script = tmp_path / "factory_app.py"
    script.write_text(FACTORY_PROGRAM)
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-u", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            assert proc.stdout is not None
            output = b""
            while b"Running on" not in output:
                chunk = await proc.stdout.receive_some()
                assert chunk, output.decode()
                output += chunk
            match = re.search(rb"http://127\.0\.0\.1:(\d+)", output)
            assert match is not None, output
            stream = await trio.open_tcp_stream("127.0.0.1", int(match.group(1)))
            async with stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some():
                    answer += chunk
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        finally:
            proc.kill()
            await proc.wait()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"made by a factory")
