"""The outgoing side: one buffer, one writer task, ``write_limit``, and the direct write.

Theory of operation
-------------------
Every frame (data, ping, pong, close) is appended to one buffer, ``_out``;
``_out_size`` counts the bytes queued plus those being written. The
**writer** task is the only one that writes to the stream: it sends
whatever has gathered in one write, so a burst of small messages costs one
syscall, and a frame is never interleaved with another (sends are atomic
under cancellation and concurrency: a ``send_*`` either queues its whole
frame or, cancelled while it waits, none of it). On a plain socket it tries
a non-blocking ``os.write`` first, without the yield ``send_all`` makes
after an immediate send.

**The direct write.** The first ``send_*`` after ``receive()`` emptied the
inbox (typically a reply; ``_reply_credit``) is written at once from the
caller's task when the stream is a plain socket and nothing is queued or
being written; whatever the kernel does not take goes to the writer. This
saves a task switch per round trip. Later sends queue, so a burst still
leaves in one write.

**Backpressure.** A ``send_*`` that finds more than ``write_limit`` bytes
queued waits until the writer brings them under a quarter of it, or until
the connection stops accepting sends (a close frame sent, or over): then it
raises. The reader never waits here (two peers sending hard would
deadlock): while the buffer is over ``write_limit``, only the latest ping
is remembered, and answered once it drains (RFC 6455 5.5.3), so a ping
flood cannot grow memory.

**Waiting for room.** On a plain socket the writer waits for room itself
(``wait_writable`` then ``os.write``) rather than in ``send_all``, because
the engine wakes a ``receive()`` that waits on the same socket with
``notify_closing``, which ends the writer's wait too: the writer waits
again, where ``send_all`` would fail. So waking ``receive()`` never waits
for a peer to read.

**Ending.** The writer flushes what is queued and returns once the state is
``CLOSED``, then cancels the connection's scope (ending the reader and the
heartbeat). A write that fails ends the connection as lost. A dropped
connection (heartbeat, timeout, cancelled ``close()``) cancels the
writer mid-write, even once ``CLOSED`` (then, if our CLOSE frame was
still unsent, ``close_code`` is 1006, see ``_core.py``); ``_writing`` then
stays set, and nothing more is written on that stream.

Never: write from two tasks at once, or wait in the reader for the buffer.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Final

import trio

from .._exceptions import ClientConnectionResetError
from .._models import WSCloseCode
from .._protocol._driver import FrameDriver
from ._core import (
    CLOSE_RECEIVED,
    CLOSED,
    OPEN,
    SEND_CLOSE,
    STREAM_ERRORS,
    EngineCore,
)

GOING_AWAY_GRACE: Final = 1.0  # at most this long to send 1001 when cancelled


class Outbox(EngineCore):
    """The outgoing buffer and its single writer (see the module docstring)."""

    __slots__ = ("_out", "_pending_pong", "_reply_credit")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._out: list[bytes | bytearray | memoryview] = []
        self._pending_pong: bytes | None = None
        self._reply_credit = False  # the next send may be written at once

    # ------------------------------------------------------------------ queue

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue frame bytes for the writer; never blocks."""
        self._out.append(data)
        self._out_size += len(data)
        self._writer_lot.unpark()

    def _write_now(self, frame: bytes | bytearray) -> None:
        """Write ``frame`` from this task if nothing is queued ahead of it; queue the rest."""
        if self._fd >= 0 and not self._out and not self._writing:
            sent = try_write(self._fd, frame)
            if sent == len(frame):
                return
            if sent:
                self._write(memoryview(frame)[sent:])
                return
        self._write(frame)

    def _answer_ping(self, driver: FrameDriver, payload: bytes) -> None:
        """Queue the pong for ``payload``; past ``write_limit`` only remember the latest."""
        state = self._state
        if state is not OPEN and state is not CLOSE_RECEIVED:
            return  # our close frame is out: nothing follows it
        if self._out_size > self._write_limit:
            self._pending_pong = payload
        else:
            self._write(driver.encode_pong(payload))

    # ------------------------------------------------------------------- send

    async def _refuse_send(self) -> None:
        """Raise the error of a send after close, after a checkpoint."""
        await trio.lowlevel.checkpoint()
        raise ClientConnectionResetError("Cannot write to closing transport")

    async def _send_message(
        self, data: str | bytes | bytearray | memoryview, compress: int | None
    ) -> None:
        # The hot path: a cancel point, but it yields only to wait for buffer
        # space (see _wait_drain), so a burst of sends queues for one write.
        await trio.lowlevel.checkpoint_if_cancelled()
        driver = self._driver
        if driver is None:
            raise RuntimeError("Call .prepare() first")
        state = self._state
        if state is not OPEN and state is not CLOSE_RECEIVED:
            await self._refuse_send()
        if self._out_size > self._write_limit:
            await self._wait_drain()
        if compress is not None and not compress and self._deflate is not None:
            self._deflate.skip_next = True
        frame = driver.encode(data)
        if self._reply_credit:
            # The first send after receive() emptied the inbox (a reply, most
            # likely) or after the handshake: write it now from this task,
            # saving the hop to the writer.
            self._reply_credit = False
            self._write_now(frame)
        else:
            self._write(frame)

    async def _send_control(
        self, pong: bool, message: bytes | bytearray | memoryview | str
    ) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        driver = self._driver
        if driver is None:
            raise RuntimeError("Call .prepare() first")
        state = self._state
        if state is not OPEN and state is not CLOSE_RECEIVED:
            await self._refuse_send()
        payload = as_bytes(message)
        frame = driver.encode_pong(payload) if pong else driver.encode_ping(payload)
        if self._out_size > self._write_limit:
            await self._wait_drain()
        self._write(frame)
        # Not a hot path: always yield, so the writer sends it now. The frame
        # is queued already, so this wait is not cancellable.
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_drain(self) -> None:
        """Wait for the buffer to drain under ``write_limit / 4``; raise once sends stop."""
        while True:
            state = self._state
            if state is not OPEN and state is not CLOSE_RECEIVED:
                await self._refuse_send()
            if self._out_size <= self._write_limit // 4:
                return
            await self._drain_lot.park()

    # ----------------------------------------------------------------- writer

    async def _writer(self) -> None:
        stream = self._stream
        assert stream is not None
        fd = self._fd
        while True:
            if not self._out:
                if self._state is CLOSED:
                    break
                await self._writer_lot.park()
                continue
            out = self._out
            self._out = []
            data = out[0] if len(out) == 1 else b"".join(out)
            self._writing = True
            try:
                # A plain socket takes most writes whole: write without the
                # yield that trio's send_all makes after an immediate send.
                sent = try_write(fd, data)
                if sent < len(data):
                    if fd >= 0:
                        assert isinstance(stream, trio.SocketStream)
                        await self._write_rest(stream.socket, fd, data, sent)
                    else:
                        await stream.send_all(data)
            except STREAM_ERRORS as exc:
                # Cleared first: a peer that hangs up right after its CLOSE
                # leaves its code standing (see _core._abort_closed).
                self._out.clear()
                self._out_size = 0
                self._on_lost(exc)
                break
            self._writing = False
            self._out_size -= len(data)
            if self._out_size <= self._write_limit // 4:
                self._drain_lot.unpark_all()
                if self._pending_pong is not None:
                    driver = self._driver
                    assert driver is not None
                    payload, self._pending_pong = self._pending_pong, None
                    self._answer_ping(driver, payload)
        self._scope.cancel()

    async def _write_rest(
        self,
        sock: trio.socket.SocketType,
        fd: int,
        data: bytes | bytearray | memoryview,
        sent: int,
    ) -> None:
        """Write ``data[sent:]`` to the plain socket ``fd``, waiting for room as it must.

        As trio's ``send_all``, except that a wait ended by the engine's own
        ``notify_closing`` (it wakes a ``receive()`` waiting on this socket
        from another task, see ``_core.py``) waits again instead of failing:
        that wake-up never has to wait for a write. Raises ``OSError`` when
        the connection breaks, ``ClosedResourceError`` once the socket is
        closed.
        """
        view = memoryview(data)[sent:]
        while view:
            try:
                await trio.lowlevel.wait_writable(fd)
            except trio.ClosedResourceError:
                if self._fd != fd or sock.fileno() != fd:
                    raise  # the socket is really closing
                continue  # the wake-up was for a receive(), not for us
            with contextlib.suppress(BlockingIOError):
                view = view[os.write(fd, view) :]

    async def _send_going_away(self) -> None:
        """Best effort, shielded and bounded: flush what is queued, then CLOSE 1001.

        Only while we may still send a close frame, and never after a write
        was cut off (the stream may hold part of a frame).
        """
        state = self._state
        driver = self._driver
        stream = self._stream
        if (state is not OPEN and state is not CLOSE_RECEIVED) or self._writing:
            return
        if driver is None or stream is None:
            return
        frame = driver.encode_close(WSCloseCode.GOING_AWAY, "")
        self._transition(SEND_CLOSE, WSCloseCode.GOING_AWAY)
        data = b"".join([*self._out, frame])
        self._out.clear()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + min(self._timeout, GOING_AWAY_GRACE)
            with contextlib.suppress(*STREAM_ERRORS):
                await stream.send_all(data)


def try_write(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write what a non-blocking socket takes now; 0 if it would block or broke.

    A broken connection is left for the write that waits (``_write_rest``
    or ``send_all``) to report. ``fd`` -1 (not a plain socket, or closed)
    writes nothing.
    """
    if fd < 0:
        return 0
    try:
        return os.write(fd, data)
    except OSError:
        return 0


def as_bytes(message: bytes | bytearray | memoryview | str) -> bytes:
    """``message`` as bytes (text is UTF-8 encoded)."""
    if isinstance(message, str):
        return message.encode()
    return bytes(message)
