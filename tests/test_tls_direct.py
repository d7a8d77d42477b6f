"""DirectTLS (trio_ws._engine._tls): a handshaken trio.SSLStream driven on its own socket."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trustme

from trio_ws._engine._tls import DirectTLS

pytestmark = pytest.mark.skipif(os.name != "posix", reason="DirectTLS is POSIX only")


@asynccontextmanager
async def tls_pair() -> AsyncIterator[
    tuple[trio.SSLStream[trio.SocketStream], trio.SSLStream[trio.SocketStream]]
]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept)
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
    client = trio.SSLStream(tcp, client_ctx, server_hostname="127.0.0.1")
    server = trio.SSLStream(accepted[0], server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    try:
        yield client, server
    finally:
        for s in (client, server, *listeners):
            await trio.aclose_forcefully(s)


async def test_take_over_needs_a_handshaken_tls_stream_over_a_socket() -> None:
    a, _b = trio.testing.memory_stream_pair()
    assert DirectTLS.take_over(a) is None
    with trio.fail_after(10):
        async with tls_pair() as (client, _server):
            direct = DirectTLS.take_over(client)
            assert direct is not None
            assert direct.ssl_stream is client
            assert direct.transport_stream is client.transport_stream


async def test_many_small_records_arrive_in_one_call_and_both_ways_work() -> None:
    with trio.fail_after(10):
        async with tls_pair() as (client, server):
            direct = DirectTLS.take_over(server)
            assert direct is not None
            for i in range(200):  # one TLS record each
                await client.send_all(b"m%03d;" % i)
            got = b""
            calls = 0
            while len(got) < 200 * 5:
                got += await direct.receive_some()
                calls += 1
            assert got == b"".join(b"m%03d;" % i for i in range(200))
            assert calls < 20  # SSLStream would need one call per record
            big = os.urandom(1 << 20)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(direct.send_all, big)
                echoed = b""
                while len(echoed) < len(big):
                    echoed += await client.receive_some(1 << 20)
            assert echoed == big


async def test_close_notify_is_eof_and_a_bare_close_is_broken() -> None:
    with trio.fail_after(10):
        async with tls_pair() as (client, server):
            direct = DirectTLS.take_over(server)
            assert direct is not None
            await client.send_all(b"last")
            await client.aclose()  # sends close_notify
            assert await direct.receive_some() == b"last"
            assert await direct.receive_some() == b""
        async with tls_pair() as (client, server):
            direct = DirectTLS.take_over(server)
            assert direct is not None
            await client.transport_stream.aclose()  # no close_notify
            with pytest.raises(trio.BrokenResourceError):
                await direct.receive_some()


async def test_aclose_sends_close_notify_and_closes_the_socket() -> None:
    with trio.fail_after(10):
        async with tls_pair() as (client, server):
            direct = DirectTLS.take_over(server)
            assert direct is not None
            await direct.aclose()
            assert await client.receive_some() == b""
            with pytest.raises(trio.ClosedResourceError):
                await direct.send_all(b"x")


async def test_wss_connections_use_it_on_both_sides_and_keep_their_tls_details() -> None:
    from trio_ws import ClientSession, WSMsgType, web

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    kinds: list[str] = []
    ciphers: list[object] = []

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        kinds.append(type(ws._stream).__name__)
        ciphers.append(ws.get_extra_info("cipher"))
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    big = os.urandom(1 << 20)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            site = await nursery.start(
                lambda task_status: web.serve(
                    app, "127.0.0.1", 0, ssl_context=server_ctx, task_status=task_status
                )
            )
            async with ClientSession() as session:
                async with session.ws_connect(
                    f"wss://127.0.0.1:{site.port}/ws", ssl=client_ctx
                ) as ws:
                    kinds.append(type(ws._stream).__name__)
                    assert ws.get_extra_info("peercert") is not None
                    for payload in (b"small", big, b"", b"x" * 70_000):
                        await ws.send_bytes(payload)
                        assert await ws.receive_bytes() == payload
                    await ws.close()
                    assert ws.close_code == 1000
            nursery.cancel_scope.cancel()
    assert kinds == ["DirectTLS", "DirectTLS"]
    assert ciphers and ciphers[0] is not None


async def test_a_send_waits_for_the_write_in_progress_and_keeps_the_order() -> None:
    """While one task's records wait for the socket, another send waits its turn (never
    BusyResourceError): the reader does this when reading produced records to send."""
    with trio.fail_after(20):
        async with tls_pair() as (client, server):
            direct = DirectTLS.take_over(server)
            assert direct is not None
            big = os.urandom(8 << 20)  # more than the socket buffers hold
            async with trio.open_nursery() as nursery:
                nursery.start_soon(direct.send_all, big)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(direct.send_all, b"after")
                await trio.testing.wait_all_tasks_blocked()
                got = b""
                while len(got) < len(big) + 5:
                    got += await client.receive_some(1 << 20)
            assert got[: len(big)] == big and got[len(big) :] == b"after"
