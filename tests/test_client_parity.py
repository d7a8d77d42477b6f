"""The client's aiohttp parity (issue 16): headers, option checks, timeouts, ``compress``,
``async with await ws_connect()``, and the exceptions aiohttp code catches.

Where aiohttp's own behaviour is the reference, the test runs aiohttp's client against the
same server (in a thread with its own event loop) and compares.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from wsproto.utilities import generate_accept_token

import trio_ws
from trio_ws import WSMsgType, web
from trio_ws.testing import open_test_server

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
BOUND = 10


# ------------------------------------------------------------------ helpers


@dataclass
class Recorder:
    """A raw server that records each request head and answers a plain 101 (or ``answer``)."""

    port: int = 0
    heads: list[list[tuple[str, str]]] = field(default_factory=list)
    connections: int = 0

    def headers(self, index: int = -1) -> list[tuple[str, str]]:
        return self.heads[index]

    def values(self, name: str, index: int = -1) -> list[str]:
        return [v for k, v in self.heads[index] if k.lower() == name.lower()]


def parse_head(raw: bytes) -> list[tuple[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")[1:]
    return [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines if line)]


@asynccontextmanager
async def recording_server(answer: bytes | None = None) -> AsyncIterator[Recorder]:
    """Answer every upgrade with a 101 (or ``answer``), then wait for the client to leave."""
    rec = Recorder()

    async def handle(stream: trio.SocketStream) -> None:
        rec.connections += 1
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                head += chunk
            headers = parse_head(head.partition(b"\r\n\r\n")[0])
            rec.heads.append(headers)
            if answer is not None:
                await stream.send_all(answer)
                return
            key = next(v for k, v in headers if k.lower() == "sec-websocket-key")
            await stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + generate_accept_token(key.encode())
                + b"\r\n\r\n"
            )
            while await stream.receive_some(65536):
                pass  # never answer: the client's close times out
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
        rec.port = listeners[0].socket.getsockname()[1]
        yield rec
        nursery.cancel_scope.cancel()


async def in_asyncio(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``make()`` under asyncio in a worker thread (aiohttp's side of a comparison)."""
    return await trio.to_thread.run_sync(lambda: asyncio.run(make()))


async def aiohttp_connect(url: str, **kwargs: Any) -> dict[str, Any]:
    """Connect with aiohttp's client, close at once, and report what it saw."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, **kwargs) as ws:
            seen = {"compress": ws.compress, "protocol": ws.protocol}
            await ws.close()
            return seen


def echo_app() -> web.Application:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


@asynccontextmanager
async def aiohttp_echo_server() -> AsyncIterator[int]:
    """aiohttp's own WebSocket server, in a thread (permessage-deflate on, as its default)."""
    from aiohttp import web as aioweb

    ready = trio.Event()
    port: list[int] = []
    token = trio.lowlevel.current_trio_token()
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def handler(request: aioweb.Request) -> aioweb.WebSocketResponse:
        ws = aioweb.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    async def main() -> None:
        app = aioweb.Application()
        app.router.add_get("/ws", handler)
        runner = aioweb.AppRunner(app)
        await runner.setup()
        site = aioweb.TCPSite(runner, HOST, 0)
        await site.start()
        port.append(runner.addresses[0][1])
        stopped = asyncio.Event()
        stop.append((asyncio.get_running_loop(), stopped))
        trio.from_thread.run_sync(ready.set, trio_token=token)
        try:
            await stopped.wait()
        finally:
            await runner.cleanup()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, lambda: asyncio.run(main()))
        await ready.wait()
        try:
            yield port[0]
        finally:
            loop, stopped = stop[0]
            loop.call_soon_threadsafe(stopped.set)


# --------------------------------------------------- 1. handshake headers


