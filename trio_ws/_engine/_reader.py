"""The incoming side: reading the stream, and what each frame means.

Theory of operation
-------------------
The **reader** reads the stream in large chunks (on a plain socket with
``os.read``, waiting for readability first only after a short read), feeds
the frame driver, and acts on what comes out: data messages go to the
inbox, pings are answered (``autoping``, through the outbox, never waiting
for it), pongs are dropped, close frames and protocol errors move the
connection's state. When the inbox holds ``max_queue`` messages it stops
reading until the application catches up (while the connection is open;
once our close frame is out, data is discarded and the reader reads on, to
see the peer's answer). Memory stays bounded either way, and the heartbeat
does not count silence while the reader was paused.

**The socket hand-off.** On a plain socket, the reader hands the socket's
input side to the ``receive()`` it has just woken (``_socket``: see
``_core.py``). Until that call returns, a ``receive()`` that finds the inbox
empty waits for input and reads the socket itself, with the same code, so
pings, close frames and errors are handled alike; a ``receive()`` that
finds the reader not waiting on the socket takes it the same way. This
saves the reader's wake-up between the socket and the application: a
request/response exchange costs one scheduler pass per message instead of
two. ``receive()`` hands the socket back when it returns, so pings and
close frames are still answered while the application is elsewhere. Only
one task ever waits on the socket for input, and each asserts that it owns
it before it waits.

**A peer's close or error behind queued messages.** Messages queued before
a close frame (or a protocol error) are still delivered and may be
answered: the close is acted on (answered with ``autoclose``) when the
application takes it, and until then it waits in ``_deferred``. The driver
parses nothing after either, so the reader stops there.

Never: block the reader on the application or on the outgoing buffer.
"""

from __future__ import annotations

import os
from typing import Any, Final

import trio

from .._exceptions import WebSocketError
from .._models import WSCloseCode, WSMessage, WSMsgType
from ._core import (
    ABORT,
    CLOSE_RECEIVED,
    CLOSE_SENT,
    OPEN,
    READER,
    READER_WAITS,
    RECEIVE,
    RECEIVE_CLOSE,
    RECEIVE_WAITS,
    SEND_CLOSE,
    STREAM_ERRORS,
)
from ._outbox import Outbox

READ_SIZE: Final = 64 * 1024
BIG_READ_SIZE: Final = 4 * 1024 * 1024  # the most read at once for a large frame

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_PING = WSMsgType.PING
_PONG = WSMsgType.PONG


