"""The client side of the HTTP upgrade: TCP, TLS, CONNECT proxies and one h11 exchange.

Theory of operation: :func:`open_connection` connects (directly or through
an HTTP proxy's CONNECT tunnel) and wraps TLS when asked; :func:`request_upgrade`
writes one GET request with the caller's headers on that stream and reads the
response head: by hand when the request and a ``101`` answer are plain
(``_head.py``, a strict subset of h11's grammar with the same results), with
h11 otherwise, fed every byte read so far, so that any other answer is read
exactly as h11 reads it. It returns the status, the headers and any bytes read
past the head; the caller decides whether the answer is an acceptable
upgrade. Every failure is translated here into one of trio_ws's documented
client exceptions, as aiohttp's connector and response reader raise them.

Never: parse WebSocket frames, or leave a stream open on failure.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import re
import socket
import ssl as _ssl
from dataclasses import dataclass

import h11
import trio

from .._exceptions import (
    ClientConnectorCertificateError,
    ClientConnectorDNSError,
    ClientConnectorError,
    ClientConnectorSSLError,
    ClientHttpProxyError,
    ClientOSError,
    ClientProxyConnectionError,
    RequestInfo,
    ServerConnectionError,
    ServerDisconnectedError,
    ServerFingerprintMismatch,
)
from ._head import find_head_end, parse_response_head
from ._headers import Headers
from ._io import socket_fd, write_now

__all__ = ["UpgradeResponse", "host_header", "open_connection", "request_upgrade"]

_MAX_ERROR_BODY = 64 * 1024
# h11's default bound on an incomplete head, which the client keeps.
_MAX_HEAD = 16 * 1024
_101 = b"HTTP/1.1 101"
# h11's grammar for what it writes (ASCII only, so str patterns match as its bytes ones).
_REQUEST_TARGET = re.compile(r"[\x21-\x7e]+")
_FIELD_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(r"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?", re.ASCII)
_FRAMING_NAMES = frozenset(("content-length", "transfer-encoding"))


@dataclass
class UpgradeResponse:
    """The server's answer to the upgrade request."""

    status: int
    reason: str
    headers: Headers
    body: bytes
    trailing_data: bytes


def _last_os_error(exc: OSError) -> OSError:
    """The error of the last attempt when ``open_tcp_stream`` tried several addresses."""
    # An ExceptionGroup of one OSError per attempt, in the order they failed
    # (looked up by attribute: Python 3.10 has no ExceptionGroup built in).
    found: BaseException | None = exc.__cause__
    while found is not None and getattr(found, "exceptions", None):
        found = found.exceptions[-1]  # type: ignore[attr-defined]
    return found if isinstance(found, OSError) else exc


async def _tcp(
    host: str,
    port: int,
    ssl_arg: object,
    error: type[ClientConnectorError] = ClientConnectorError,
) -> trio.SocketStream:
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
        raise ClientConnectorDNSError(host, port, exc, ssl_arg) from exc
    except OSError as exc:
        raise error(host, port, _last_os_error(exc), ssl_arg) from exc


async def _connect_literal(host: str, port: int, version: int) -> trio.SocketStream:
    if version == 4:
        return await _connect_ipv4(host, port)
    sock = trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _connect_ipv4(host: str, port: int) -> trio.SocketStream:
    """``trio.socket``'s connect for an IPv4 literal, without its address resolution.

    The same steps and errors as ``SocketType.connect`` (an immediate error
    as raised, a later one as ``OSError(errno, "Error connecting to ...")``,
    the socket closed when cancelled), minus a ``getaddrinfo`` call and a
    scheduler pass: a tenth of a local connect's time. Over loopback the
    connection is up when ``connect`` returns (still "in progress"), so it
    does not wait for writability then either.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await trio.lowlevel.checkpoint_if_cancelled()
        address = (host, port)
        try:
            sock.connect(address)
        except BlockingIOError:
            if not _connected(sock):
                await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"Error connecting to {address!r}: {os.strerror(err)}") from None
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


def _connected(sock: socket.socket) -> bool:
    """True once a non-blocking connect has completed (it has a peer)."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _os_cause(exc: BaseException) -> OSError | None:
    """The first ``OSError`` in ``exc``'s chain of causes."""
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    return cause