#: The caller's headers in the comparison: each default the caller may replace.
CALLER_HEADERS = {
    "Sec-WebSocket-Version": "13",
    "Upgrade": "WebSocket",
    "Connection": "keep-alive, Upgrade",
    "Host": "example.test",
    "User-Agent": "porter/1.0",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Protocol": "from-header",
    "Origin": "http://from-header",
    "X-Custom": "1",
}
#: Headers whose value or presence is compared with aiohttp's.
COMPARED = {name.lower() for name in CALLER_HEADERS} - {"sec-websocket-key"} | {
    "sec-websocket-extensions",
    "authorization",
    "x-session",
}


def compared(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v.replace(", ", ",")) for k, v in headers if k.lower() in COMPARED)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"protocols": ["chat"], "origin": "http://from-option", "compress": 15},
    ],
    ids=["headers-only", "options-replace-headers"],
)
async def test_headers_merge_as_aiohttp(options: dict[str, Any]) -> None:
    """Defect 6: a caller's header of a default's name is sent once, as aiohttp sends it."""
    with trio.fail_after(BOUND):
        async with recording_server() as rec:
            url = f"ws://{HOST}:{rec.port}/"
            async with trio_ws.ClientSession(headers={"X-Session": "s", "X-Custom": "0"}) as s:
                async with s.ws_connect(url, headers=CALLER_HEADERS, timeout=0.1, **options):
                    pass

            async def aiohttp_side() -> None:
                import aiohttp

                async with aiohttp.ClientSession(headers={"X-Session": "s", "X-Custom": "0"}) as s:
                    async with s.ws_connect(
                        url,
                        headers=CALLER_HEADERS,
                        timeout=aiohttp.ClientWSTimeout(ws_close=0.1),
                        **options,
                    ):
                        pass

            await in_asyncio(aiohttp_side)
            ours, theirs = rec.headers(0), rec.headers(1)
            assert compared(ours) == compared(theirs)
            for name in ("Sec-WebSocket-Version", "Upgrade", "Connection", "Host", "User-Agent"):
                assert len(rec.values(name, 0)) == 1, name
            # The key is always generated (a caller's would make every accept check fail).
            assert rec.values("Sec-WebSocket-Key", 0) != [CALLER_HEADERS["Sec-WebSocket-Key"]]


async def test_caller_version_header_is_sent_once() -> None:
    """Defect 6 as reported: ``Sec-WebSocket-Version`` from the caller was sent twice."""
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            async with session.ws_connect(
                f"ws://{HOST}:{rec.port}/",
                headers={"Sec-WebSocket-Version": "13", "Connection": "keep-alive, Upgrade"},
                timeout=0.1,
            ):
                pass
    assert rec.values("Sec-WebSocket-Version") == ["13"]
    assert rec.values("Connection") == ["keep-alive, Upgrade"]


async def test_auth_conflicts_raise_value_error_as_aiohttp() -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            auth = trio_ws.BasicAuth("u", "p")
            with pytest.raises(ValueError, match="Authorization"):
                async with session.ws_connect(
                    f"ws://{HOST}:{rec.port}/", auth=auth, headers={"Authorization": "x"}
                ):
                    pass
            with pytest.raises(ValueError, match="URL"):
                async with session.ws_connect(f"ws://a:b@{HOST}:{rec.port}/", auth=auth):
                    pass
            assert rec.connections == 0


# ------------------------------------------- 2. option checks (defect 7)


@pytest.mark.parametrize("compress", [1, 8, 16, -1, True])
@pytest.mark.parametrize("form", ["async with", "await"])
async def test_compress_outside_window_bits_raises_value_error(compress: int, form: str) -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            with pytest.raises(ValueError, match="compress"):
                if form == "await":
                    await session.ws_connect(f"ws://{HOST}:{rec.port}/", compress=compress)
                else:
                    async with session.ws_connect(f"ws://{HOST}:{rec.port}/", compress=compress):
                        pass
            assert rec.connections == 0


@pytest.mark.parametrize("bad", [42, "yes", object(), b"\x00" * 32])
async def test_ssl_of_another_type_raises_type_error(bad: object) -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            with pytest.raises(TypeError, match="ssl"):
                async with session.ws_connect(f"wss://{HOST}:{rec.port}/", ssl=bad):  # type: ignore[arg-type]
                    pass
            assert rec.connections == 0


