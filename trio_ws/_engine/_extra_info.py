"""``get_extra_info``: a connection's socket and TLS details, looked up by name.

Theory of operation
-------------------
A trio stream is a stack: a :class:`trio.SocketStream` at the bottom,
maybe a :class:`trio.SSLStream` (or another wrapper with a
``transport_stream``) over it. :func:`stream_layers` walks down the stack
once and returns the TLS layer and the socket layer; :func:`extra_info`
answers asyncio's ``get_extra_info`` names from them. The WebSocket's
``get_extra_info`` and the server's ``request.transport`` both answer
through here, so the two agree on every name.

Never: raise. A name that does not apply, or a socket already gone, gives
the caller's default.
"""

from __future__ import annotations

from typing import Any, Final

import trio

from ._tls import DirectTLS

__all__ = ["SOCKET_INFO", "TLS_INFO", "extra_info", "stream_layers"]

#: Names answered from the socket.
SOCKET_INFO: Final = frozenset({"socket", "peername", "sockname"})
#: Names answered from the TLS layer (a plain connection gives the default).
TLS_INFO: Final = frozenset({"sslcontext", "ssl_object", "peercert", "cipher", "compression"})


def stream_layers(
    stream: trio.abc.Stream,
) -> tuple[trio.SSLStream[Any] | None, trio.SocketStream | None]:
    """The outermost TLS layer of ``stream`` (or None) and the socket stream under it
    (or None when the stack does not end in a socket). Raises nothing."""
    tls: trio.SSLStream[Any] | None = None
    while not isinstance(stream, trio.SocketStream):
        if tls is None:
            if isinstance(stream, trio.SSLStream):
                tls = stream
            elif isinstance(stream, DirectTLS):
                tls = stream.ssl_stream  # the SSLStream it took over
        inner = getattr(stream, "transport_stream", None)
        if not isinstance(inner, trio.abc.Stream):
            return tls, None
        stream = inner
    return tls, stream


def extra_info(stream: trio.abc.Stream, name: str, default: Any = None) -> Any:
    """The detail ``name`` of the connection under ``stream``, as asyncio's
    ``get_extra_info``; else ``default``.

    ``"peername"`` and ``"sockname"`` (the socket's addresses), ``"socket"``
    (the ``trio.socket`` object), and over TLS ``"sslcontext"`` (the
    ``ssl.SSLContext``), ``"ssl_object"`` (the ``ssl.SSLObject``),
    ``"peercert"`` (as ``ssl.SSLObject.getpeercert()`` returns it),
    ``"cipher"`` and ``"compression"``. Any other name, a TLS name on a
    plain connection, a socket name without a socket, and a socket that
    fails to answer (closed, or TLS before its handshake) give ``default``.
    Raises nothing.
    """
    tls, sock_stream = stream_layers(stream)
    try:
        if name in SOCKET_INFO:
            if sock_stream is None:
                return default
            sock = sock_stream.socket
            if name == "socket":
                return sock
            return sock.getpeername() if name == "peername" else sock.getsockname()
        if tls is None or name not in TLS_INFO:
            return default
        if name == "sslcontext":
            return tls.context
        if name == "ssl_object":
            # trio keeps the SSLObject private; its public methods are forwarded.
            return getattr(tls, "_ssl_object", default)
        if name == "peercert":
            return tls.getpeercert()
        if name == "cipher":
            return tls.cipher()
        return tls.compression()
    except (OSError, trio.NeedHandshakeError):
        return default
