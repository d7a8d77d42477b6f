"""The client side of the HTTP upgrade: TCP, TLS, CONNECT proxies and one h11 exchange.

Theory of operation: :func:`open_upgraded_stream` connects (directly or
through an HTTP proxy's CONNECT tunnel), wraps TLS when asked, writes one GET
request with the caller's headers and reads the response head with h11. It
returns the stream, the status, the headers and any bytes read past the head;
the caller decides whether the answer is an acceptable upgrade. Every failure
is translated here into one of trio_ws's documented client exceptions.

Never: parse WebSocket frames, or leave a stream open on failure.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl as _ssl
from dataclasses import dataclass

import h11
import trio

from .._exceptions import (
    ClientConnectorCertificateError,
    ClientConnectorDNSError,
    ClientConnectorError,
    ClientHttpProxyError,
    ClientOSError,
    ServerConnectionError,
)
from ._headers import Headers

__all__ = ["UpgradeResponse", "open_upgraded_stream"]

_MAX_ERROR_BODY = 64 * 1024


@dataclass
class UpgradeResponse:
    """The server's answer to the upgrade request."""

    stream: trio.abc.Stream
    status: int
    reason: str
    headers: Headers
    body: bytes
    trailing_data: bytes


async def _tcp(host: str, port: int) -> trio.SocketStream:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    try:
        if address is not None:
            # An IP literal: one connect, without open_tcp_stream's resolver
            # and happy-eyeballs nursery (a third of a local handshake's CPU).
            return await _connect_literal(host, port, address.version)
        return await trio.open_tcp_stream(host, port)
    except socket.gaierror as exc:
        raise ClientConnectorDNSError(
            f"Cannot connect to host {host}:{port}: name resolution failed ({exc})"
        ) from exc
    except OSError as exc:
        raise ClientConnectorError(f"Cannot connect to host {host}:{port}: {exc}") from exc


async def _connect_literal(host: str, port: int, version: int) -> trio.SocketStream:
    family = trio.socket.AF_INET6 if version == 6 else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _tls(
    stream: trio.abc.Stream, host: str, ssl_context: _ssl.SSLContext
) -> trio.SSLStream[trio.abc.Stream]:
    tls = trio.SSLStream(stream, ssl_context, server_hostname=host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        cause = exc.__cause__
        # The server hanging up mid-handshake is a broken connection, not a TLS failure.
        if isinstance(cause, _ssl.SSLError) and not isinstance(cause, _ssl.SSLEOFError):
            raise ClientConnectorCertificateError(
                f"TLS handshake with {host} failed: {cause}"
            ) from exc
        raise ClientConnectorError(f"TLS handshake with {host} failed: {exc}") from exc
    return tls


async def _exchange(
    stream: trio.abc.Stream, request: h11.Request, *, method_connect: bool = False
) -> tuple[h11.Response | h11.InformationalResponse, bytes, bytes]:
    """Send ``request``; return the response head, a bounded body and trailing bytes."""
    conn = h11.Connection(h11.CLIENT)
    eof = False
    got_any = False
    head: h11.Response | h11.InformationalResponse | None = None
    body: list[bytes] = []
    size = 0
    try:
        await stream.send_all((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                eof = not data
                got_any = got_any or not eof
                conn.receive_data(data)  # type: ignore[arg-type]
                continue
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return event, b"", bytes(conn.trailing_data[0])
                continue
            if isinstance(event, h11.Response):
                head = event
                if method_connect and 200 <= event.status_code < 300:
                    return event, b"", bytes(conn.trailing_data[0])
                continue
            if isinstance(event, h11.Data):
                body.append(bytes(event.data))
                size += len(event.data)
                if size >= _MAX_ERROR_BODY:
                    # Enough to report: a refusal with an endless body must
                    # not hold the caller until the handshake timeout.
                    assert head is not None  # h11 sends Data only after a Response
                    return head, b"".join(body)[:_MAX_ERROR_BODY], b""
                continue
            if event is h11.PAUSED or isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                if head is None:
                    raise ServerConnectionError("Server disconnected before a response")
                return head, b"".join(body), b""
    except h11.RemoteProtocolError as exc:
        if eof and head is not None:
            # The body was cut short: the status is still the answer.
            return head, b"".join(body), b""
        if eof:
            where = "in the middle of the response head" if got_any else "before a response"
            raise ServerConnectionError(f"Server disconnected {where}") from exc
        raise ServerConnectionError(f"Invalid HTTP response: {exc}") from exc
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        if head is not None:
            return head, b"".join(body), b""
        raise ServerConnectionError(f"Connection lost during the handshake: {exc}") from exc
    except OSError as exc:
        raise ClientOSError(f"Connection failed during the handshake: {exc}") from exc


def _host_header(host: str, port: int, default_port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default_port else f"{shown}:{port}"


async def _through_proxy(
    proxy_host: str,
    proxy_port: int,
    target_host: str,
    target_port: int,
    proxy_headers: list[tuple[str, str]],
) -> tuple[trio.abc.Stream, bytes]:
    stream = await _tcp(proxy_host, proxy_port)
    authority = _host_header(target_host, target_port, -1)
    request = h11.Request(
        method="CONNECT",
        target=authority,
        headers=[("Host", authority), *proxy_headers],
    )
    try:
        head, body, trailing = await _exchange(stream, request, method_connect=True)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    if not 200 <= head.status_code < 300:
        await trio.aclose_forcefully(stream)
        raise ClientHttpProxyError(
            f"Proxy refused CONNECT: {head.status_code} {head.reason.decode('latin-1')}",
            status=head.status_code,
            headers=Headers.from_raw(head.headers.raw_items()),
            body=body,
        )
    return stream, trailing


async def open_upgraded_stream(
    *,
    host: str,
    port: int,
    target: str,
    headers: list[tuple[str, str]],
    ssl_context: _ssl.SSLContext | None,
    proxy: tuple[str, int] | None = None,
    proxy_headers: list[tuple[str, str]] | None = None,
) -> UpgradeResponse:
    """Connect to ``host:port`` and send ``GET target`` with ``headers``.

    Raises ``ClientConnectorDNSError`` (name resolution), ``ClientConnectorError``
    (refused, unreachable), ``ClientConnectorCertificateError`` (TLS),
    ``ClientHttpProxyError`` (the proxy refused CONNECT) and
    ``ServerConnectionError`` (the connection broke or the answer was not HTTP).
    """
    if proxy is not None:
        stream, early = await _through_proxy(proxy[0], proxy[1], host, port, proxy_headers or [])
        if early:
            await trio.aclose_forcefully(stream)
            raise ServerConnectionError("Proxy sent data before the tunnel was used")
    else:
        stream = await _tcp(host, port)
    try:
        if ssl_context is not None:
            stream = await _tls(stream, host, ssl_context)
        default_port = 443 if ssl_context is not None else 80
        request = h11.Request(
            method="GET",
            target=target,
            headers=[("Host", _host_header(host, port, default_port)), *headers],
        )
        head, body, trailing = await _exchange(stream, request)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return UpgradeResponse(
        stream=stream,
        status=head.status_code,
        reason=head.reason.decode("latin-1"),
        headers=Headers.from_raw(head.headers.raw_items()),
        body=body,
        trailing_data=trailing,
    )