async def test_ssl_none_is_accepted_as_in_aiohttp() -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://{HOST}:{rec.port}/", ssl=None, timeout=0.1):
                pass
            assert rec.connections == 1


# ------------------------------------------------ 3. ClientWSTimeout


async def test_client_ws_timeout_bounds_receive_and_close() -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            timeout = trio_ws.ClientWSTimeout(ws_receive=0.2, ws_close=0.3)
            ws = await session.ws_connect(f"ws://{HOST}:{rec.port}/", timeout=timeout)
            start = trio.current_time()
            with pytest.raises(TimeoutError):
                await ws.receive()
            assert 0.2 <= trio.current_time() - start < 1.5
            start = trio.current_time()
            assert await ws.close() is True  # the recorder never answers the close
            assert 0.3 <= trio.current_time() - start < 1.5
            assert ws.close_code == 1006


async def test_receive_timeout_argument_overrides_ws_receive() -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            timeout = trio_ws.ClientWSTimeout(ws_receive=30, ws_close=0.1)
            async with session.ws_connect(
                f"ws://{HOST}:{rec.port}/", timeout=timeout, receive_timeout=0.1
            ) as ws:
                with pytest.raises(TimeoutError):
                    await ws.receive()


async def test_timeout_of_another_type_raises_type_error() -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            with pytest.raises(TypeError, match="timeout"):
                async with session.ws_connect(f"ws://{HOST}:{rec.port}/", timeout="5"):  # type: ignore[arg-type]
                    pass
            assert rec.connections == 0


async def test_float_timeout_still_bounds_the_close() -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            async with session.ws_connect(f"ws://{HOST}:{rec.port}/", timeout=0.2) as ws:
                start = trio.current_time()
                await ws.close()
                assert 0.2 <= trio.current_time() - start < 1.5


def test_client_ws_timeout_value_object() -> None:
    t = trio_ws.ClientWSTimeout(ws_receive=1.0)
    assert (t.ws_receive, t.ws_close) == (1.0, None)
    assert t == trio_ws.ClientWSTimeout(1.0, None)
    with pytest.raises(ValueError):
        trio_ws.ClientWSTimeout(ws_close=-1)


# --------------------------------------------------- 4. compress is window bits


@pytest.mark.parametrize("compress", [0, 15, 12, 9])
async def test_compress_reports_window_bits_as_aiohttp(compress: int) -> None:
    with trio.fail_after(BOUND):
        async with aiohttp_echo_server() as port, trio_ws.ClientSession() as session:
            url = f"ws://{HOST}:{port}/ws"
            async with session.ws_connect(url, compress=compress) as ws:
                ours = ws.compress
            theirs = await in_asyncio(lambda: aiohttp_connect(url, compress=compress))
            assert type(ours) is int
            # The client's own window (aiohttp's server never limits it): 15, or 0 when off.
            assert ours == theirs["compress"] == (15 if compress else 0)


# -------------------------------------------------- 5. async with await ws_connect


async def test_async_with_await_ws_connect_closes_on_exit() -> None:
    with trio.fail_after(BOUND):
        async with open_test_server(echo_app()) as server, trio_ws.ClientSession() as session:
            async with await session.ws_connect(server.ws_url("/ws")) as ws:
                await ws.send_str("hi")
                assert await ws.receive_str() == "hi"
            assert ws.closed
            assert ws.close_code == 1000
            await trio.testing.wait_all_tasks_blocked()
            assert ws not in session._owned


# ------------------------------------------------------------ 6. exceptions

