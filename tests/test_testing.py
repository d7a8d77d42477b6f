"""trio_ws.testing, used the way a user's own pytest-trio suite would use it."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme

import trio_ws
import trio_ws.testing
from trio_ws import WSCloseCode, WSMsgType, web

# Imported into the module on purpose: pytest must not try to collect these
# ``Test*`` classes (with warnings as errors, a collection warning would fail).
from trio_ws.testing import TestClient, TestResponse, TestServer

pytestmark = pytest.mark.integration

TIMEOUT = 5.0


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=["chat"])
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(f"{request.headers.get('X-Tag', '-')}:{msg.data}")
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"héllo {request.query.get('name', 'world')}", charset="utf-8")


async def latin(request: web.Request) -> web.Response:
    return web.Response(body="café".encode("latin-1"), content_type="text/plain; charset=latin-1")


async def post_json(request: web.Request) -> web.Response:
    return web.json_response({"got": await request.json(), "method": request.method})


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/hello", hello)
    app.router.add_get("/latin", latin)
    app.router.add_post("/json", post_json)
    return app


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    """The fixture a user would write: one client (and server) per test."""
    async with trio_ws.testing.open_test_client(build_app()) as client:
        yield client


# ----------------------------------------------------------------- the server


async def test_server_urls_and_a_plain_client() -> None:
    async with trio_ws.testing.open_test_server(build_app()) as server:
        assert isinstance(server, TestServer)
        assert server.host == "127.0.0.1"
        assert 0 < server.port < 65536
        assert not server.secure
        assert not server.closed
        assert server.url() == f"http://127.0.0.1:{server.port}/"
        assert server.url("/hello?name=x") == f"http://127.0.0.1:{server.port}/hello?name=x"
        assert server.ws_url("/ws") == f"ws://127.0.0.1:{server.port}/ws"
        assert repr(server) == f"<TestServer http://127.0.0.1:{server.port} serving>"
        with pytest.raises(ValueError, match="must start with '/'"):
            server.url("ws")
        with pytest.raises(ValueError, match="must start with '/'"):
            server.ws_url("ws")
        # Any client can use the URL: here trio_ws's own session.
        async with (
            trio_ws.ClientSession() as session,
            session.ws_connect(server.ws_url("/ws")) as ws,
        ):
            await ws.send_str("hi")
            assert await ws.receive_str(timeout=TIMEOUT) == "-:hi"
    assert server.closed


async def test_server_stops_listening_when_the_block_ends() -> None:
    async with trio_ws.testing.open_test_server(build_app()) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.aclose()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", server.port)


async def test_close_sends_going_away_and_is_idempotent() -> None:
    async with (
        trio_ws.testing.open_test_server(build_app()) as server,
        trio_ws.ClientSession() as session,
        session.ws_connect(server.ws_url("/ws")) as ws,
    ):
        await server.close()
        assert server.closed
        msg = await ws.receive(timeout=TIMEOUT)
        assert msg.type == WSMsgType.CLOSE
        assert msg.data == WSCloseCode.GOING_AWAY
        await server.close()  # again: returns at once
        assert repr(server).endswith(" closed>")


async def test_exception_from_the_block_is_not_wrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with trio_ws.testing.open_test_server(build_app()):
            raise KeyError("mine")
    with pytest.raises(KeyError, match="mine"):
        async with trio_ws.testing.open_test_client(build_app()):
            raise KeyError("mine")


async def test_startup_failure_is_raised_unwrapped_and_cleanup_runs() -> None:
    events: list[str] = []

    async def startup(app: web.Application) -> None:
        events.append("startup")
        raise RuntimeError("no database")

    async def cleanup(app: web.Application) -> None:
        events.append("cleanup")

    app = build_app()
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    with pytest.raises(RuntimeError, match="no database"):
        async with trio_ws.testing.open_test_server(app):
            pytest.fail("the block must not run")  # pragma: no cover
    assert events == ["startup", "cleanup"]


async def test_hooks_run_around_the_block() -> None:
    events: list[str] = []

    async def hook(app: web.Application, name: str) -> None:
        events.append(name)

    app = build_app()
    app.on_startup.append(lambda app: hook(app, "startup"))
    app.on_shutdown.append(lambda app: hook(app, "shutdown"))
    app.on_cleanup.append(lambda app: hook(app, "cleanup"))
    async with trio_ws.testing.open_test_server(app):
        assert events == ["startup"]
    assert events == ["startup", "shutdown", "cleanup"]


async def test_shutdown_timeout_bounds_a_stuck_handler() -> None:
    entered = trio.Event()

    async def stuck(request: web.Request) -> web.Response:
        entered.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    app = web.Application()
    app.router.add_get("/stuck", stuck)
    errors: list[BaseException] = []

    async def call(server: TestServer) -> None:
        async with trio_ws.testing.open_test_client(server) as client:
            try:
                await client.get("/stuck", timeout=TIMEOUT)
            except Exception as exc:
                errors.append(exc)

    async with trio.open_nursery() as nursery:
        async with trio_ws.testing.open_test_server(app, shutdown_timeout=0.2) as server:
            nursery.start_soon(call, server)
            with trio.fail_after(TIMEOUT):
                await entered.wait()
            start = trio.current_time()
        # The block waited for the handler 0.2 s, then cancelled it.
        assert 0.2 <= trio.current_time() - start < TIMEOUT / 2
    # The client saw its connection closed without an answer, before its own timeout.
    assert len(errors) == 1
    assert isinstance(errors[0], trio.BrokenResourceError), errors


# ----------------------------------------------------------------- the client


async def test_ws_connect_in_async_with(client: TestClient) -> None:
    assert repr(client).startswith("<TestClient for <TestServer http://127.0.0.1:")
    async with client.ws_connect("/ws", protocols=["chat"]) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("one")
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_str(timeout=TIMEOUT) == "-:one"
        assert await ws.receive_bytes(timeout=TIMEOUT) == b"\x00\x01"
    assert ws.closed
    assert ws.close_code == WSCloseCode.OK


async def test_awaited_ws_connect_is_closed_with_the_client() -> None:
    async with trio_ws.testing.open_test_client(build_app()) as client:
        ws = await client.ws_connect("/ws")
        await ws.send_str("x")
        assert await ws.receive_str(timeout=TIMEOUT) == "-:x"
    assert ws.closed
    assert ws.close_code == WSCloseCode.OK


async def test_client_headers_reach_the_handshake() -> None:
    async with trio_ws.testing.open_test_client(build_app(), headers={"X-Tag": "t1"}) as client:
        async with client.ws_connect("/ws") as ws:
            await ws.send_str("a")
            assert await ws.receive_str(timeout=TIMEOUT) == "t1:a"
    async with trio_ws.testing.open_test_client(build_app()) as client:
        async with client.ws_connect("/ws", headers={"X-Tag": "t2"}) as ws:
            await ws.send_str("b")
            assert await ws.receive_str(timeout=TIMEOUT) == "t2:b"


async def test_call_headers_replace_session_headers() -> None:
    async with trio_ws.testing.open_test_client(build_app(), headers={"X-Tag": "t1"}) as client:
        async with client.ws_connect("/ws", headers={"X-Tag": "t2"}) as ws:
            await ws.send_str("b")
            assert await ws.receive_str(timeout=TIMEOUT) == "t2:b"


async def test_ws_connect_to_a_plain_route_raises_handshake_error(client: TestClient) -> None:
    with pytest.raises(trio_ws.WSServerHandshakeError) as info:
        async with client.ws_connect("/hello"):
            pytest.fail("must not connect")  # pragma: no cover
    assert info.value.status == 200


async def test_get_text_and_headers(client: TestClient) -> None:
    response = await client.get("/hello?name=trio")
    assert isinstance(response, TestResponse)
    assert response.status == 200
    assert response.reason == "OK"
    assert response.content_type == "text/plain"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "héllo trio"
    assert response.body == "héllo trio".encode()
    assert "body" not in repr(response)


async def test_get_decodes_the_declared_charset(client: TestClient) -> None:
    response = await client.get("/latin")
    assert response.text == "café"


async def test_get_missing_route_is_a_response_not_an_error(client: TestClient) -> None:
    response = await client.get("/nowhere", headers=[("Accept", "text/plain")])
    assert response.status == 404
    assert response.text.startswith("404")


async def test_request_with_a_json_body(client: TestClient) -> None:
    response = await client.request(
        "post",
        "/json",
        data=json.dumps({"a": [1, 2]}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.json() == {"got": {"a": [1, 2]}, "method": "POST"}


async def test_get_times_out() -> None:
    release = trio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    async with trio_ws.testing.open_test_client(app) as client:
        with pytest.raises(trio.TooSlowError):
            await client.get("/slow", timeout=0.2)
        release.set()
        assert (await client.get("/slow", timeout=TIMEOUT)).text == "late"


async def test_client_for_a_running_server_leaves_it_running() -> None:
    async with trio_ws.testing.open_test_server(build_app()) as server:
        async with trio_ws.testing.open_test_client(server) as client:
            assert client.server is server
            assert (await client.get("/hello")).status == 200
        assert not server.closed
        async with trio_ws.testing.open_test_client(server) as client:
            assert (await client.get("/hello")).status == 200


# ------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_server_and_client(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    app = build_app()
    async with trio_ws.testing.open_test_server(app, ssl_context=server_context) as server:
        assert server.secure
        assert server.url("/x").startswith("https://127.0.0.1:")
        assert server.ws_url("/x").startswith("wss://127.0.0.1:")
        async with trio_ws.testing.open_test_client(server, ssl=client_context) as client:
            assert (await client.get("/hello")).text == "héllo world"
            async with client.ws_connect("/ws") as ws:
                await ws.send_str("secret")
                assert await ws.receive_str(timeout=TIMEOUT) == "-:secret"
        # Without trusting the CA, the certificate is refused...
        async with trio_ws.testing.open_test_client(server) as client:
            with pytest.raises(trio.BrokenResourceError):
                await client.get("/hello")
            with pytest.raises(trio_ws.ClientConnectorCertificateError):
                async with client.ws_connect("/ws"):
                    pytest.fail("must not connect")  # pragma: no cover
        # ...unless checking is switched off.
        async with trio_ws.testing.open_test_client(server, ssl=False) as client:
            assert (await client.get("/hello")).status == 200
            async with client.ws_connect("/ws") as ws:
                await ws.send_str("x")
                assert await ws.receive_str(timeout=TIMEOUT) == "-:x"


# ----------------------------------------------------------- the docs example


async def test_the_documented_example_passes(tmp_path: Path) -> None:
    """docs/testing.md's ``chat.py`` and ``test_chat.py``, run by pytest as a user would."""
    page = (Path(__file__).parent.parent / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.DOTALL)
    (app,) = [b for b in blocks if "def build_app" in b]
    (tests,) = [b for b in blocks if "from chat import build_app" in b]
    (tmp_path / "chat.py").write_text(app)
    (tmp_path / "test_chat.py").write_text(tests)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\nfilterwarnings = error\n")
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat.py"],
            cwd=tmp_path,
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            check=False,
        )
    output = result.stdout.decode()
    assert result.returncode == 0, output
    assert re.search(r"\b5 passed\b", output), output
