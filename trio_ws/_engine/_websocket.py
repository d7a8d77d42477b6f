"""One WebSocket over a trio stream: the public API of the engine under client and server.

Theory of operation
-------------------
:class:`WebSocketEngine` owns a started WebSocket: a :class:`trio.abc.Stream`
whose handshake is done, and a :class:`~trio_ws._protocol._driver.FrameDriver`.
It knows no HTTP. The client's ``ClientWebSocketResponse`` and the server's
``WebSocketResponse`` are thin subclasses that differ only where aiohttp's two
classes differ (the ``_client`` flag).

This module is the thin public face; each job lives in its own module, one
class each, stacked into this one (see ``_core.py`` for the map): the state
and its transitions (``_state.py``, ``_core.py``), the outgoing buffer and
writer (``_outbox.py``), reading and frame handling (``_reader.py``), the
inbox as ``receive()`` sees it (``_inbox.py``), and the tasks' lifecycle
with the heartbeat (``_lifecycle.py``).

The contract with the owners (``_client`` and ``web``): ``start_in(nursery,
stream, ...)`` after the handshake (or its two halves, ``set_up`` before the
handshake's last write and ``launch_in`` after it, with ``abandon`` if that
write fails: the server's ``prepare()``), and ``owner_exit(exc)`` when the
owning scope ends; ``_done`` is set once every task has ended. These are
internal names (hidden from the API docs), documented in ``_lifecycle.py``.

Checkpoints: every awaited call is a trio checkpoint (it can be cancelled
and lets other tasks run), with two bounded fast paths that are cancel
points but skip the scheduler: ``receive()`` taking a queued message (it
yields at least once every 32 messages), and ``send_*`` while at most
``write_limit`` bytes are queued (it yields once they are over). A loop
that echoes a burst of messages therefore queues all replies and the writer
sends them together when the loop next waits. Calls that fail for a
programming error (``TypeError``, ``RuntimeError`` before ``prepare()`` or
for a second concurrent ``receive()``) raise before any checkpoint.

Never: block in the reader on the application, spawn a task per message, or
let a background exception escape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from .._exceptions import WSMessageTypeError, WSTimeoutError
from .._models import WSCloseCode, WSMessage, WSMsgType
from ._core import (
    CLOSE_SENT,
    CLOSED,
    DEFAULT_MAX_MSG_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_WRITE_LIMIT,
    OPEN,
    READER,
    RECEIVE,
)
from ._extra_info import extra_info
from ._lifecycle import Lifecycle
from ._outbox import as_bytes

__all__ = ["DEFAULT_MAX_MSG_SIZE", "WebSocketEngine"]

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_STOP_TYPES = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})
_FRAME_OPCODES = frozenset(
    int(t)
    for t in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG, WSMsgType.CLOSE)
)


class WebSocketEngine(Lifecycle):
    """The WebSocket API shared by ``ClientWebSocketResponse`` and ``WebSocketResponse``.

    Not instantiated directly: use ``ClientSession.ws_connect`` or
    ``web.WebSocketResponse``.
    """

    __slots__ = ()

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
        super().__init__(
            timeout=timeout,
            receive_timeout=receive_timeout,
            autoclose=autoclose,
            autoping=autoping,
            heartbeat=heartbeat,
            max_msg_size=max_msg_size,
            max_queue=max_queue,
            write_limit=write_limit,
            decode_text=decode_text,
        )

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """True once our close frame was sent (by ``close()``, or in answer to the
        peer's with ``autoclose``) or the connection ended otherwise."""
        state = self._state
        return state is CLOSE_SENT or state is CLOSED

    @property
    def close_code(self) -> int | None:
        """The close code: ``None`` while open; ours while our close waits for
        the peer's answer; the peer's code once the close handshake is done
        (also when ``close()`` answered the peer's close with
        ``autoclose=False``); ours when the server's ``close()`` ended the
        connection without waiting (a ``receive()`` was in progress, as
        aiohttp); the error's code after a protocol error; 1006 when the connection
        ended without the handshake (lost, heartbeat, close timeout or
        cancellation, a peer's close left unanswered), and on the client
        after a receive timeout too (aiohttp's rule; the connection stays
        usable then)."""
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
        """Transport details by name, as aiohttp's ``get_extra_info``; else ``default``.

        ``"peername"`` and ``"sockname"`` (the socket's addresses),
        ``"socket"`` (the ``trio.socket`` object), and over TLS
        ``"sslcontext"`` (the ``ssl.SSLContext``), ``"ssl_object"`` (the
        ``ssl.SSLObject``), ``"peercert"`` (the peer's certificate as
        ``ssl.SSLObject.getpeercert()`` returns it), ``"cipher"`` and
        ``"compression"``. Every name gives ``default`` before the
        connection starts, once it is over (``closed`` and no longer
        waiting for the peer's close frame: after ``close()`` returned, or
        a CLOSE or CLOSED from ``receive()``), and for a TLS name on a plain
        connection. Raises nothing.
        """
        stream = self._stream
        if stream is None or self._state is CLOSED:
            return default
        return extra_info(stream, name, default)

    # ------------------------------------------------------------------- send

    async def send_str(self, data: str, compress: int | None = None) -> None:
        """Send ``data`` as one TEXT message.

        ``compress=0`` sends this message uncompressed even when
        permessage-deflate was negotiated; any other value uses the negotiated
        settings. Returns once the frame is queued; waits first only while
        more than ``write_limit`` bytes are queued, so a peer that does not
        read slows the sender instead of growing memory. A cancel point that
        yields to the scheduler only when it waits (see the module
        docstring). If cancelled, nothing was sent.

        Raises ``TypeError`` if ``data`` is not ``str``,
        :class:`~trio_ws.ClientConnectionResetError` once our close frame was
        sent or the connection ended (also to a send waiting for buffer
        space at that moment), and
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

    async def send_json_bytes(
        self,
        data: Any,
        compress: int | None = None,
        *,
        dumps: Callable[[Any], bytes | bytearray | memoryview],
    ) -> None:
        """Send ``dumps(data)`` as a BINARY message, for encoders that return
        bytes (such as ``orjson.dumps``); as :meth:`send_bytes` otherwise.

        Raises what ``dumps`` raises, and as :meth:`send_bytes` (``TypeError``
        when ``dumps`` does not return bytes).
        """
        await self.send_bytes(dumps(data), compress=compress)

    async def send_frame(
        self,
        message: bytes | bytearray | memoryview | str,
        opcode: WSMsgType | int,
        compress: int | None = None,
    ) -> None:
        """Send one frame of type ``opcode`` with payload ``message``.

        TEXT and BINARY send one whole message as :meth:`send_str` and
        :meth:`send_bytes` do (``compress`` as there). A TEXT payload may be
        UTF-8 bytes (say from ``orjson.dumps``); it is checked before it
        is sent. PING and PONG are sent as :meth:`ping` and :meth:`pong`
        (``compress`` ignored). CLOSE sends our close frame with ``message``
        as its payload (empty, or a 2-byte code and a UTF-8 reason) and,
        unlike :meth:`close`, does not wait for the peer's answer: the
        connection is closing (``closed`` is True) and ends when the answer
        arrives or the owner's scope ends.

        Raises ``RuntimeError`` on a server response before ``prepare()``,
        ``ValueError`` for another opcode, a TEXT payload that is not UTF-8,
        a bad CLOSE payload or a control payload over 125 bytes,
        ``TypeError`` for a payload that is neither bytes-like nor ``str``,
        and :class:`~trio_ws.ClientConnectionResetError` once our close
        frame was sent or the connection ended.
        """
        if self._driver is None:
            raise RuntimeError("Call .prepare() first")
        if not isinstance(message, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"message must be bytes-like or str ({type(message)!r})")
        op = WSMsgType(opcode) if opcode in _FRAME_OPCODES else None
        if op is _TEXT:
            text = message if isinstance(message, str) else bytes(message).decode()
            await self._send_message(text, compress)
        elif op is _BINARY:
            data = message.encode() if isinstance(message, str) else message
            await self._send_message(data, compress)
        elif op is WSMsgType.PING or op is WSMsgType.PONG:
            await self._send_control(op is WSMsgType.PONG, message)
        elif op is WSMsgType.CLOSE:
            await self._send_close_frame(as_bytes(message))
        else:
            raise ValueError(f"send_frame cannot send opcode {opcode!r}")

    async def _send_close_frame(self, payload: bytes) -> None:
        code: int | None = None
        reason = ""
        if payload:
            if len(payload) < 2:
                raise ValueError("a CLOSE payload is empty or starts with a 2-byte code")
            if len(payload) > 125:
                raise ValueError("a CLOSE payload is at most 125 bytes")
            code = int.from_bytes(payload[:2], "big")
            reason = payload[2:].decode()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._queue_close(code, reason):
            await self._refuse_send()
        # As ping(): the frame is queued; yield so the writer sends it now.
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def ping(self, message: bytes = b"") -> None:
        """Send a PING frame with ``message`` (at most 125 bytes); a checkpoint.

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
        ``timeout`` seconds for our close frame to be written and the peer's
        to arrive; past that (or on a write failure) the connection is
        dropped, ``close_code`` is 1006 and ``exception()`` tells why
        (:class:`~trio_ws.WSTimeoutError`, or the write's
        :class:`~trio_ws.ClientConnectionResetError`), and it still returns
        ``True``. After it returns, ``close_code`` is the peer's answer and
        every task of the connection has ended.

        A ``receive()`` in progress in another task returns CLOSING, then
        CLOSED on later calls (as aiohttp); a ``receive()`` called while
        ``close()`` waits returns CLOSED. On the server, as in aiohttp,
        a ``receive()`` in progress also means the connection ends as soon
        as our close frame is written, without waiting for the peer's answer
        (``close_code`` is then the code sent). With ``autoclose=False``,
        calling it after receiving the peer's CLOSE answers that close, and
        ``close_code`` stays the peer's code once that answer is written (a
        peer that stops reading gets the timeout above: 1006). If
        cancelled, the connection is dropped, ``close_code`` becomes 1006
        (unless the close handshake was complete on the wire), and
        ``Cancelled`` propagates. Raises ``RuntimeError`` on a server response before
        ``prepare()``.
        """
        return await self._close(code, message)

    # ---------------------------------------------------------------- receive

    async def receive(self, timeout: float | None = None) -> WSMessage:
        """Return the next message.

        TEXT, BINARY (and PING/PONG when ``autoping=False``) arrive as sent
        (TEXT data is ``str``, or the UTF-8 ``bytes`` with ``decode_text=False``). When
        the peer closes, one CLOSE message ``(CLOSE, code, reason)`` is
        returned (with ``autoclose`` the reply was already sent), then CLOSED on
        every later call (the server raises ``RuntimeError`` on the 5th call
        after close, as aiohttp does). A protocol error returns one
        ``(ERROR, WebSocketError, None)`` (the close frame with its code was
        sent), then CLOSED. A call in progress when ``close()`` begins in
        another task returns CLOSING (see :meth:`close`). A heartbeat timeout returns one
        ``(ERROR, timeout error, None)``, then CLOSED; messages queued before
        the connection ended are returned first (but not a peer's close that
        was never answered).

        A checkpoint, except when it takes an already queued message: that
        fast path is a cancel point that yields to the scheduler once every
        32 messages.

        ``timeout`` (or the ``receive_timeout`` given at creation; 0 or None
        means none) raises :class:`~trio_ws.WSTimeoutError`, a ``TimeoutError`` and
        ``trio.TooSlowError``, while the connection is open; the connection
        stays usable (the client also sets ``close_code`` to 1006, as
        aiohttp). Once the connection is closing or over, the answer is
        returned instead (CLOSED, say), even if the deadline passed, and
        ``close_code`` is left alone. Cancelling ``receive()``
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
            if self._state is not OPEN:
                # The deadline fell on the checkpoint of an answer from a
                # connection already over (or ending): that is the answer,
                # not a timeout, and close_code stays what the end made it.
                return await self._next()
            if self._client:
                # aiohttp's client rule, the one close_code set outside a
                # transition: the connection stays open and usable.
                self._close_code = WSCloseCode.ABNORMAL_CLOSURE
            raise WSTimeoutError(f"No message received within {limit} seconds")
        finally:
            self._receiving = False
            if self._socket == RECEIVE:
                # The reader takes the socket back while the application is elsewhere.
                self._socket = READER
                self._reader_lot.unpark()

    async def receive_str(self, *, timeout: float | None = None) -> str:
        """Receive a TEXT message and return its text.

        With ``decode_text=False`` the text is returned as UTF-8 ``bytes``
        (already validated); the annotation stays ``str`` so that code
        written for the default type-checks. Raises
        :class:`~trio_ws.WSMessageTypeError` (a ``TypeError``) for any
        other message, CLOSE and CLOSED included.
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
        self, *, loads: Callable[[Any], Any] = json.loads, timeout: float | None = None
    ) -> Any:
        """Receive a TEXT message and return ``loads(text)``.

        With ``decode_text=False``, ``loads`` gets the UTF-8 ``bytes`` (as
        ``orjson.loads`` takes them, without a decode). Raises as
        :meth:`receive_str`, and what ``loads`` raises for bad JSON.
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
