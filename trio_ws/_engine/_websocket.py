"""One WebSocket over a trio stream: the engine under both client and server.

Theory of operation
-------------------
:class:`WebSocketEngine` owns a started WebSocket: a :class:`trio.abc.Stream`
whose handshake is done, and a :class:`~trio_ws._protocol._driver.FrameDriver`.
It knows no HTTP. The client's ``ClientWebSocketResponse`` and the server's
``WebSocketResponse`` are thin subclasses that differ only where aiohttp's two
classes differ (the ``_client`` flag).

Who owns which task: whoever opens the connection (``ws_connect``'s ``async
with``, or the server's per-connection scope) calls :meth:`_start` with a
nursery it owns. That starts one ``_run`` task holding, inside
``_scope``, the reader (which runs in ``_run``'s own task: one task fewer per
connection), the writer and the heartbeat:

* the **reader** reads the stream in large chunks (on a plain socket with
  ``os.read``, waiting for readability first after a short read), feeds the driver, answers
  pings (``autoping``), completes the close handshake (``autoclose``), and
  appends messages to the inbox. When the inbox holds ``max_queue`` messages
  it stops reading the socket until the application catches up. It never
  waits for the outgoing buffer (two peers sending hard would deadlock):
  while that is over ``write_limit``, only the latest ping is remembered and
  answered once it drains. Memory stays bounded either way, and the heartbeat
  does not count silence while the reader was paused.
  On a plain socket the reader hands the socket to ``receive()`` when it has
  just woken a ``receive()`` that was waiting (``_app_reads``). Until that call
  returns, the application's task waits for input and reads the socket itself
  (the same code, so pings, close frames and errors are handled alike); a
  ``receive()`` that finds the inbox empty while the reader is not waiting on
  the socket does the same. This saves the reader's wake-up on the way from the
  socket to the application: a request/response exchange costs one scheduler
  pass per message instead of two. The reader takes the socket back whenever
  ``receive()`` returns, so pings and close frames are still handled while the
  application is elsewhere. Only one task ever waits on the socket for input,
  and neither wait is interrupted in the normal course. The one exception,
  ``close()`` (or a failure) in another task while ``receive()`` waits on the
  socket, wakes it with ``trio.lowlevel.notify_closing``, which wakes every
  wait on the file descriptor: it is used only when no write waits (else the
  writer does it once its write is done), and the reader never waits then.
  (A cancel scope per wait would cost as much as the scheduler pass saved.)
* the **writer** is the only caller of ``send_all``. Every frame (data, ping,
  pong, close) is appended to one outgoing buffer; the writer sends whatever
  has gathered in one write, so a burst of small messages costs one syscall.
  One exception saves a task switch per round trip: the first ``send_*``
  after ``receive()`` emptied the inbox (typically a reply) is written at
  once from the caller's task with a non-blocking ``os.write`` when the
  stream is a plain socket and nothing is queued or being written; whatever
  the kernel does not take goes to the writer as usual.
* the **heartbeat** (when ``heartbeat`` is set) pings after ``heartbeat``
  seconds without input and fails the connection with 1006 when nothing
  arrives within ``heartbeat / 2`` seconds more.

Background tasks never raise into the owner's nursery: failures are recorded
(``close_code``, ``exception()``, an ERROR message) and the task returns. When
``_run`` ends, the stream is closed and ``_done`` is set; nothing outlives it.

Speed: ``send_*`` and ``receive()`` check for cancellation but only yield to
the scheduler when they must wait (for buffer space, for a message), and
``receive()`` at least once every 32 queued messages. A loop
that echoes a burst of messages therefore queues all replies and the writer
sends them together when the loop next waits. Each wait is bounded: at most
``write_limit`` bytes are queued and at most one read's messages are taken
before a task blocks.

Never: block in the reader on the application, spawn a task per message, or
let a background exception escape.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from .._exceptions import (
    ClientConnectionResetError,
    ServerTimeoutError,
    WebSocketError,
    WSMessageTypeError,
    WSTimeoutError,
)
from .._models import WS_CLOSED_MESSAGE, WS_CLOSING_MESSAGE, WSCloseCode, WSMessage, WSMsgType
from .._protocol._deflate import BoundedDeflate
from .._protocol._driver import FrameDriver

__all__ = ["DEFAULT_MAX_MSG_SIZE", "WebSocketEngine"]

logger = logging.getLogger("trio_ws")

DEFAULT_MAX_MSG_SIZE: Final = 4 * 1024 * 1024
DEFAULT_MAX_QUEUE: Final = 64
DEFAULT_WRITE_LIMIT: Final = 64 * 1024
READ_SIZE: Final = 64 * 1024
BIG_READ_SIZE: Final = 4 * 1024 * 1024  # the most read at once for a large frame
_YIELD_EVERY: Final = 32  # receive() yields at least once per this many queued messages
_CLOSED_ACCESS_LIMIT: Final = 5  # the server's RuntimeError after closed, as aiohttp

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_PING = WSMsgType.PING
_PONG = WSMsgType.PONG
_CLOSE = WSMsgType.CLOSE
_STOP_TYPES = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})
_POSIX = os.name == "posix"
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Waiter:
    """Where one task waits to be woken: a ParkingLot for a single task.

    Each engine has three (the application's receive(), the paused reader,
    the idle writer); a ParkingLot with its OrderedDict costs ~0.5 KiB each.
    """

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    async def park(self) -> None:
        """Sleep until :meth:`unpark`; cancellable."""
        assert self._task is None, "only one task may wait"
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    @property
    def waiting(self) -> bool:
        """True while a task is parked here."""
        return self._task is not None

    def unpark(self) -> None:
        """Wake the waiting task, if any."""
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    unpark_all = unpark


class WebSocketEngine:
    """The WebSocket API shared by ``ClientWebSocketResponse`` and ``WebSocketResponse``.

    Not instantiated directly: use ``ClientSession.ws_connect`` or
    ``web.WebSocketResponse``.
    """

    _client: bool = False
    # A per-instance dict jumps from 0.3 to 1.6 KiB past 30 attributes.
    __slots__ = (
        "__weakref__",
        "_app_reads",
        "_app_waiting",
        "_autoclose",
        "_autoping",
        "_close_code",
        "_close_received",
        "_close_sent",
        "_closed",
        "_closed_reads",
        "_closing",
        "_deferred",
        "_deferred_action",
        "_deflate",
        "_done",
        "_drain_lot",
        "_drained",
        "_driver",
        "_exception",
        "_fast_receives",
        "_fd",
        "_getter",
        "_go_away",
        "_heartbeat",
        "_inbox",
        "_last_rx",
        "_max_msg_size",
        "_max_queue",
        "_out",
        "_out_size",
        "_pending_pong",
        "_protocol",
        "_reader_done",
        "_reader_lot",
        "_reader_paused",
        "_reader_waiting",
        "_receive_timeout",
        "_receiving",
        "_reply_credit",
        "_scope",
        "_stream",
        "_timeout",
        "_wake_after_write",
        "_want_shutdown",
        "_write_limit",
        "_writer_lot",
        "_writing",
    )

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        receive_timeout: float | None = None,
        autoclose: bool = True,
        autoping: bool = True,
        heartbeat: float | None = None,
        max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
        max_queue: int = DEFAULT_MAX_QUEUE,
        write_limit: int = DEFAULT_WRITE_LIMIT,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if write_limit < 1:
            raise ValueError("write_limit must be at least 1")
        if heartbeat is not None and heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        self._timeout = timeout
        self._receive_timeout = receive_timeout
        self._autoclose = autoclose
        self._autoping = autoping
        self._heartbeat = heartbeat
        self._max_msg_size = max_msg_size
        self._max_queue = max_queue
        self._write_limit = write_limit

        self._stream: trio.abc.Stream | None = None
        self._driver: FrameDriver | None = None
        self._deflate: BoundedDeflate | None = None
        self._protocol: str | None = None

        self._inbox: deque[WSMessage] = deque()
        self._getter = _Waiter()
        self._reader_lot = _Waiter()
        self._reader_done = False
        self._receiving = False
        self._fast_receives = 0
        self._reader_paused = False  # stopped reading: the application is behind
        # Who reads a plain socket: the reader task, or the application's task
        # while it is in receive() (_app_reads; see _read_in_receive).
        self._app_reads = False
        self._app_waiting = False  # receive() waits on the socket
        self._wake_after_write = False  # wake it once the writer's wait is over
        self._reader_waiting = False  # the reader waits on the socket
        self._drained = True  # the last read emptied the socket

        self._out: list[bytes | bytearray | memoryview] = []
        self._out_size = 0  # queued plus in-flight bytes
        self._writer_lot = _Waiter()
        self._drain_lot = trio.lowlevel.ParkingLot()
        self._want_shutdown = False
        self._pending_pong: bytes | None = None
        self._writing = False  # the writer is inside send_all
        # The socket's file descriptor while open (-1: not a plain socket), and
        # whether the next send may be written at once (see _send_message).
        self._fd = -1
        self._reply_credit = False
        self._go_away = False
        # A close to send when the application takes this message from the
        # inbox, so that messages queued before it can still be answered.
        self._deferred: WSMessage | None = None
        self._deferred_action: Callable[[], None] | None = None

        self._closed = False  # no more application sends: close sent or connection gone
        self._closing = False  # close() is in progress
        self._close_sent = False
        self._close_received = False
        self._close_code: int | None = None
        self._exception: BaseException | None = None
        self._closed_reads = 0
        self._last_rx = 0.0

        self._scope = trio.CancelScope()
        self._done = trio.Event()

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """True once a close frame was sent or received, or the connection broke."""
        return self._closed

    @property
    def close_code(self) -> int | None:
        """The close code: ``None`` while open; the peer's code after a close
        handshake; 1006 when the connection broke without one (also after a
        heartbeat, close or, on the client, receive timeout)."""
        return self._close_code

    @property
    def protocol(self) -> str | None:
        """The negotiated subprotocol, or ``None``."""
        return self._protocol

    @property
    def compress(self) -> bool:
        """True when permessage-deflate was negotiated for this connection."""
        return self._deflate is not None

    def exception(self) -> BaseException | None:
        """The error that ended the connection, if any.

        Set by a heartbeat timeout (``ServerTimeoutError`` on the client,
        :class:`~trio_ws.WSTimeoutError` on the server), a timed-out or failed
        ``close()``, a connection lost without a close frame
        (``ClientConnectionResetError``), and (server) a protocol error (the
        :class:`~trio_ws.WebSocketError`). ``None`` otherwise.
        """
        return self._exception

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport details: ``"peername"``, ``"sockname"`` or ``"socket"``, else ``default``."""
        stream = self._stream
        while stream is not None and not isinstance(stream, trio.SocketStream):
            stream = getattr(stream, "transport_stream", None)
        if stream is None:
            return default
        sock = stream.socket
        if name == "socket":
            return sock
        if name == "peername":
            return sock.getpeername()
        if name == "sockname":
            return sock.getsockname()
        return default

    # -------------------------------------------------------------- lifecycle

    def _start(
        self,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        *,
        extensions: list[BoundedDeflate] | None = None,
        protocol: str | None = None,
        trailing_data: bytes = b"",
    ) -> None:
        """Begin serving ``stream`` (handshake already done) with tasks in ``nursery``."""
        self._stream = stream
        if _POSIX and isinstance(stream, trio.SocketStream):
            # os.read/os.write take a socket's descriptor on POSIX only.
            self._fd = stream.socket.fileno()
        self._deflate = extensions[0] if extensions else None
        self._driver = FrameDriver(
            client=self._client, extensions=list(extensions or []), max_size=self._max_msg_size
        )
        self._protocol = protocol
        self._last_rx = trio.current_time()
        self._reply_credit = True  # the first send after the handshake
        if trailing_data:
            self._on_data(trailing_data)
        nursery.start_soon(self._run)

    async def _run(self) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, self._writer)
                    if self._heartbeat is not None:
                        nursery.start_soon(self._guard, self._heartbeat_task)
                    # The reader runs in this task: one task fewer per connection.
                    await self._guard(self._reader)
        except BaseException as exc:
            if _is_cancellation(exc):
                # The owner's scope was cancelled: tell the peer we are going away.
                await self._send_going_away()
            raise
        else:
            if self._go_away:
                await self._send_going_away()
        finally:
            self._closed = True
            self._fd = -1
            self._reader_done = True
            if self._close_code is None:
                self._close_code = WSCloseCode.ABNORMAL_CLOSURE
            self._wake_receiver()
            self._drain_lot.unpark_all()
            assert self._stream is not None
            try:
                await trio.aclose_forcefully(self._stream)
            finally:
                # Set even when an outer cancellation interrupts the close.
                self._done.set()

    async def _send_going_away(self) -> None:
        """Best effort, shielded and bounded: flush what is queued, then CLOSE 1001."""
        if self._close_sent or self._writing or self._driver is None or self._stream is None:
            return
        self._close_sent = True
        self._closed = True
        frame = self._driver.encode_close(WSCloseCode.GOING_AWAY, "")
        data = b"".join([*self._out, frame])
        self._out.clear()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + min(self._timeout, 1.0)
            try:
                await self._stream.send_all(data)
            except _STREAM_ERRORS:
                return
        if not scope.cancelled_caught and self._close_code is None:
            self._close_code = WSCloseCode.GOING_AWAY

    async def _guard(self, task: Callable[[], Any]) -> None:
        """Run a background task; record an unexpected error instead of raising it."""
        try:
            await task()
        except Exception as exc:
            logger.exception("trio_ws: internal error in %s", getattr(task, "__name__", task))
            self._fail(exc, WSCloseCode.ABNORMAL_CLOSURE)

    def _fail(self, exc: BaseException | None, code: int, *, message: bool = False) -> None:
        """End the connection now, without a close frame."""
        if self._close_code is None or not self._close_received:
            self._close_code = code
        if exc is not None and self._exception is None:
            self._exception = exc
        self._closed = True
        if message and exc is not None:
            self._push(WSMessage(WSMsgType.ERROR, exc, None))
        self._reader_done = True
        self._wake_receiver()
        self._scope.cancel()

    def _request_shutdown(self) -> None:
        """Flush what is queued, then close the stream and end all tasks."""
        self._want_shutdown = True
        self._reader_done = True
        self._wake_receiver()
        self._writer_lot.unpark_all()

    async def _owner_exit(self, exc: BaseException | None) -> None:
        """Called by the owning scope when it ends: close as the situation asks.

        Normal exit closes with 1000 (and waits for the handshake up to
        ``timeout``); an exception from the owner's code closes with 1011;
        cancellation sends 1001 GOING_AWAY best-effort within a short shielded
        grace, then drops the connection. In every case the tasks are gone on
        return.
        """
        if not self._done.is_set():
            cancelled = isinstance(exc, trio.Cancelled) or (
                isinstance(exc, BaseExceptionGroup) and exc.subgroup(trio.Cancelled) is not None
            )
            if cancelled or (exc is not None and not isinstance(exc, Exception)):
                await self._going_away()
            elif exc is not None:
                await self._close_shielded(WSCloseCode.INTERNAL_ERROR)
            else:
                await self.close()
            with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
                await self._done.wait()
        self._scope.cancel()
        with trio.CancelScope(shield=True):
            await self._done.wait()

    async def _close_shielded(self, code: int, message: bytes = b"") -> None:
        with trio.CancelScope(shield=True):
            await self.close(code=code, message=message)

    async def _going_away(self) -> None:
        self._go_away = True
        self._scope.cancel()
        with trio.CancelScope(shield=True):
            await self._done.wait()

    # ------------------------------------------------------------------ reader

    async def _reader(self) -> None:
        stream = self._stream
        assert stream is not None
        fd = self._fd
        inbox = self._inbox
        while not self._reader_done:
            if self._app_reads:
                # The application's task reads the socket while it waits in
                # receive(); it hands the socket back when receive() returns.
                await self._reader_lot.park()
                continue
            if len(inbox) >= self._max_queue:
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
                        self._reader_waiting = True
                        try:
                            await trio.lowlevel.wait_readable(fd)
                        finally:
                            self._reader_waiting = False
                    else:
                        await trio.lowlevel.checkpoint()
                        if self._app_reads or self._reader_done:
                            continue
                    data = self._read_now(fd)
            except BlockingIOError:
                self._drained = True
                continue
            except _STREAM_ERRORS as exc:
                self._on_lost(exc)
                return
            waiting = self._getter.waiting  # a receive() waits for this input
            if not self._on_input(data):
                return
            if waiting and fd >= 0 and inbox:
                # That receive() will most likely be back soon for more: let it
                # read the socket itself until it returns.
                self._app_reads = True

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

        Called with the inbox empty, when the socket is this call's already
        (``_app_reads``) or the reader is not waiting on it; from then until
        receive() returns the reader leaves the socket alone. Returns after one
        read, or when woken by close(), a failure or shutdown (see
        :meth:`_wake_receiver`).
        """
        self._app_reads = True
        fd = self._fd
        try:
            if self._drained:
                self._app_waiting = True
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    return  # woken (see _wake_app), or the socket is closing
                finally:
                    self._app_waiting = False
            else:
                await trio.lowlevel.checkpoint()
            if self._reader_done or self._fd < 0:
                return
            data = self._read_now(fd)
        except BlockingIOError:
            self._drained = True
            return
        except _STREAM_ERRORS as exc:
            if not self._reader_done:  # else the connection is already ending
                self._on_lost(exc)
            return
        self._on_input(data)

    def _wake_receiver(self) -> None:
        """Wake a receive() waiting for a message, in the inbox or on the socket."""
        self._getter.unpark()
        if self._app_waiting:
            self._wake_app()

    def _wake_app(self) -> None:
        """Wake the receive() that waits on the socket (only another task can call this).

        ``notify_closing`` ends every wait on the file descriptor with
        ``ClosedResourceError`` without closing it; receive() takes that as a
        wake-up. While the writer waits to write, the wake is left to it.
        """
        if self._writing:
            self._wake_after_write = True
            return
        self._app_waiting = False
        if self._fd >= 0:
            trio.lowlevel.notify_closing(self._fd)

    def _on_data(self, data: bytes | bytearray) -> None:
        driver = self._driver
        assert driver is not None
        out: list[WSMessage] = []
        error: WebSocketError | None = None
        try:
            driver.feed(data, out)
        except WebSocketError as exc:
            error = exc
        inbox = self._inbox
        for msg in out:
            kind = msg.type
            if kind is _TEXT or kind is _BINARY:
                if not self._closing:  # after close() starts, data is discarded
                    inbox.append(msg)
            elif kind is _PING:
                if self._autoping:
                    if self._close_sent:
                        pass
                    elif self._out_size > self._write_limit:
                        # Congested: answer only the latest ping once drained
                        # (RFC 6455 5.5.3), so a ping flood cannot grow memory.
                        self._pending_pong = msg.data
                    else:
                        self._write(driver.encode_pong(msg.data))
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
            self._wake_receiver()

    def _on_close_frame(self, msg: WSMessage) -> None:
        driver = self._driver
        assert driver is not None
        self._close_received = True
        if self._close_sent:
            # The answer to our close(): the handshake is complete.
            self._close_code = msg.data or WSCloseCode.OK
            self._request_shutdown()
            return
        if self._autoclose:

            def reply() -> None:
                self._close_code = msg.data or WSCloseCode.OK
                self._closed = True
                if not self._close_sent:
                    self._close_sent = True
                    self._write(driver.encode_close(msg.data or None, ""))
                self._request_shutdown()

            self._push(msg)
            self._defer_until_taken(msg, reply)
        else:
            self._push(msg)
            self._reader_done = True  # the driver parses nothing after a close frame

    def _defer_until_taken(self, msg: WSMessage, action: Callable[[], None]) -> None:
        """Run ``action`` now, or when ``msg`` is taken if data is queued before it.

        The reader stops meanwhile: nothing after ``msg`` is parsed anyway.
        """
        self._reader_done = True
        if len(self._inbox) <= 1:
            action()
        else:
            self._deferred = msg
            self._deferred_action = action

    def _on_protocol_error(self, exc: WebSocketError) -> None:
        driver = self._driver
        assert driver is not None
        msg = WSMessage(WSMsgType.ERROR, exc, None)

        def fail() -> None:
            if not self._close_sent:
                self._close_sent = True
                self._write(driver.encode_close(exc.code, str(exc)))
            self._closed = True
            self._close_code = exc.code
            if not self._client:
                self._exception = exc
            self._request_shutdown()

        self._push(msg)
        self._defer_until_taken(msg, fail)

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._close_sent and self._close_received:
            self._request_shutdown()
            return
        if self._close_code is None or not self._close_received:
            self._close_code = WSCloseCode.ABNORMAL_CLOSURE
        if self._exception is None:
            err = ClientConnectionResetError("Connection lost")
            if exc is not None:
                err.__cause__ = exc
            self._exception = err
        self._closed = True
        self._request_shutdown()

    def _push(self, msg: WSMessage) -> None:
        self._inbox.append(msg)
        self._wake_receiver()

    # ------------------------------------------------------------------ writer

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue frame bytes for the writer; never blocks."""
        self._out.append(data)
        self._out_size += len(data)
        self._writer_lot.unpark()

    async def _writer(self) -> None:
        stream = self._stream
        assert stream is not None
        while True:
            if not self._out:
                if self._want_shutdown:
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
                sent = _try_write(self._fd, data)
                if sent < len(data):
                    await stream.send_all(memoryview(data)[sent:] if sent else data)
            except _STREAM_ERRORS as exc:
                self._out.clear()
                self._out_size = 0
                self._on_lost(exc)
                break
            self._writing = False
            if self._wake_after_write:
                self._wake_after_write = False
                if self._app_waiting:
                    self._wake_app()
            self._out_size -= len(data)
            if self._out_size <= self._write_limit // 4:
                self._drain_lot.unpark_all()
                if self._pending_pong is not None and not self._close_sent:
                    assert self._driver is not None
                    self._write(self._driver.encode_pong(self._pending_pong))
                    self._pending_pong = None
        self._drain_lot.unpark_all()
        self._scope.cancel()

    async def _wait_drain(self) -> None:
        while self._out_size > self._write_limit // 4 and not self._done.is_set():
            await self._drain_lot.park()

    # --------------------------------------------------------------- heartbeat

    async def _heartbeat_task(self) -> None:
        interval = self._heartbeat
        assert interval is not None and self._driver is not None
        while not self._closed:
            due = self._last_rx + interval
            if trio.current_time() < due:
                await trio.sleep_until(due)
                continue
            sent_at = trio.current_time()
            self._write(self._driver.encode_ping(b""))
            await trio.sleep(interval / 2)
            if self._last_rx < sent_at and not self._closed and not self._reader_paused:
                text = f"No PONG received after {interval / 2} seconds"
                err: BaseException = (
                    ServerTimeoutError(text) if self._client else WSTimeoutError(text)
                )
                self._fail(err, WSCloseCode.ABNORMAL_CLOSURE, message=True)
                return

    # ------------------------------------------------------------------- send

    def _check_open(self) -> FrameDriver:
        if self._driver is None:
            raise RuntimeError("Call .prepare() first")
        if self._closed or self._close_sent:
            raise ClientConnectionResetError("Cannot write to closing transport")
        return self._driver

    async def _send_message(
        self, data: str | bytes | bytearray | memoryview, compress: int | None
    ) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        driver = self._check_open()
        if self._out_size > self._write_limit:
            await self._wait_drain()
            driver = self._check_open()
        if compress is not None and not compress and self._deflate is not None:
            self._deflate.skip_next = True
        frame = driver.encode(data)
        if self._reply_credit:
            # The first send after receive() emptied the inbox (a reply, most
            # likely) or after the handshake: write it now from this task,
            # saving the hop to the writer. Later sends queue, so a burst
            # still leaves in one write.
            self._reply_credit = False
            self._write_now(frame)
        else:
            self._write(frame)

    def _write_now(self, frame: bytes | bytearray) -> None:
        """Write ``frame`` from this task if nothing is queued ahead of it; queue the rest."""
        if self._fd >= 0 and not self._out and not self._writing:
            sent = _try_write(self._fd, frame)
            if sent == len(frame):
                return
            if sent:
                self._write(memoryview(frame)[sent:])
                return
        self._write(frame)

    async def _send_control(
        self, pong: bool, message: bytes | bytearray | memoryview | str
    ) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        driver = self._check_open()
        payload = _as_bytes(message)
        frame = driver.encode_pong(payload) if pong else driver.encode_ping(payload)
        if self._out_size > self._write_limit:
            await self._wait_drain()
            self._check_open()
        self._write(frame)

    async def send_str(self, data: str, compress: int | None = None) -> None:
        """Send ``data`` as one TEXT message.

        ``compress=0`` sends this message uncompressed even when
        permessage-deflate was negotiated; any other value uses the negotiated
        settings. Returns once the frame is queued; waits first (a checkpoint)
        only while more than ``write_limit`` bytes are queued, so a peer that
        does not read slows the sender instead of growing memory. If cancelled
        while waiting, nothing was sent.

        Raises ``TypeError`` if ``data`` is not ``str``,
        :class:`~trio_ws.ClientConnectionResetError` after the connection closed, and
        ``RuntimeError`` on a server response before ``prepare()``.
        """
        if not isinstance(data, str):
            raise TypeError(f"data argument must be str ({type(data)!r})")
        await self._send_message(data, compress)

    async def send_bytes(
        self, data: bytes | bytearray | memoryview, compress: int | None = None
    ) -> None:
        """Send ``data`` as one BINARY message; as :meth:`send_str` otherwise.

        Raises ``TypeError`` unless ``data`` is bytes, bytearray or memoryview.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be byte-ish ({type(data)!r})")
        await self._send_message(data, compress)

    async def send_json(
        self,
        data: Any,
        compress: int | None = None,
        *,
        dumps: Callable[[Any], str] = json.dumps,
    ) -> None:
        """Send ``dumps(data)`` as a TEXT message; as :meth:`send_str` otherwise.

        Raises what ``dumps`` raises for data it cannot serialize.
        """
        await self.send_str(dumps(data), compress=compress)

    async def ping(self, message: bytes = b"") -> None:
        """Send a PING frame with ``message`` (at most 125 bytes).

        Raises ``ValueError`` for a longer payload and
        :class:`~trio_ws.ClientConnectionResetError` after close.
        """
        await self._send_control(False, message)

    async def pong(self, message: bytes = b"") -> None:
        """Send an unsolicited PONG frame with ``message`` (at most 125 bytes).

        Raises as :meth:`ping`.
        """
        await self._send_control(True, message)

    # ------------------------------------------------------------------ close

    async def close(self, code: int | None = WSCloseCode.OK, message: bytes | str = b"") -> bool:
        """Close the WebSocket: send CLOSE with ``code`` and ``message``, wait for the peer's.

        Returns ``True`` if this call closed the connection and ``False`` if
        it was already closed (by an earlier ``close()``, the peer's close
        with ``autoclose``, an error or a lost connection). Messages sent
        before ``close()`` reach the peer before the close frame. Waits at most
        ``timeout`` seconds for the peer's close frame; past that (or on a
        write failure) ``close_code`` is 1006 and ``exception()`` tells why,
        and it still returns ``True``. After it returns, ``close_code`` is the
        peer's answer and every task of the connection has ended.

        A ``receive()`` waiting in another task returns CLOSING (server) or
        CLOSED (client). If cancelled, the connection is dropped,
        ``close_code`` becomes 1006, and ``Cancelled`` propagates.
        """
        if self._driver is None:
            raise RuntimeError("Call .prepare() first")
        if code is None:
            code = WSCloseCode.OK
        if self._deferred_action is not None:
            action = self._deferred_action
            self._deferred = self._deferred_action = None
            action()
        reason = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        if self._close_received and not self._close_sent:
            # autoclose=False and the peer closed first: answer and finish.
            self._close_sent = True
            self._closed = True
            self._write(self._driver.encode_close(code, reason))
            self._request_shutdown()
            await self._wait_done()
            return True
        if self._closed or self._closing:
            await trio.lowlevel.checkpoint()
            return False
        self._closing = True
        self._closed = True
        self._close_sent = True
        self._close_code = code
        self._wake_receiver()
        self._write_now(self._driver.encode_close(code, reason))
        await self._wait_done()
        return True

    async def _wait_done(self) -> None:
        try:
            with trio.move_on_after(self._timeout) as scope:
                await self._done.wait()
        except trio.Cancelled:
            self._close_code = WSCloseCode.ABNORMAL_CLOSURE
            self._scope.cancel()
            raise
        if scope.cancelled_caught:
            self._close_code = WSCloseCode.ABNORMAL_CLOSURE
            if self._exception is None:
                self._exception = WSTimeoutError(
                    f"No close frame received within {self._timeout} seconds"
                )
            self._scope.cancel()
            with trio.CancelScope(shield=True):
                await self._done.wait()

    # ---------------------------------------------------------------- receive

    async def receive(self, timeout: float | None = None) -> WSMessage:
        """Return the next message.

        TEXT, BINARY (and PING/PONG when ``autoping=False``) arrive as sent. When
        the peer closes, one CLOSE message ``(CLOSE, code, reason)`` is
        returned (with ``autoclose`` the reply was already sent), then CLOSED on
        every later call (the server raises ``RuntimeError`` on the 5th call
        after close, as aiohttp does). A protocol error returns one
        ``(ERROR, WebSocketError, None)`` (the close frame with its code was
        sent), then CLOSED. While ``close()`` runs in another task, returns
        CLOSING (server) or CLOSED (client).

        ``timeout`` (or the ``receive_timeout`` given at creation; 0 or None
        means none) raises :class:`~trio_ws.WSTimeoutError`, a ``TimeoutError`` and
        ``trio.TooSlowError``; the connection stays usable (the client also
        sets ``close_code`` to 1006, as aiohttp). Cancelling ``receive()``
        loses no message. A second concurrent call raises ``RuntimeError``.
        """
        if self._receiving:
            raise RuntimeError("Concurrent call to receive() is not allowed")
        if self._driver is None:
            raise RuntimeError("Call .prepare() first")
        limit = timeout or self._receive_timeout
        self._receiving = True
        try:
            if not limit:
                return await self._next()
            with trio.move_on_after(limit):
                return await self._next()
            if self._client:
                self._close_code = WSCloseCode.ABNORMAL_CLOSURE
            raise WSTimeoutError(f"No message received within {limit} seconds")
        finally:
            self._receiving = False
            if self._app_reads:
                # The reader takes the socket back while the application is elsewhere.
                self._app_reads = False
                self._reader_lot.unpark()

    async def _next(self) -> WSMessage:
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while True:
            if inbox:
                self._fast_receives += 1
                if self._fast_receives >= _YIELD_EVERY:
                    # Let other tasks run now and then even while messages are
                    # waiting, so one busy connection cannot starve the rest.
                    self._fast_receives = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    if not inbox:
                        continue
                msg = inbox.popleft()
                if msg is self._deferred:
                    action = self._deferred_action
                    self._deferred = self._deferred_action = None
                    assert action is not None
                    action()
                elif len(inbox) <= self._max_queue // 4:
                    self._reader_lot.unpark()
                    if not inbox:
                        self._reply_credit = True
                return msg
            if self._closing and not self._done.is_set():
                return WS_CLOSED_MESSAGE if self._client else WS_CLOSING_MESSAGE
            if self._reader_done:
                if not self._client:
                    self._closed_reads += 1
                    if self._closed_reads >= _CLOSED_ACCESS_LIMIT:
                        raise RuntimeError("WebSocket connection is closed.")
                await trio.lowlevel.checkpoint()
                return WS_CLOSED_MESSAGE
            self._fast_receives = 0
            if self._fd >= 0 and (self._app_reads or not self._reader_waiting):
                await self._read_in_receive()
            else:
                await self._getter.park()

    async def receive_str(self, *, timeout: float | None = None) -> str:
        """Receive a TEXT message and return its text.

        Raises :class:`~trio_ws.WSMessageTypeError` (a ``TypeError``) for any other
        message, CLOSE and CLOSED included.
        """
        msg = await self.receive(timeout)
        if msg.type is not _TEXT:
            raise WSMessageTypeError(
                f"Received message {int(msg.type)}:{msg.data!r} is not WSMsgType.TEXT"
            )
        return msg.data  # type: ignore[no-any-return]

    async def receive_bytes(self, *, timeout: float | None = None) -> bytes:
        """Receive a BINARY message and return its bytes; raises as :meth:`receive_str`."""
        msg = await self.receive(timeout)
        if msg.type is not _BINARY:
            raise WSMessageTypeError(
                f"Received message {int(msg.type)}:{msg.data!r} is not WSMsgType.BINARY"
            )
        return msg.data  # type: ignore[no-any-return]

    async def receive_json(
        self, *, loads: Callable[[str], Any] = json.loads, timeout: float | None = None
    ) -> Any:
        """Receive a TEXT message and return ``loads(text)``.

        Raises as :meth:`receive_str`, and what ``loads`` raises for bad JSON.
        """
        return loads(await self.receive_str(timeout=timeout))

    def __aiter__(self) -> AsyncIterator[WSMessage]:
        return self

    async def __anext__(self) -> WSMessage:
        """The next message; the loop ends (``StopAsyncIteration``) on CLOSE,
        CLOSING or CLOSED. ERROR messages are yielded; the loop ends after them."""
        msg = await self.receive()
        if msg.type in _STOP_TYPES:
            raise StopAsyncIteration
        return msg


def _try_write(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write what a non-blocking socket takes now; 0 if it would block or broke.

    A broken connection is left for ``send_all`` to report. ``fd`` -1 (not a
    plain socket, or closed) writes nothing.
    """
    if fd < 0:
        return 0
    try:
        return os.write(fd, data)
    except OSError:
        return 0


def _is_cancellation(exc: BaseException | None) -> bool:
    """True for ``trio.Cancelled``, alone or inside an exception group."""
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(trio.Cancelled) is not None


def _as_bytes(message: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(message, str):
        return message.encode()
    return bytes(message)