#: trio_ws's exceptions with aiohttp's names, checked against aiohttp's own classes.
PARITY_NAMES = [
    "ClientError",
    "ClientConnectionError",
    "ClientConnectionResetError",
    "ClientOSError",
    "ClientConnectorError",
    "ClientConnectorDNSError",
    "ClientProxyConnectionError",
    "ClientSSLError",
    "ClientConnectorSSLError",
    "ClientConnectorCertificateError",
    "ServerConnectionError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "ConnectionTimeoutError",
    "ServerFingerprintMismatch",
    "ClientResponseError",
    "WSServerHandshakeError",
    "ClientHttpProxyError",
    "InvalidURL",
    "WSMessageTypeError",
]


@pytest.mark.parametrize("name", PARITY_NAMES)
def test_exception_hierarchy_matches_aiohttp(name: str) -> None:
    """Every aiohttp base class (its own and the standard library's) is a base in trio_ws too."""
    import aiohttp

    theirs = getattr(aiohttp, name)
    ours = getattr(trio_ws, name)
    for base in theirs.__mro__:
        if base.__module__.startswith("aiohttp"):
            if base.__name__ in PARITY_NAMES:
                assert issubclass(ours, getattr(trio_ws, base.__name__)), base
        elif base is not object:
            assert issubclass(ours, base), base


def test_ws_handshake_error_is_a_plain_exception() -> None:
    from aiohttp.http_websocket import WSHandshakeError

    assert trio_ws.WSHandshakeError.__mro__[1:] == WSHandshakeError.__mro__[1:]


@pytest.mark.parametrize("form", ["async with", "await"])
async def test_refused_connection_has_host_port_os_error_and_errno(form: str) -> None:
    with socket.socket() as reserved, trio.fail_after(BOUND):
        reserved.bind((HOST, 0))
        port = reserved.getsockname()[1]
        async with trio_ws.ClientSession() as session:
            with pytest.raises(trio_ws.ClientConnectorError) as info:
                if form == "await":
                    await session.ws_connect(f"ws://{HOST}:{port}/")
                else:
                    async with session.ws_connect(f"ws://{HOST}:{port}/"):
                        pass
    err = info.value
    assert (err.host, err.port) == (HOST, port)
    assert isinstance(err.os_error, ConnectionRefusedError)
    assert err.errno == errno.ECONNREFUSED
    assert str(err).startswith(f"Cannot connect to host {HOST}:{port} ssl:default [")


async def test_server_hanging_up_before_answering_is_server_disconnected() -> None:
    with trio.fail_after(BOUND):
        async with recording_server(answer=b"") as rec, trio_ws.ClientSession() as session:
            with pytest.raises(trio_ws.ServerDisconnectedError) as info:
                async with session.ws_connect(f"ws://{HOST}:{rec.port}/"):
                    pass
    # Code written for trio_ws before this name existed keeps catching it.
    assert isinstance(info.value, trio_ws.ServerConnectionError)
    assert info.value.message.startswith("Server disconnected")


async def test_handshake_error_carries_request_info_and_history() -> None:
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nX-Why: Nope\r\n\r\nno"
    with trio.fail_after(BOUND):
        async with recording_server(answer=answer) as rec, trio_ws.ClientSession() as session:
            url = f"ws://{HOST}:{rec.port}/chat?room=1"
            with pytest.raises(trio_ws.WSServerHandshakeError) as info:
                async with session.ws_connect(url, headers={"X-Trace": "t"}):
                    pass
    err = info.value
    assert err.status == 403
    assert err.message == "Invalid response status"
    assert err.history == ()
    assert err.request_info.url == err.request_info.real_url == url
    assert err.request_info.method == "GET"
    assert err.request_info.headers["x-trace"] == "t"
    assert err.request_info.headers["Sec-WebSocket-Key"] == rec.values("Sec-WebSocket-Key")[0]
    assert err.headers["x-why"] == "Nope"  # case-insensitive, as aiohttp's
    assert err.args == (err.request_info, ())
    assert str(err) == f"403, message='Invalid response status', url={url!r}"


