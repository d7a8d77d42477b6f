"""One connection's failure stays in that connection: the server keeps serving (issue 14).

Each test breaks one connection in a way that used to take the whole server
down, then checks that a second client is served by the same ``serve()``.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio

import trio_ws
from trio_ws import WSCloseCode, WSMsgType, web

pytestmark = pytest.mark.integration

UPGRADE = (
    b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def reset_on_close(stream: trio.SocketStream) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER 0)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


@asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[web.Site]:
    async with trio.open_nursery() as nursery:
        site: web.Site = await nursery.start(
            lambda task_status: web.serve(app, "127.0.0.1", 0, task_status=task_status)
        )
        yield site
        nursery.cancel_scope.cancel()


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data``; the answer, read until the server closes or one whole response came."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    parser.send(h11.EndOfMessage())
    async with stream:
        await stream.send_all(data)
        chunks = []
        while chunk := await stream.receive_some(65536):
            chunks.append(chunk)
            parser.receive_data(chunk)
            while (event := parser.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                if isinstance(event, h11.EndOfMessage):
                    return b"".join(chunks)
        return b"".join(chunks)


async def assert_still_serving(port: int) -> None:
    """A second client gets a WebSocket echo from the same server."""
    async with trio_ws.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{port}/echo") as ws:
            await ws.send_str("second client")
            assert await ws.receive_str() == "second client"


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_ws.server" and r.levelno >= logging.ERROR]


async def test_reset_before_101_while_handler_authenticates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The two-packet reproduction: a valid upgrade, then RST while the handler is still in auth."""
    in_auth = trio.Event()
    client_gone = trio.Event()
    prepare_failed: list[BaseException] = []

    async def slow_auth(request: web.Request) -> web.WebSocketResponse:
        in_auth.set()
        await client_gone.wait()  # e.g. a token lookup that outlasts the client
        ws = web.WebSocketResponse()
        try:
            await ws.prepare(request)
        except Exception as exc:
            prepare_failed.append(exc)
            raise
        return ws

    app = web.Application()
    app.router.add_get("/auth", slow_auth)
    app.router.add_get("/echo", echo)
    with trio.fail_after(10), caplog.at_level(logging.INFO, logger="trio_ws.server"):
        async with running(app) as site:
            stream = await trio.open_tcp_stream("127.0.0.1", site.port)
            await stream.send_all(UPGRADE % b"/auth")
            await in_auth.wait()
            reset_on_close(stream)
            await stream.aclose()
            client_gone.set()
            await assert_still_serving(site.port)
        # The handler saw the documented error, and no traceback was logged for a client that left.
        assert len(prepare_failed) == 1
        assert isinstance(prepare_failed[0], trio_ws.ClientConnectionResetError)
        assert errors(caplog) == []