class Reader(Outbox):
    """The reader task, the socket hand-off and frame handling (see the module docstring)."""

    __slots__ = ("_drained", "_last_rx", "_reader_paused")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._drained = True  # the last read emptied the socket
        self._reader_paused = False  # stopped reading: the application is behind
        self._last_rx = 0.0  # when input last arrived

    def _input_expected(self) -> bool:
        """True while the peer may still send frames we parse."""
        state = self._state
        return (state is OPEN or state is CLOSE_SENT) and self._deferred is None

    # ------------------------------------------------------------------ reader

    async def _reader(self) -> None:
        stream = self._stream
        assert stream is not None
        fd = self._fd
        inbox = self._inbox
        # The loop condition is _input_expected(), inlined: it runs once per read.
        while (self._state is OPEN or self._state is CLOSE_SENT) and self._deferred is None:
            if self._socket >= RECEIVE:
                # A receive() holds the socket; it hands it back when it returns.
                await self._reader_lot.park()
                continue
            if len(inbox) >= self._max_queue and self._state is OPEN:
                # Backpressure: stop reading until the application catches up.
                self._reader_paused = True
                await self._reader_lot.park()
                self._reader_paused = False
                # Silence while we were not reading says nothing about the peer.
                self._last_rx = trio.current_time()
                continue
            try:
                if fd < 0:
                    data = await stream.receive_some(READ_SIZE)
                else:
                    # A plain socket: after a short read the socket is empty,
                    # so wait for input first instead of trying a read that
                    # fails; after a full read, only give others a turn.
                    if self._drained:
                        assert self._socket == READER, "the reader must own the socket"
                        self._socket = READER_WAITS
                        try:
                            await trio.lowlevel.wait_readable(fd)
                        finally:
                            self._socket = READER
                    else:
                        await trio.lowlevel.checkpoint()
                        if self._socket != READER or not self._input_expected():
                            continue
                    data = self._read_now(fd)
            except BlockingIOError:
                self._drained = True
                continue
            except STREAM_ERRORS as exc:
                self._on_lost(exc)
                return
            waiting = self._getter.waiting  # a receive() waits for this input
            if not self._on_input(data):
                return
            if waiting and fd >= 0 and inbox:
                # That receive() will most likely be back soon for more: let it
                # read the socket itself until it returns.
                self._socket = RECEIVE

    def _read_now(self, fd: int) -> bytes:
        """One non-blocking read of a plain socket; raises what ``os.read`` raises.

        The rest of a large frame is read in one call when the kernel has it:
        fewer reads, and no join of 64 KiB pieces.
        """
        driver = self._driver
        assert driver is not None
        due = driver.payload_due
        size = READ_SIZE if due <= READ_SIZE else min(due, BIG_READ_SIZE)
        data = os.read(fd, size)
        self._drained = len(data) < size
        return data

    def _on_input(self, data: bytes | bytearray) -> bool:
        """Handle what one read returned; False when the peer closed the stream."""
        if not data:
            self._on_lost(None)
            return False
        self._last_rx = trio.current_time()
        self._on_data(data)
        return True

    async def _read_in_receive(self) -> None:
        """Wait for input in receive() by reading the socket from the application's task.

        Called with the inbox empty and the reader not waiting on the socket;
        from then until receive() returns the socket is this call's. Returns
        after one read, or when woken by another task (see ``_wake_app``).
        """
        assert self._socket != READER_WAITS, "the reader waits on the socket"
        self._socket = RECEIVE
        fd = self._fd
        try:
            if self._drained:
                self._socket = RECEIVE_WAITS
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    return  # woken, or the socket is closing
                finally:
                    if self._socket == RECEIVE_WAITS:
                        self._socket = RECEIVE
            else:
                await trio.lowlevel.checkpoint()
            state = self._state
            if (state is not OPEN and state is not CLOSE_SENT) or self._deferred is not None:
                return  # the connection moved on while this call waited
            data = self._read_now(fd)
        except BlockingIOError:
            self._drained = True
            return
        except STREAM_ERRORS as exc:
            self._on_lost(exc)
            return
        self._on_input(data)

    # ------------------------------------------------------------------ frames

    def _on_data(self, data: bytes | bytearray) -> None:
        """Parse ``data`` and act on every frame in it."""
        driver = self._driver
        assert driver is not None
        out: list[WSMessage] = []
        error: WebSocketError | None = None
        try:
            driver.feed(data, out)
        except WebSocketError as exc:
            error = exc
        inbox = self._inbox
        decode = self._decode_text
        for msg in out:
            kind = msg.type
            if kind is _TEXT or kind is _BINARY:
                if self._state is OPEN:  # after our close frame, data is discarded
                    if decode or kind is _BINARY:
                        inbox.append(msg)
                    else:
                        # decode_text=False: the driver validated the UTF-8;
                        # the application gets the bytes (for a bytes parser).
                        inbox.append(WSMessage(_TEXT, msg.data.encode(), ""))
            elif kind is _PING:
                if self._autoping:
                    self._answer_ping(driver, msg.data)
                else:
                    inbox.append(msg)
            elif kind is _PONG:
                if not self._autoping:
                    inbox.append(msg)
            else:
                self._on_close_frame(msg)
        if error is not None:
            self._on_protocol_error(error)
        if inbox:
            self._getter.unpark()

    def _on_close_frame(self, msg: WSMessage) -> None:
        if self._state is CLOSE_SENT:
            # The answer to our close(): the handshake is complete.
            self._transition(RECEIVE_CLOSE, msg.data or WSCloseCode.OK)
            return
        self._inbox.append(msg)
        self._act_or_defer(msg)

    def _on_protocol_error(self, exc: WebSocketError) -> None:
        msg = WSMessage(WSMsgType.ERROR, exc, None)
        self._inbox.append(msg)
        self._act_or_defer(msg)

    def _act_or_defer(self, msg: WSMessage) -> None:
        """Act on ``msg`` (just queued) now, or once taken if messages are queued before it."""
        if len(self._inbox) <= 1:
            self._act_on(msg)
        else:
            self._deferred = msg

    def _act_on(self, msg: WSMessage) -> None:
        """The peer's close (answered with ``autoclose``), or a protocol error (we close)."""
        driver = self._driver
        assert driver is not None
        if msg.type is WSMsgType.CLOSE:
            if not self._transition(RECEIVE_CLOSE, msg.data or WSCloseCode.OK):
                return
            if self._autoclose and self._state is CLOSE_RECEIVED:
                self._write(driver.encode_close(msg.data or None, ""))
                self._transition(SEND_CLOSE)
            return
        exc: WebSocketError = msg.data
        state = self._state
        if state is OPEN or state is CLOSE_RECEIVED:
            self._write(driver.encode_close(exc.code, str(exc)))
            self._transition(SEND_CLOSE, exc.code)
        # The server keeps the error as exception() (aiohttp); the client does not.
        self._transition(ABORT, exc.code, None if self._client else exc)
