"""The application's side of the inbox: what ``receive()`` takes, and when it waits.

Theory of operation
-------------------
The reader appends messages to ``_inbox`` (a deque, at most ``max_queue``
plus one read's worth); ``receive()`` takes them in order. Taking a message
may do one more thing:

* when the inbox falls to a quarter of ``max_queue``, the paused reader is
  woken (water marks, so it does not stop and start on every message);
* when it empties, the next ``send_*`` may be written at once (``_reply_credit``,
  see ``_outbox.py``);
* when the message is the peer's close (or a protocol error) that waited
  behind data, it is acted on now (see ``_reader.py``).

With the inbox empty, ``receive()`` answers from the state or waits:
parked until the reader brings input, or on the socket itself when it may
take the socket (see ``_reader.py``). Once the connection is not ``OPEN``
the answer is CLOSED, except once: the ``receive()`` that was in progress
when ``close()`` began in another task returns CLOSING (``_closing_due``,
as aiohttp on both sides; a call made while ``close()`` waits gets CLOSED).

**Checkpoints.** Every return from ``receive()`` is a checkpoint except
taking a queued message, the fast path: a cancel point that yields to the
scheduler only once every ``_YIELD_EVERY`` (32) messages, so one busy
connection cannot starve the others while an echo loop still queues a
burst of replies for one write.

Never: lose a message to cancellation (a message leaves the inbox only on
a return), or return without a checkpoint except on the fast path.
"""

from __future__ import annotations

from typing import Any, Final

import trio

from .._models import WS_CLOSED_MESSAGE, WS_CLOSING_MESSAGE, WSMessage
from ._core import OPEN, READER_WAITS
from ._reader import Reader

_YIELD_EVERY: Final = 32  # receive() yields at least once per this many queued messages
_CLOSED_ACCESS_LIMIT: Final = 5  # the server's RuntimeError after closed, as aiohttp


class Inbox(Reader):
    """Taking messages for ``receive()`` (see the module docstring)."""

    __slots__ = ("_closed_reads", "_fast_receives", "_receiving")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._receiving = False  # a receive() is in progress
        self._fast_receives = 0  # messages taken since receive() last yielded
        self._closed_reads = 0  # CLOSED answers given by the server

    def _run_deferred(self) -> None:
        """Act on a peer's close (or protocol error) that waited behind queued data."""
        msg = self._deferred
        if msg is not None:
            self._deferred = None
            self._act_on(msg)

    async def _next(self) -> WSMessage:
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while True:
            if inbox:
                self._fast_receives += 1
                if self._fast_receives >= _YIELD_EVERY:
                    self._fast_receives = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    if not inbox:
                        continue
                msg = inbox.popleft()
                if msg is self._deferred:
                    self._run_deferred()
                elif len(inbox) <= self._max_queue // 4:
                    self._reader_lot.unpark()
                    if not inbox:
                        self._reply_credit = True
                return msg
            if self._state is not OPEN:
                await trio.lowlevel.checkpoint()
                if self._closing_due:
                    # This call (or the one it interrupted) was in progress
                    # when close() began in another task.
                    self._closing_due = False
                    return WS_CLOSING_MESSAGE
                # Our close is out, the peer closed, or the connection is
                # over: no more input.
                if not self._client:
                    self._closed_reads += 1
                    if self._closed_reads >= _CLOSED_ACCESS_LIMIT:
                        raise RuntimeError("WebSocket connection is closed.")
                return WS_CLOSED_MESSAGE
            self._fast_receives = 0
            if self._fd >= 0 and self._socket != READER_WAITS:
                await self._read_in_receive()
            else:
                await self._getter.park()
