"""``Request.transport``: aiohttp's minimal transport surface over a server connection.

Theory of operation: aiohttp handlers reach the connection through
``request.transport`` to read its addresses and TLS details
(``get_extra_info``) or to drop the client (``close()``/``abort()``). Here a
:class:`Transport` is a view of one server connection's trio stream; it owns
nothing. Closing it shuts the socket down (both directions) instead of closing
the descriptor: every task using the connection (the request loop, a
WebSocket's reader and writer) sees end of stream or a failed write, and the
connection's own task still releases the socket when it ends, so a descriptor
number is never closed under a task that may still use it.
"""

from __future__ import annotations

import socket as _socket
import struct
from typing import Any, Protocol

import trio

from .._engine._extra_info import extra_info, stream_layers

__all__ = ["Transport", "TransportSource"]


class TransportSource(Protocol):
    """What a :class:`Transport` reads from the server connection it describes."""

    @property
    def stream(self) -> trio.abc.Stream:
        """The connection's byte stream (the TLS stream over TLS)."""
        ...

    @property
    def peername(self) -> Any:
        """The client's address as ``getpeername()`` gave it at accept, or None."""
        ...

    @property
    def lost(self) -> bool:
        """True once a read or write on the stream failed."""
        ...

    @property
    def ended(self) -> bool:
        """True once the server has released the connection's socket."""
        ...


class Transport:
    """One server connection as aiohttp's ``request.transport`` shows it.

    Only the part of asyncio's transport that handlers use exists:
    :meth:`get_extra_info`, :meth:`close`, :meth:`abort` and
    :meth:`is_closing`.
    """

    __slots__ = ("_closing", "_source")

    def __init__(self, source: TransportSource) -> None:
        self._source = source
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Connection details by name, as asyncio's ``get_extra_info``; else ``default``.

        ``"peername"`` and ``"sockname"`` (the socket's addresses),
        ``"socket"`` (the ``trio.socket`` object), and over TLS
        ``"sslcontext"`` (the ``ssl.SSLContext``), ``"ssl_object"`` (the
        ``ssl.SSLObject``), ``"peercert"`` (the client's certificate as
        ``ssl.SSLObject.getpeercert()`` returns it: ``None`` when it sent
        none), ``"cipher"`` (``(name, protocol, bits)``) and
        ``"compression"``, answered as the WebSocket's ``get_extra_info``
        answers them. Any other name, a TLS name on a plain connection, and
        every name once the connection has ended give ``default``. Raises
        nothing.
        """
        source = self._source
        if source.ended:
            return default
        if name == "peername" and source.peername is not None:
            return source.peername
        return extra_info(source.stream, name, default)

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called, the client is gone, or the
        connection has ended."""
        source = self._source
        return self._closing or source.lost or source.ended

    def close(self) -> None:
        """Shut the connection down now: the client reads end of stream after what was
        already sent.

        What the handler is doing with the connection ends as if the client
        had gone: ``request.read()`` and a WebSocket's sends raise
        :class:`~trio_ws.ClientConnectionResetError`, a WebSocket's
        ``receive()`` returns CLOSED (``close_code`` 1006), and no response is
        sent. Idempotent; raises nothing.
        """
        self._shutdown(reset=False)

    def abort(self) -> None:
        """As :meth:`close`, and the socket is released with a reset (``SO_LINGER`` 0),
        discarding what the kernel has not sent yet. Idempotent; raises nothing."""
        self._shutdown(reset=True)

    def _shutdown(self, *, reset: bool) -> None:
        self._closing = True
        if self._source.ended:
            return
        _, sock_stream = stream_layers(self._source.stream)
        if sock_stream is None:
            return
        sock = sock_stream.socket
        try:
            if reset:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(_socket.SHUT_RDWR)
        except OSError:  # already shut down, or the client is gone
            pass

    def __repr__(self) -> str:
        state = "closing" if self.is_closing() else "open"
        return f"<Transport {state} peer={self._source.peername!r}>"
