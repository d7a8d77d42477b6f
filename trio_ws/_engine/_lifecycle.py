"""Who owns the connection's tasks, the heartbeat, and how a connection ends.

Theory of operation
-------------------
Whoever opens the connection (``ws_connect``'s ``async with``, or the
server's per-connection scope) calls :meth:`Lifecycle.start_in` with a
nursery it owns (the server's ``prepare()`` calls its halves: ``set_up``
before the 101 is written, so that other tasks may already send and close,
their frames waiting in the outbox, then ``launch_in``, or ``abandon`` if
the write fails). That starts one ``_run`` task holding, inside ``_scope``,
the reader (in ``_run``'s own task: one task fewer per connection), the
writer and the heartbeat. When the owner's scope ends it calls
:meth:`Lifecycle.owner_exit`, which closes as the situation asks and
returns only once every task has ended, even when it is cancelled.

These five methods are the engine's contract with the layers that own a
connection (``_client``, ``web``, the tests' ``_peer``): internal, not part
of the public API, but named without an underscore because other modules
call them.

Background tasks never raise into the owner's nursery: a failure is
recorded through the state transition (``close_code``, ``exception()``, an
ERROR message) and the task returns. When ``_run`` ends, the connection is
``CLOSED`` (at the latest there, with 1006), a 1001 GOING_AWAY is sent
first if it ended while still open (the owner was cancelled), the stream
is closed and ``_done`` is set; nothing outlives it.

**The server's early close.** A server ``close()`` with a ``receive()`` in
progress ends the connection once its CLOSE is written (aiohttp). Closing
the stream right then would lose data: input the peer sent that we have not
read (or that arrives next) makes the kernel reset the connection, and the
peer's kernel discards what we sent that it had not read yet. So ``_run``
first *lingers* (``_linger_input``): it half-closes the stream (a plain
socket; a TLS stream is kept as it is), then reads and discards input until
the peer's CLOSE, end of stream, or ``LINGER_MAX`` (2 s, at most
``timeout``), and only then closes. ``close()`` returns after that: at once
with a peer that keeps reading (it answers or hangs up), after 2 s at worst
with one that does not. A drop or the owner's cancellation cuts it short.

The **heartbeat** (when ``heartbeat`` is set) runs while the connection is
``OPEN``: it pings after ``heartbeat`` seconds without input and ends the
connection with 1006 when nothing arrives within ``heartbeat / 2`` seconds
more. Silence while the reader was paused by backpressure does not count.
It stops once our close frame is out or the peer's close was acted on; a
peer's close still waiting behind data the application has not taken does
not stop it (as in aiohttp, whose heartbeat runs until ``receive()``
takes the close): left unanswered that long, the connection ends with 1006.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio

from .._exceptions import (
    ClientConnectionResetError,
    ServerTimeoutError,
    WebSocketError,
    WSTimeoutError,
)
from .._models import WSCloseCode, WSMessage, WSMsgType
from .._protocol._deflate import BoundedDeflate
from .._protocol._driver import FrameDriver
from ._core import (
    ABORT,
    CLOSE_RECEIVED,
    CLOSE_SENT,
    OPEN,
    POSIX,
    SEND_CLOSE,
    STREAM_ERRORS,
    is_cancellation,
    logger,
)
from ._inbox import Inbox
from ._reader import READ_SIZE
from ._tls import DirectTLS

# After the server's early close, the most time spent reading (and
# discarding) input before closing the stream (and at most ``timeout``).
LINGER_MAX: Final = 2.0


class Lifecycle(Inbox):
    """Starting, running and ending one connection (see the module docstring)."""

    __slots__ = ()

    def start_in(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        *,
        extensions: list[BoundedDeflate] | None = None,
        protocol: str | None = None,
        trailing_data: bytes = b"",
    ) -> None:
        """Begin serving ``stream`` (handshake already done) with tasks in ``nursery``.

        Internal: the owner's side of the engine (see the module docstring).
        ``trailing_data`` is what was read past the handshake. Raises
        nothing.

        :meta private:
        """
        self.set_up(stream, extensions=extensions, protocol=protocol)
        self.launch_in(nursery, trailing_data)

    def set_up(
        self,
        stream: trio.abc.Stream,
        *,
        extensions: list[BoundedDeflate] | None = None,
        protocol: str | None = None,
    ) -> None:
        """Make the API usable before the handshake's last write (no task, no I/O).

        From here ``send_*`` and ``close()`` queue their frames (nothing is
        written before :meth:`launch_in`) and ``receive()`` waits; the owner
        then calls ``launch_in``, or ``abandon`` if the handshake fails.
        Internal (see the module docstring); raises nothing.

        :meta private:
        """
        self._stream = stream
        self._deflate = extensions[0] if extensions else None
        self._driver = FrameDriver(
            client=self._client, extensions=list(extensions or []), max_size=self._max_msg_size
        )
        self._protocol = protocol

    def launch_in(self, nursery: trio.Nursery, trailing_data: bytes = b"") -> None:
        """Start the tasks in ``nursery`` after :meth:`set_up`, once the handshake is written.

        Internal (see the module docstring); raises nothing.

        :meta private:
        """
        stream = self._stream
        assert stream is not None
        if POSIX and isinstance(stream, trio.SocketStream):
            # os.read/os.write take a socket's descriptor on POSIX only.
            self._fd = stream.socket.fileno()
        elif isinstance(stream, trio.SSLStream):
            # TLS without SSLStream's per-call costs (see _tls.py); None
            # (keep SSLStream) when it cannot be taken over.
            direct = DirectTLS.take_over(stream)
            if direct is not None:
                self._stream = direct
        self._last_rx = trio.current_time()
        self._reply_credit = True  # the first send after the handshake
        if trailing_data:
            self._on_data(trailing_data)
        nursery.start_soon(self._run)

    def abandon(self, exc: BaseException | None) -> None:
        """The handshake failed after :meth:`set_up` (``exc``): over (1006), nothing runs.

        Wakes a ``close()`` waiting in another task. The stream stays the
        owner's to close. Internal (see the module docstring); raises
        nothing.

        :meta private:
        """
        self._out.clear()
        self._out_size = 0
        err = ClientConnectionResetError("Connection lost")
        err.__cause__ = exc
        self._transition(ABORT, WSCloseCode.ABNORMAL_CLOSURE, err)
        self._done.set()

    async def _run(self) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, self._writer)
                    if self._heartbeat is not None:
                        nursery.start_soon(self._guard, self._heartbeat_task)
                    # The reader runs in this task: one task fewer per connection.
                    await self._guard(self._reader)
        finally:
            try:
                # Still open: the owner cancelled us. Tell the peer we are going away.
                await self._send_going_away()
                await self._linger_input()
            finally:
                self._transition(ABORT, WSCloseCode.ABNORMAL_CLOSURE)
                self._fd = -1
                assert self._stream is not None
                try:
                    await trio.aclose_forcefully(self._stream)
                finally:
                    # Set even when an outer cancellation interrupts the close.
                    self._done.set()

    async def _linger_input(self) -> None:
        """After the server's early close, let our frames reach the peer before closing.

        The connection ended as soon as our CLOSE was written (see
        ``_close``), but the peer may not have read what we sent yet, and
        its messages may still be arriving: closing a socket with unread
        input makes the kernel reset the connection, and the peer's kernel
        then discards what it had not read (its writes fail too). So:
        half-close a stream that can (a plain socket: the peer reads
        everything, our CLOSE, then end of stream; a TLS stream is kept as
        it is), then read and discard input until the peer's CLOSE, end of
        stream, an error, or ``LINGER_MAX`` (at most ``timeout``). A drop
        (``close()`` cancelled or timed out) or the owner's cancellation
        ends it early. Raises only ``Cancelled``.
        """
        scope = self._linger
        stream = self._stream
        driver = self._driver
        if scope is None or self._writing or self._out_size or stream is None or driver is None:
            return
        scope.deadline = trio.current_time() + min(self._timeout, LINGER_MAX)
        with scope:
            try:
                if isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()  # a plain socket: shutdown(SHUT_WR)
                while True:
                    data = await stream.receive_some(READ_SIZE)
                    if not data:
                        return  # the peer hung up
                    out: list[WSMessage] = []
                    driver.feed(data, out)
                    if any(msg.type is WSMsgType.CLOSE for msg in out):
                        return  # the peer's answer: nothing more is due
            except (*STREAM_ERRORS, WebSocketError):
                return

    async def _guard(self, task: Callable[[], Awaitable[None]]) -> None:
        """Run a background task; record an unexpected error instead of raising it."""
        try:
            await task()
        except Exception as exc:
            logger.exception("trio_ws: internal error in %s", getattr(task, "__name__", task))
            self._transition(ABORT, WSCloseCode.ABNORMAL_CLOSURE, exc, drop=True)

    async def _heartbeat_task(self) -> None:
        interval = self._heartbeat
        driver = self._driver
        assert interval is not None and driver is not None
        while self._state is OPEN:
            due = self._last_rx + interval
            if trio.current_time() < due:
                await trio.sleep_until(due)
                continue
            sent_at = trio.current_time()
            self._write(driver.encode_ping(b""))
            await trio.sleep(interval / 2)
            if self._last_rx < sent_at and self._state is OPEN and not self._reader_paused:
                # After a stall of this process the timer and the pong's
                # arrival can wake in the same scheduling batch: let the task
                # reading the socket run first, then look again.
                await trio.lowlevel.checkpoint()
            if self._last_rx < sent_at and self._state is OPEN and not self._reader_paused:
                text = f"No PONG received after {interval / 2} seconds"
                err = ServerTimeoutError(text) if self._client else WSTimeoutError(text)
                self._transition(ABORT, WSCloseCode.ABNORMAL_CLOSURE, err, drop=True, report=True)
                return

    async def _wait_done(self, *, end_when_flushed: bool = False) -> None:
        """Wait up to ``timeout`` for the connection to end; past it, drop it (1006).

        ``end_when_flushed``: end the connection (keeping ``close_code``) as
        soon as everything queued, our close frame included, is written,
        unless the peer's answer came first. If cancelled, the connection
        is dropped (1006) and ``Cancelled`` propagates.
        """
        try:
            with trio.move_on_after(self._timeout) as scope:
                if end_when_flushed:
                    # The writer wakes the drain lot once its buffer is empty.
                    while self._out_size and self._state is CLOSE_SENT:
                        await self._drain_lot.park()
                    if self._state is CLOSE_SENT:
                        # _run closes the stream after _linger_input.
                        self._linger = trio.CancelScope()
                        self._transition(ABORT, self._close_code)
                await self._done.wait()
        except trio.Cancelled:
            self._transition(ABORT, WSCloseCode.ABNORMAL_CLOSURE, drop=True)
            raise
        if scope.cancelled_caught:
            if self._out_size:
                text = f"Close frame not sent within {self._timeout} seconds"
            else:
                text = f"No close frame received within {self._timeout} seconds"
            self._transition(ABORT, WSCloseCode.ABNORMAL_CLOSURE, WSTimeoutError(text), drop=True)
            with trio.CancelScope(shield=True):
                await self._done.wait()

    # ------------------------------------------------------------ owner's exit

    async def owner_exit(self, exc: BaseException | None) -> None:
        """End the connection because the scope that owns it ends with ``exc``.

        Normal exit (``exc`` None) closes with 1000 and waits for the
        handshake up to ``timeout`` (also when a close was already under
        way); an exception from the owner's code closes with 1011, shielded
        from cancellation, within the same bound; cancellation (or another
        ``BaseException``) sends 1001 GOING_AWAY best-effort within a short
        shielded grace, then drops the connection. Past ``timeout``, or if
        this call is cancelled, the connection is dropped (1006). In every
        case the tasks are gone on return, and ``Cancelled`` propagates if
        this call was cancelled. Internal (see the module docstring).

        :meta private:
        """
        try:
            if self._done.is_set():
                return
            if is_cancellation(exc) or (exc is not None and not isinstance(exc, Exception)):
                await self._going_away()
            elif exc is not None:
                with trio.CancelScope(shield=True):
                    if not await self._close(WSCloseCode.INTERNAL_ERROR):
                        await self._wait_done()
            elif not await self._close():
                await self._wait_done()
        finally:
            self._scope.cancel()
            with trio.CancelScope(shield=True):
                await self._done.wait()

    async def _going_away(self) -> None:
        """End the tasks now; ``_run`` sends 1001 on the way out (still open)."""
        self._scope.cancel()
        with trio.CancelScope(shield=True):
            await self._done.wait()

    async def _close(self, code: int | None = WSCloseCode.OK, message: bytes | str = b"") -> bool:
        """``close()``: see its docstring in ``_websocket.py``."""
        if self._driver is None:
            raise RuntimeError("Call .prepare() first")
        if code is None:
            code = WSCloseCode.OK
        # A peer's close waiting behind queued messages is acted on first
        # (with autoclose that answers it, and this call has nothing to do).
        self._run_deferred()
        reason = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        receiving = self._receiving and self._state is OPEN
        if receiving:
            self._closing_due = True  # that receive() returns CLOSING
        if not self._queue_close(code, reason):
            await trio.lowlevel.checkpoint()
            return False
        # aiohttp's server: with a receive() in progress elsewhere, the
        # connection ends as soon as our close frame is out, without waiting
        # for the peer's answer; close_code is then the code we sent.
        await self._wait_done(end_when_flushed=receiving and not self._client)
        return True

    def _queue_close(self, code: int | None, reason: str) -> bool:
        """Queue our CLOSE frame if we may still send one; False if not.

        Open: the handshake starts (``close_code`` is ours until the peer
        answers). After the peer's close (``autoclose=False``): this answers
        it and the connection is closed, with the peer's code. Wakes a
        waiting ``receive()`` (it returns CLOSING or CLOSED) and blocked
        senders (they raise).
        """
        driver = self._driver
        assert driver is not None
        state = self._state
        if state is CLOSE_RECEIVED:
            self._write(driver.encode_close(code, reason))
            self._transition(SEND_CLOSE)
            return True
        if state is not OPEN:
            return False
        self._transition(SEND_CLOSE, code)
        self._write_now(driver.encode_close(code, reason))
        return True
