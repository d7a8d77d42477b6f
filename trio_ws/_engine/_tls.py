"""TLS for an open WebSocket without :class:`trio.SSLStream`'s per-call costs.

Theory of operation
-------------------
``trio.SSLStream`` does the TLS handshake (the HTTP layer uses it as is).
Once the WebSocket is open, :meth:`DirectTLS.take_over` takes the stream's
``ssl.SSLObject`` and its two memory BIOs and drives them itself, reading and
writing the socket's descriptor with ``os.read``/``os.write`` (POSIX):

* :meth:`DirectTLS.receive_some` reads as much ciphertext as the socket holds
  (up to ``READ_SIZE``) in one call, then decrypts **every** whole record it
  holds, so a peer that sends one small record per message costs one call for
  many messages (``SSLStream`` returns one record per call and pays its
  conflict detectors, locks and checkpoints each time).
* :meth:`DirectTLS.send_all` encrypts, then writes without yielding when the
  socket takes it all at once (one checkpoint), and waits for writability
  otherwise.
* Records that reading produces (a TLS 1.3 key update's answer) are written
  by whoever holds the send side, in the order OpenSSL produced them: one
  drainer at a time (``_sending``). A TLS 1.3 server's session tickets,
  which ``SSLStream`` holds back until the first write, go out first.

Certificate and hostname checks are untouched: they happened in the
handshake, which stays ``SSLStream``'s. When the stream is not in a state to
be taken over (not handshaken, not a plain socket underneath, not POSIX, or a
trio whose private attributes differ), ``take_over`` returns None and the
engine keeps using ``SSLStream`` unchanged.

Never: take over a stream that another task may still use, or write records
out of order.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from typing import Any

import trio

__all__ = ["DirectTLS"]

READ_SIZE = 256 * 1024
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


class DirectTLS(trio.abc.Stream):
    """A handshaken TLS connection driven straight on its socket (see the module docstring).

    ``ssl_stream`` is the ``trio.SSLStream`` it took over (for
    ``get_extra_info``); ``transport_stream`` the socket stream beneath.
    """

    __slots__ = (
        "_closed",
        "_delayed",
        "_fd",
        "_idle",
        "_incoming",
        "_obj",
        "_outgoing",
        "_sending",
        "ssl_stream",
        "transport_stream",
    )

    def __init__(
        self,
        ssl_stream: trio.SSLStream[Any],
        transport: trio.SocketStream,
        obj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        delayed: bytes = b"",
    ) -> None:
        self.ssl_stream = ssl_stream
        self.transport_stream = transport
        self._obj = obj
        self._incoming = incoming
        self._outgoing = outgoing
        self._fd = transport.socket.fileno()
        self._sending = False
        self._idle: trio.Event | None = None  # set when the current drainer is done
        self._closed = False
        # A TLS 1.3 server's session tickets, which SSLStream holds back
        # until the first write: they go out before anything else.
        self._delayed = delayed

    @classmethod
    def take_over(cls, stream: trio.abc.Stream) -> DirectTLS | None:
        """A :class:`DirectTLS` for a handshaken ``trio.SSLStream`` over a socket, else None."""
        if os.name != "posix" or not isinstance(stream, trio.SSLStream):
            return None
        transport = stream.transport_stream
        if not isinstance(transport, trio.SocketStream):
            return None
        try:
            obj = stream._ssl_object
            incoming = stream._incoming
            outgoing = stream._outgoing
            handshook = stream._handshook.done
            state = stream._state.name
            delayed = stream._delayed_outgoing
        except AttributeError:  # another trio: keep SSLStream
            return None
        if not handshook or state != "OK" or outgoing.pending:
            return None
        if not isinstance(incoming, ssl.MemoryBIO) or not isinstance(outgoing, ssl.MemoryBIO):
            return None
        if delayed is not None:
            stream._delayed_outgoing = None
        return cls(stream, transport, obj, incoming, outgoing, delayed or b"")

    # ------------------------------------------------------------ receive

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Decrypted bytes: every whole record available, up to ``max_bytes``; b"" at EOF.

        Raises ``trio.BrokenResourceError`` for a TLS error or a reset, and
        ``trio.ClosedResourceError`` after :meth:`aclose`.
        """
        limit = READ_SIZE if max_bytes is None else max_bytes
        obj = self._obj
        waited = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the TLS stream was closed")
            try:
                first = obj.read(limit)
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                await self._checkpoint_once(waited)
                return b""
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS error: {exc}") from exc
            raw = await self._read_raw()
            waited = True
            if not raw:
                self._incoming.write_eof()
                await self._checkpoint_once(waited)
                # No close_notify: as SSLStream with https_compatible=False.
                raise trio.BrokenResourceError("the peer closed the connection without TLS close")
            self._incoming.write(raw)
        parts = [first]
        total = len(first)
        while total < limit:
            try:
                more = obj.read(limit - total)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                break  # the next call reports EOF
            except ssl.SSLError:
                break  # the next call raises it
            if not more:
                break
            parts.append(more)
            total += len(more)
        if self._outgoing.pending and not self._sending:
            await self._drain()
        await self._checkpoint_once(waited)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _read_raw(self) -> bytes:
        fd = self._fd
        while True:
            try:
                return os.read(fd, READ_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
            except OSError as exc:
                raise trio.BrokenResourceError(f"socket error: {exc}") from exc

    @staticmethod
    async def _checkpoint_once(waited: bool) -> None:
        if not waited:
            await trio.lowlevel.checkpoint()

    # --------------------------------------------------------------- send

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data``.

        Raises ``trio.BrokenResourceError`` when the connection is broken and
        ``trio.ClosedResourceError`` after :meth:`aclose`. Cancelled while
        waiting for the socket, the stream is left broken (part of a record
        may have gone).
        """
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        while self._sending:
            # The reader is writing records that reading produced (a key
            # update's answer): wait for it, then add ours after them.
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        if data:
            try:
                self._obj.write(data)
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS error: {exc}") from exc
        if not await self._drain():
            await trio.lowlevel.checkpoint()

    async def _drain(self) -> bool:
        """Write every pending record; True if it had to wait (so it checkpointed)."""
        self._sending = True
        waited = False
        fd = self._fd
        outgoing = self._outgoing
        try:
            while outgoing.pending:
                data = outgoing.read()
                if self._delayed:
                    data = self._delayed + data
                    self._delayed = b""
                view = memoryview(data)
                while view:
                    try:
                        sent = os.write(fd, view)
                    except BlockingIOError:
                        waited = True
                        try:
                            await trio.lowlevel.wait_writable(fd)
                        except BaseException:
                            self._closed = True  # part of a record may be out: broken
                            raise
                        continue
                    except OSError as exc:
                        raise trio.BrokenResourceError(f"socket error: {exc}") from exc
                    view = view[sent:]
        finally:
            self._sending = False
            if self._idle is not None:
                self._idle.set()
                self._idle = None
        return waited

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket can take more."""
        await trio.lowlevel.wait_writable(self._fd)

    # -------------------------------------------------------------- close

    async def aclose(self) -> None:
        """Send close_notify if the socket takes it at once, then close the socket."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._obj.unwrap()
            pending = self._outgoing.read() if self._outgoing.pending else b""
            if pending and not self._sending:
                with contextlib.suppress(OSError):
                    os.write(self._fd, self._delayed + pending)
        await self.transport_stream.aclose()