async def test_bad_extension_answer_is_caused_by_ws_handshake_error() -> None:
    bad = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=3\r\n"
    )
    with trio.fail_after(BOUND):
        async with _accepting(bad) as port, trio_ws.ClientSession() as session:
            with pytest.raises(trio_ws.WSServerHandshakeError) as info:
                async with session.ws_connect(f"ws://{HOST}:{port}/", compress=15):
                    pass
    # As aiohttp: the parse error is the cause, and the handshake error is not one.
    assert isinstance(info.value.__cause__, trio_ws.WSHandshakeError)
    assert not isinstance(info.value, trio_ws.WSHandshakeError)


@asynccontextmanager
async def _accepting(head: bytes) -> AsyncIterator[int]:
    """Answer the upgrade with ``head`` plus a correct accept header."""

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        key = next(v for k, v in parse_head(data) if k.lower() == "sec-websocket-key")
        accept = b"Sec-WebSocket-Accept: " + generate_accept_token(key.encode()) + b"\r\n\r\n"
        await stream.send_all(head + accept)
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


# ----------------------------------------------------- 7. helpful errors


class TwoAddresses(trio.abc.HostnameResolver):
    """Resolves ``several.test`` to two loopback addresses (both refused in the test)."""

    async def getaddrinfo(
        self, host: bytes | None, port: bytes | str | int | None, *args: Any, **kwargs: Any
    ) -> list[Any]:
        assert host == b"several.test"
        port = int(port)  # type: ignore[arg-type]
        stream = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        return [(*stream, ("127.0.0.1", port)), (*stream, ("127.0.0.2", port))]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError  # pragma: no cover


async def test_refused_on_every_address_names_the_last_os_error() -> None:
    with socket.socket() as reserved, trio.fail_after(BOUND):
        reserved.bind((HOST, 0))
        port = reserved.getsockname()[1]
        trio.socket.set_custom_hostname_resolver(TwoAddresses())
        try:
            async with trio_ws.ClientSession() as session:
                with pytest.raises(trio_ws.ClientConnectorError) as info:
                    async with session.ws_connect(f"ws://several.test:{port}/"):
                        pass
        finally:
            trio.socket.set_custom_hostname_resolver(None)
    err = info.value
    assert (err.host, err.port) == ("several.test", port)
    assert err.errno == errno.ECONNREFUSED
    assert isinstance(err.os_error, ConnectionRefusedError)
    # The last attempt was 127.0.0.2: its address and the reason are in the message.
    assert "127.0.0.2" in str(err) and "refused" in str(err).lower()
    assert "all attempts" not in str(err)


async def test_wss_to_a_plain_http_server_is_not_a_certificate_error() -> None:
    with trio.fail_after(BOUND):
        async with open_test_server(echo_app()) as server, trio_ws.ClientSession() as session:
            with pytest.raises(trio_ws.ClientConnectorSSLError) as info:
                async with session.ws_connect(f"wss://{HOST}:{server.port}/ws", ssl=False):
                    pass
    err = info.value
    assert not isinstance(err, trio_ws.ClientConnectorCertificateError)
    assert isinstance(err, ssl.SSLError) and isinstance(err, trio_ws.ClientSSLError)
    assert "certificate" not in str(err).lower()
    assert (err.host, err.port) == (HOST, server.port)


async def test_untrusted_certificate_is_a_certificate_error() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server_ctx)
    with trio.fail_after(BOUND):
        async with (
            open_test_server(echo_app(), ssl_context=server_ctx) as server,
            trio_ws.ClientSession() as session,
        ):
            with pytest.raises(trio_ws.ClientConnectorCertificateError) as info:
                async with session.ws_connect(f"wss://{HOST}:{server.port}/ws"):
                    pass
    assert isinstance(info.value.certificate_error, ssl.SSLCertVerificationError)
    assert isinstance(info.value, ssl.CertificateError)