async def test_non_latin1_header_refused_with_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``headers={"X-User": "José"}``: ValueError naming the header, a 500, serving goes on."""
    raised: list[BaseException] = []

    async def jose(request: web.Request) -> web.Response:
        try:
            return web.Response(text="hi", headers={"X-User": "José"})
        except ValueError as exc:
            raised.append(exc)
            raise

    app = web.Application()
    app.router.add_get("/jose", jose)
    app.router.add_get("/echo", echo)
    with trio.fail_after(10), caplog.at_level(logging.ERROR, logger="trio_ws.server"):
        async with running(app) as site:
            answer = await raw_exchange(
                site.port, b"GET /jose HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 500 ")
            await assert_still_serving(site.port)
    assert len(raised) == 1 and "X-User" in str(raised[0])
    assert len(errors(caplog)) == 1  # logged once, with its traceback
    assert errors(caplog)[0].exc_info is not None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-User", "José"),
        ("X-Bad", "a\r\nSet-Cookie: evil=1"),
        ("X-Nul", "a\x00b"),
        ("Bad Name", "v"),
    ],
)
def test_response_headers_checked_when_set(name: str, value: str) -> None:
    """Headers that cannot go on the wire are refused where they are set, naming the header."""
    with pytest.raises(ValueError, match=name):
        web.Response(headers={name: value})
    response = web.Response()
    with pytest.raises(ValueError, match=name):
        response.headers.add(name, value)
    ws = web.WebSocketResponse()
    with pytest.raises(ValueError, match=name):
        ws.headers.add(name, value)


def test_redirect_location_is_percent_encoded() -> None:
    """A Location with non-ASCII or CR/LF cannot split or spoil the head: it is percent-encoded."""
    assert web.HTTPFound("/café?q=a b").headers["Location"] == "/caf%C3%A9?q=a%20b"
    assert web.HTTPFound("/x\r\nSet-Cookie: a=1").headers["Location"] == (
        "/x%0D%0ASet-Cookie:%20a=1"
    )


async def test_response_that_cannot_be_sent_becomes_500(caplog: pytest.LogCaptureFixture) -> None:
    """A response spoilt after it was built (bad status, header changed behind our back) is refused
    at send time: logged once, 500 to the client, the server serves on."""

    async def bad_status(request: web.Request) -> web.Response:
        response = web.Response(text="x")
        response.status = 1234
        return response

    async def bad_length(request: web.Request) -> web.Response:
        return web.Response(text="four", headers={"Content-Length": "99"})

    app = web.Application()
    app.router.add_get("/status", bad_status)
    app.router.add_get("/length", bad_length)
    app.router.add_get("/echo", echo)
    with trio.fail_after(10), caplog.at_level(logging.ERROR, logger="trio_ws.server"):
        async with running(app) as site:
            for path in (b"/status", b"/length"):
                caplog.clear()
                answer = await raw_exchange(site.port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                assert answer.startswith(b"HTTP/1.1 500 "), answer
                assert b"Connection: close" in answer
                assert len(errors(caplog)) == 1
            await assert_still_serving(site.port)


async def test_unprepared_websocket_response_is_prepared_and_closed_1000() -> None:
    """A handler returning ``WebSocketResponse()`` without ``prepare()``: as aiohttp, the server
    prepares it and closes it with 1000."""

    async def forgot(request: web.Request) -> web.WebSocketResponse:
        return web.WebSocketResponse()

    app = web.Application()
    app.router.add_get("/forgot", forgot)
    app.router.add_get("/echo", echo)
    with trio.fail_after(10):
        async with running(app) as site, trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{site.port}/forgot") as ws:
                msg = await ws.receive()
                assert msg.type == WSMsgType.CLOSE
                assert msg.data == WSCloseCode.OK
            # Not an upgrade request: the handshake's own answer.
            answer = await raw_exchange(
                site.port, b"GET /forgot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 426 ")
            await assert_still_serving(site.port)


@pytest.mark.parametrize(
    "request_bytes",
    [
        # A request target urlsplit() cannot parse.
        b"GET http://[::1/echo HTTP/1.1\r\nHost: x\r\n\r\n",
        # An upgrade request with a body: h11 will not switch protocols under it.
        (UPGRADE % b"/echo")[:-2] + b"Content-Length: 3\r\n\r\nabc",
    ],
)
async def test_odd_requests_get_400(request_bytes: bytes) -> None:
    app = web.Application()
    app.router.add_get("/echo", echo)
    with trio.fail_after(10):
        async with running(app) as site:
            answer = await raw_exchange(site.port, request_bytes)
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            await assert_still_serving(site.port)


async def test_unexpected_error_in_http_layer_is_contained(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug below the handler (here: routing blows up) is logged once and answered 500."""
    app = web.Application()
    app.router.add_get("/echo", echo)
    real_resolve = app.router.resolve

    def resolve(method: str, path: str) -> Any:
        if path == "/bug":
            raise KeyError("router bug")
        return real_resolve(method, path)

    monkeypatch.setattr(app.router, "resolve", resolve)
    with trio.fail_after(10), caplog.at_level(logging.ERROR, logger="trio_ws.server"):
        async with running(app) as site:
            answer = await raw_exchange(site.port, b"GET /bug HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 500 ")
            await assert_still_serving(site.port)
    assert len(errors(caplog)) == 1 and "router bug" in caplog.text


async def test_handler_error_group_with_websocket_open_closes_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler whose nursery fails after prepare(): 1011 to that client, logged once."""

    async def grouped(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)

        async def fail() -> None:
            raise ValueError("in a child task")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
        return ws

    app = web.Application()
    app.router.add_get("/grouped", grouped)
    app.router.add_get("/echo", echo)
    with trio.fail_after(10), caplog.at_level(logging.ERROR, logger="trio_ws.server"):
        async with running(app) as site, trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{site.port}/grouped") as ws:
                msg = await ws.receive()
                assert msg.type == WSMsgType.CLOSE
                assert msg.data == WSCloseCode.INTERNAL_ERROR
            await assert_still_serving(site.port)
    assert len(errors(caplog)) == 1 and "in a child task" in caplog.text
