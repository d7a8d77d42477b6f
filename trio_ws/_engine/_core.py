"""What every part of the engine shares: settings, the connection state, the waiters.

Theory of operation
-------------------
The engine is one object per connection, built from one class per job, each
in its own module and each deriving from the one before (so every field is a
slot of one object and the hot paths cost one attribute load, never a hop
to a helper object)::

    EngineCore (here)  settings, the state, the inbox deque, the waiters,
                       and the one transition function
      Outbox           the outgoing buffer, the writer task, write_limit,
                       pong coalescing, the direct write    (_outbox.py)
        Reader         the reader task, reading the socket, what a frame
                       means (pings, close, errors)         (_reader.py)
          Inbox        receive()'s side of the queue: max_queue, the
                       deferred close, yielding             (_inbox.py)
            Lifecycle  start, run, heartbeat, close and owner exit
                                                            (_lifecycle.py)
              WebSocketEngine  the public API               (_websocket.py)

**The state.** ``_state`` is a :class:`~._state.State`, and only
:meth:`EngineCore._transition` changes it, following the table in
``_state.py``. Every way a connection ends goes through it: the close
handshake (``close()``, the peer's close, the automatic reply), a lost
stream, the heartbeat, a close timeout, a protocol error, the owner's
cancellation, an internal error. It also sets ``close_code`` and
``exception()`` (the first ending wins: ``CLOSED`` is final), then wakes
every waiter.

**The waiters.** A task that waits checks the state after each wake-up, so
one wake per transition is enough and none is lost: "the connection is
over" (``CLOSED``) is level-triggered. The waiters are a ``receive()``
(parked on ``_getter``, or waiting on the socket itself, see ``_socket``),
senders held by ``write_limit`` (``_drain_lot``), the idle writer and the
paused reader. ``close()`` waits on ``_done``, set once every task has
ended and the stream is closed.

**The socket's input side** has exactly one owner, ``_socket``: the reader
task, or the ``receive()`` it handed the socket to (see ``_reader.py``), and
the field also says whether that owner is waiting on it. Each wait on the
file descriptor asserts ownership first. A ``receive()`` waiting on the
socket can only be woken from another task by ``notify_closing``, which ends
every wait on the descriptor, the writer's included: the writer takes that
as a spurious wake-up and waits again (see ``_outbox.py``), so the wake
never waits for a write.

**A drop** (``_transition(ABORT, ..., drop=True)``: a close timeout, the
caller's cancellation, an internal error) cancels every task of the
connection even when the state is already ``CLOSED``: our CLOSE frame may
still be queued behind a write the peer does not read (it also ends the
linger after the server's early close, see ``_lifecycle.py``). Our CLOSE is the
last frame ever queued, so bytes still queued or being written once
``CLOSED`` are, or end with, our CLOSE: if we give up on them (a drop, or
the owner's cancellation) the handshake did not happen on the wire and
``close_code`` becomes 1006, with the error in ``exception()``. This is the
one change after ``CLOSED``: ``close_code`` tells what happened on the
wire. A write that fails after the peer's CLOSE is different: the peer hung
up, and the code in its CLOSE stands (RFC 6455 7.1.5).

Never: change ``_state`` outside ``_transition``, or wait without checking
the state after the wait.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from typing import Any, Final

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from .._exceptions import ClientConnectionResetError
from .._models import WSCloseCode, WSMessage, WSMsgType
from .._protocol._deflate import BoundedDeflate
from .._protocol._driver import FrameDriver
from ._state import Event, State, next_state

logger = logging.getLogger("trio_ws")

DEFAULT_MAX_MSG_SIZE: Final = 4 * 1024 * 1024
DEFAULT_MAX_QUEUE: Final = 64
DEFAULT_WRITE_LIMIT: Final = 64 * 1024
POSIX: Final = os.name == "posix"
STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

# Module constants: a global load is as cheap as an attribute load on the hot paths.
OPEN: Final = State.OPEN
CLOSE_SENT: Final = State.CLOSE_SENT
CLOSE_RECEIVED: Final = State.CLOSE_RECEIVED
CLOSED: Final = State.CLOSED
SEND_CLOSE: Final = Event.SEND_CLOSE
RECEIVE_CLOSE: Final = Event.RECEIVE_CLOSE
ABORT: Final = Event.ABORT

# Who owns the socket's input side (``_socket``), and whether it waits on it.
READER: Final = 0  # the reader task (it is not waiting on the socket)
READER_WAITS: Final = 1  # the reader task, waiting for the socket to be readable
RECEIVE: Final = 2  # a receive() (it is not waiting on the socket)
RECEIVE_WAITS: Final = 3  # a receive(), waiting for the socket to be readable


class Waiter:
    """Where one task waits to be woken: a ParkingLot for a single task.

    Each engine has three (the application's receive(), the paused reader,
    the idle writer); a ParkingLot with its OrderedDict costs ~0.5 KiB each.
    """

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    async def park(self) -> None:
        """Sleep until :meth:`unpark`; a checkpoint, cancellable."""
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


class EngineCore:
    """Settings, connection state and waiters of one WebSocket (see the module docstring)."""

    _client: bool = False
    # Slots: every engine field lives in the instance, not in a per-instance dict
    # (the concrete subclasses keep their few own attributes in one).
    __slots__ = (
        "__weakref__",
        "_autoclose",
        "_autoping",
        "_close_code",
        "_closing_due",
        "_decode_text",
        "_deferred",
        "_deflate",
        "_done",
        "_drain_lot",
        "_driver",
        "_exception",
        "_fd",
        "_getter",
        "_heartbeat",
        "_inbox",
        "_linger",
        "_max_msg_size",
        "_max_queue",
        "_out_size",
        "_protocol",
        "_reader_lot",
        "_receive_timeout",
        "_scope",
        "_socket",
        "_state",
        "_stream",
        "_timeout",
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
        decode_text: bool = True,
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
        self._decode_text = decode_text

        self._stream: trio.abc.Stream | None = None
        self._driver: FrameDriver | None = None
        self._deflate: BoundedDeflate | None = None
        self._protocol: str | None = None
        # The socket's file descriptor while open; -1 when not a plain socket.
        self._fd = -1

        self._state = OPEN
        self._close_code: int | None = None
        self._exception: BaseException | None = None
        self._scope = trio.CancelScope()  # holds every task of the connection
        self._done = trio.Event()  # every task has ended and the stream is closed

        self._inbox: deque[WSMessage] = deque()
        # The peer's CLOSE (or a protocol error) waiting in the inbox behind
        # messages queued before it; acted on when the application takes it.
        self._deferred: WSMessage | None = None
        # close() began while a receive() was in progress: the next answer
        # from the state (not a queued message) is CLOSING, once (aiohttp).
        self._closing_due = False

        self._getter = Waiter()  # a receive() waiting for a message
        self._reader_lot = Waiter()  # the reader, paused or without the socket
        self._writer_lot = Waiter()  # the writer, with nothing to write
        self._drain_lot = trio.lowlevel.ParkingLot()  # senders over write_limit
        self._socket = READER
        # The writer is inside a write, or was cancelled in one (the stream
        # may then hold part of a frame: nothing more may be written).
        self._writing = False
        # Bytes queued for the writer plus those being written (the outbox
        # keeps it; the transition reads it to tell whether our CLOSE is out).
        self._out_size = 0
        # Set when the connection ended right after our CLOSE was written
        # (the server's early close): _run then lingers on the input under
        # this scope before closing the stream (see _lifecycle.py).
        self._linger: trio.CancelScope | None = None

    # ------------------------------------------------------------ transitions

    def _transition(
        self,
        event: Event,
        code: int | None = None,
        exc: BaseException | None = None,
        *,
        drop: bool = False,
        report: bool = False,
    ) -> bool:
        """Apply ``event``; the only place the state changes. False once over.

        ``code`` is the close code: ours for SEND_CLOSE from OPEN (until the
        peer answers), the peer's for RECEIVE_CLOSE, and for ABORT the code
        to report (1006, or a protocol error's). ABORT also records ``exc``
        (the first error wins), drops an unanswered close or error still
        queued, queues an ERROR message when ``report``, and with ``drop``
        cancels every task at once instead of letting the writer flush.
        An ABORT once ``CLOSED`` changes nothing but what
        :meth:`_abort_closed` says.
        """
        state = self._state
        if state is CLOSED:
            if event is ABORT:
                self._abort_closed(exc, drop)
            return False
        self._state = next_state(state, event)
        if event is ABORT:
            self._close_code = code
            if exc is not None and self._exception is None:
                self._exception = exc
            self._forget_deferred()
            if report and exc is not None:
                self._inbox.append(WSMessage(WSMsgType.ERROR, exc, None))
            if drop:
                self._scope.cancel()
        elif event is RECEIVE_CLOSE or state is OPEN:
            self._close_code = code
        self._wake_all()
        return True

    def _abort_closed(self, exc: BaseException | None, drop: bool) -> None:
        """An ABORT once ``CLOSED``: a drop still ends the tasks; an unsent CLOSE means 1006.

        Nothing is queued after our CLOSE frame, so bytes still queued or
        being written now are, or end with, it: the tasks are being (or were)
        cancelled, so it will not reach the peer, and the close handshake did
        not happen on the wire. Only a drop, or the final ABORT in ``_run``
        after the writer was cancelled, comes here with bytes queued (a
        failed write clears the queue first: see the module docstring).
        """
        if self._out_size:
            self._close_code = WSCloseCode.ABNORMAL_CLOSURE
            if exc is not None and self._exception is None:
                self._exception = exc
        if drop:
            self._scope.cancel()
            if self._linger is not None:
                self._linger.cancel()  # stop waiting for the peer to hang up

    def _on_lost(self, exc: BaseException | None) -> None:
        """The stream ended or broke (``exc``): over, unless the handshake was done."""
        err = ClientConnectionResetError("Connection lost")
        err.__cause__ = exc
        self._transition(ABORT, WSCloseCode.ABNORMAL_CLOSURE, err)

    def _forget_deferred(self) -> None:
        """Drop a peer's close (or error) never acted on: it is not answered now."""
        msg = self._deferred
        if msg is None:
            return
        self._deferred = None
        inbox = self._inbox
        for i, queued in enumerate(inbox):
            if queued is msg:
                del inbox[i]
                break

    # ----------------------------------------------------------------- waking

    def _wake_all(self) -> None:
        """Wake every waiter; each checks the state and goes on or returns."""
        self._getter.unpark()
        if self._socket == RECEIVE_WAITS:
            self._wake_app()
        self._reader_lot.unpark()
        self._writer_lot.unpark()
        self._drain_lot.unpark_all()

    def _wake_app(self) -> None:
        """Wake the receive() that waits on the socket (only another task can).

        ``notify_closing`` ends every wait on the file descriptor with
        ``ClosedResourceError`` without closing it; receive() takes that as
        a wake-up, and a writer waiting to write waits again.
        """
        self._socket = RECEIVE
        if self._fd >= 0:
            trio.lowlevel.notify_closing(self._fd)


def is_cancellation(exc: BaseException | None) -> bool:
    """True for ``trio.Cancelled``, alone or inside an exception group."""
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(trio.Cancelled) is not None