async def test_fingerprint_pins_the_server_certificate() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    good = trio_ws.Fingerprint(hashlib.sha256(der).digest())
    bad = trio_ws.Fingerprint(hashlib.sha256(b"other").digest())
    with trio.fail_after(BOUND):
        async with (
            open_test_server(echo_app(), ssl_context=server_ctx) as server,
            trio_ws.ClientSession() as session,
        ):
            url = f"wss://{HOST}:{server.port}/ws"
            # The CA is not trusted: the fingerprint alone lets the connection through.
            async with session.ws_connect(url, ssl=good) as ws:
                await ws.send_str("pinned")
                assert await ws.receive_str() == "pinned"
            with pytest.raises(trio_ws.ServerFingerprintMismatch) as info:
                async with session.ws_connect(url, ssl=bad):
                    pass
    assert info.value.expected == bad.fingerprint
    assert info.value.got == good.fingerprint
    with pytest.raises(ValueError, match="SHA-256"):
        trio_ws.Fingerprint(b"\x00" * 20)
    with pytest.raises(ValueError, match="length"):
        trio_ws.Fingerprint(b"\x00" * 31)


# ---------------------------------------------------- 8. compress defaults to 0


async def test_permessage_deflate_is_offered_only_when_asked() -> None:
    with trio.fail_after(BOUND):
        async with recording_server() as rec, trio_ws.ClientSession() as session:
            url = f"ws://{HOST}:{rec.port}/"
            async with session.ws_connect(url, timeout=0.1) as ws:
                assert ws.compress == 0
            assert rec.values("Sec-WebSocket-Extensions") == []
            async with session.ws_connect(url, timeout=0.1, compress=15):
                pass
            assert rec.values("Sec-WebSocket-Extensions") == [
                "permessage-deflate; client_max_window_bits"
            ]
            await in_asyncio(lambda: aiohttp_connect(url, timeout=_aiohttp_timeout(0.1)))
            assert rec.values("Sec-WebSocket-Extensions") == []


def _aiohttp_timeout(close: float) -> Any:
    import aiohttp

    return aiohttp.ClientWSTimeout(ws_close=close)


@pytest.mark.parametrize(
    "params",
    [{"a": "1", "b": "x y"}, [("a", "1"), ("b", "x y")], "a=1&b=x+y"],
    ids=["mapping", "pairs", "string"],
)
async def test_params_forms_accepted_by_aiohttp(params: Any) -> None:
    with trio.fail_after(BOUND):
        async with (
            recording_server(answer=b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n") as rec,
            trio_ws.ClientSession() as session,
        ):
            with pytest.raises(trio_ws.WSServerHandshakeError) as info:
                async with session.ws_connect(f"ws://{HOST}:{rec.port}/p?z=0", params=params):
                    pass
    assert info.value.request_info.url.endswith("/p?z=0&a=1&b=x+y")


async def test_unreachable_proxy_is_client_proxy_connection_error() -> None:
    with socket.socket() as reserved, trio.fail_after(BOUND):
        reserved.bind((HOST, 0))
        proxy_port = reserved.getsockname()[1]
        async with trio_ws.ClientSession() as session:
            with pytest.raises(trio_ws.ClientProxyConnectionError) as info:
                async with session.ws_connect(
                    "ws://example.test/ws", proxy=f"http://{HOST}:{proxy_port}"
                ):
                    pass
    assert (info.value.host, info.value.port) == (HOST, proxy_port)
    assert info.value.errno == errno.ECONNREFUSED


async def test_ws_connect_decode_text_false_gives_bytes() -> None:
    from trio_ws import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("héllo")
        await ws.send_str('{"a": 1}')
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    got: list[object] = []

    def loads(data: object) -> object:
        got.append(data)
        return {"parsed": True}

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            site = await nursery.start(web.serve, app, "127.0.0.1", 0)
            async with trio_ws.ClientSession() as session:
                async with session.ws_connect(
                    f"ws://127.0.0.1:{site.port}/ws", decode_text=False
                ) as ws:
                    assert await ws.receive_str() == "héllo".encode()
                    assert await ws.receive_json(loads=loads) == {"parsed": True}
            nursery.cancel_scope.cancel()
    assert got == [b'{"a": 1}']