async def _tls(
    stream: trio.abc.Stream,
    host: str,
    port: int,
    ssl_context: _ssl.SSLContext,
    ssl_arg: object,
    fingerprint: bytes | None,
) -> trio.SSLStream[trio.abc.Stream]:
    tls = trio.SSLStream(stream, ssl_context, server_hostname=host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        cause = _os_cause(exc)
        if isinstance(cause, _ssl.CertificateError):
            raise ClientConnectorCertificateError(host, port, cause, ssl_arg) from exc
        if isinstance(cause, _ssl.SSLError) and not isinstance(cause, _ssl.SSLEOFError):
            # TLS itself failed: e.g. a plain-HTTP answer ("wrong version number").
            raise ClientConnectorSSLError(host, port, cause, ssl_arg) from exc
        # The server hung up or reset mid-handshake: a broken connection.
        if cause is None:
            cause = ConnectionResetError(
                errno.ECONNRESET, "Connection lost during the TLS handshake"
            )
        raise ClientConnectorError(host, port, cause, ssl_arg) from exc
    if fingerprint is not None:
        got = hashlib.sha256(tls.getpeercert(binary_form=True) or b"").digest()
        if got != fingerprint:
            await trio.aclose_forcefully(tls)
            raise ServerFingerprintMismatch(fingerprint, got, host, port)
    return tls


async def _exchange(
    stream: trio.abc.Stream,
    request: h11.Request,
    *,
    method_connect: bool = False,
    sent: bool = False,
    received: bytes = b"",
    eof: bool = False,
) -> tuple[h11.Response | h11.InformationalResponse, bytes, bytes]:
    """Send ``request``; return the response head, a bounded body and trailing bytes.

    ``sent``: the request was already written (by hand), and ``received``
    (then ``eof``) already read: h11 takes them as if it had done both.
    """
    conn = h11.Connection(h11.CLIENT)
    got_any = bool(received)
    head: h11.Response | h11.InformationalResponse | None = None
    body: list[bytes] = []
    size = 0
    try:
        out = (conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        if not sent:
            await stream.send_all(out)
        if received:
            conn.receive_data(received)
        if eof:
            conn.receive_data(b"")
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
                    raise ServerDisconnectedError("Server disconnected before a response")
                return head, b"".join(body), b""
    except h11.RemoteProtocolError as exc:
        if eof and head is not None:
            # The body was cut short: the status is still the answer.
            return head, b"".join(body), b""
        if eof:
            where = "in the middle of the response head" if got_any else "before a response"
            raise ServerDisconnectedError(f"Server disconnected {where}") from exc
        raise ServerConnectionError(f"Invalid HTTP response: {exc}") from exc
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        if head is not None:
            return head, b"".join(body), b""
        raise ServerConnectionError(f"Connection lost during the handshake: {exc}") from exc
    except OSError as exc:
        raise ClientOSError(f"Connection failed during the handshake: {exc}") from exc


def host_header(host: str, port: int, default_port: int) -> str:
    """The ``Host`` header value (the port left out when it is ``default_port``)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default_port else f"{shown}:{port}"


async def _through_proxy(
    proxy_host: str,
    proxy_port: int,
    target_host: str,
    target_port: int,
    proxy_headers: list[tuple[str, str]],
    ssl_arg: object,
) -> tuple[trio.abc.Stream, bytes]:
    stream = await _tcp(proxy_host, proxy_port, ssl_arg, ClientProxyConnectionError)
    authority = host_header(target_host, target_port, -1)
    headers = [("Host", authority), *proxy_headers]
    request = h11.Request(method="CONNECT", target=authority, headers=headers)
    try:
        head, body, trailing = await _exchange(stream, request, method_connect=True)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    if not 200 <= head.status_code < 300:
        await trio.aclose_forcefully(stream)
        url = f"http://{host_header(proxy_host, proxy_port, 80)}"
        raise ClientHttpProxyError(
            RequestInfo(url, "CONNECT", Headers(headers), url),
            (),
            status=head.status_code,
            message=f"Proxy refused CONNECT: {head.status_code} {head.reason.decode('latin-1')}",
            headers=Headers.from_raw(head.headers.raw_items()),
            body=body,
        )
    return stream, trailing


async def open_connection(
    *,
    host: str,
    port: int,
    ssl_context: _ssl.SSLContext | None,
    ssl_arg: object = True,
    fingerprint: bytes | None = None,
    proxy: tuple[str, int] | None = None,
    proxy_headers: list[tuple[str, str]] | None = None,
) -> trio.abc.Stream:
    """Connect to ``host:port`` (through ``proxy`` with CONNECT), with TLS if ``ssl_context``.

    ``ssl_arg`` is the caller's ``ssl=`` argument, shown in error messages;
    ``fingerprint`` a SHA-256 digest the server's certificate must have.
    Raises ``ClientConnectorDNSError`` (name resolution), ``ClientConnectorError``
    (refused, unreachable, or a hang-up during TLS), ``ClientProxyConnectionError``
    (the proxy is unreachable), ``ClientHttpProxyError`` (the proxy refused
    CONNECT), ``ClientConnectorCertificateError`` (the certificate was
    refused), ``ClientConnectorSSLError`` (TLS failed otherwise),
    ``ServerFingerprintMismatch`` and ``ServerConnectionError``.
    """
    if proxy is not None:
        stream, early = await _through_proxy(
            proxy[0], proxy[1], host, port, proxy_headers or [], ssl_arg
        )
        if early:
            await trio.aclose_forcefully(stream)
            raise ServerConnectionError("Proxy sent data before the tunnel was used")
    else:
        stream = await _tcp(host, port, ssl_arg)
    if ssl_context is not None:
        try:
            stream = await _tls(stream, host, port, ssl_context, ssl_arg, fingerprint)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return stream


async def request_upgrade(
    stream: trio.abc.Stream, *, target: str, headers: list[tuple[str, str]]
) -> UpgradeResponse:
    """Send ``GET target`` with ``headers`` (``Host`` included) and read the answer's head.

    Closes ``stream`` when it raises: ``ServerDisconnectedError`` (the server
    hung up before its head was complete), ``ServerConnectionError`` (reset,
    or an answer that is not HTTP) or ``ClientOSError``.
    """
    try:
        wire = _plain_request(target, headers)
        if wire is not None:
            return await _fast_upgrade(stream, wire, target, headers)
        request = h11.Request(method="GET", target=target, headers=headers)
        head, body, trailing = await _exchange(stream, request)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return UpgradeResponse(
        status=head.status_code,
        reason=head.reason.decode("latin-1"),
        headers=Headers.from_raw(head.headers.raw_items()),
        body=body,
        trailing_data=trailing,
    )


def _plain_request(target: str, headers: list[tuple[str, str]]) -> bytes | None:
    """The request head as h11 would write it; None when h11 must (it may refuse it)."""
    lines = [f"GET {target} HTTP/1.1\r\n"]
    hosts = []
    upgrade = False
    for name, value in headers:
        if _FIELD_NAME.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            return None
        lower = name.lower()
        if lower == "host":
            hosts.append(f"{name}: {value}\r\n")
            continue
        if lower in _FRAMING_NAMES:
            return None
        if lower == "upgrade" and any(t.strip() for t in value.split(",")):
            upgrade = True
        lines.append(f"{name}: {value}\r\n")
    # h11 wants one Host (written first), and takes a 101 only as the answer to an Upgrade.
    if len(hosts) != 1 or not upgrade or _REQUEST_TARGET.fullmatch(target) is None:
        return None
    lines.insert(1, hosts[0])
    lines.append("\r\n")
    head = "".join(lines)
    return head.encode("ascii") if head.isascii() else None


async def _fast_upgrade(
    stream: trio.abc.Stream, wire: bytes, target: str, headers: list[tuple[str, str]]
) -> UpgradeResponse:
    """Write ``wire`` and read a plain 101 by hand; any other answer is h11's to read."""
    received = b""
    eof = False
    try:
        await write_now(stream, socket_fd(stream), wire)
        while True:
            data = await stream.receive_some(65536)
            if not data:
                eof = True
                break
            received += data
            if not received.startswith(_101[: len(received)]):
                break  # not a 101: h11 reads it (and judges it now, as it would have)
            end = find_head_end(received)
            if end >= 0:
                parsed = parse_response_head(received[:end])
                if parsed is None:
                    break
                reason, pairs = parsed
                return UpgradeResponse(
                    status=101,
                    reason=reason.decode("latin-1"),
                    headers=Headers.from_raw(pairs),
                    body=b"",
                    trailing_data=received[end:],
                )
            if len(received) > _MAX_HEAD:
                break  # h11 refuses it
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise ServerConnectionError(f"Connection lost during the handshake: {exc}") from exc
    except OSError as exc:
        raise ClientOSError(f"Connection failed during the handshake: {exc}") from exc
    request = h11.Request(method="GET", target=target, headers=headers)
    head, body, trailing = await _exchange(stream, request, sent=True, received=received, eof=eof)
    return UpgradeResponse(
        status=head.status_code,
        reason=head.reason.decode("latin-1"),
        headers=Headers.from_raw(head.headers.raw_items()),
        body=body,
        trailing_data=trailing,
    )
