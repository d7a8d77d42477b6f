"""The server side of one HTTP/1.1 connection, on h11.

Theory of operation: :class:`ServerHTTPConnection` reads requests from a
trio stream with h11, enforcing a size limit on the request head, a cap on
the number of headers, a deadline for the whole head (slowloris), an idle
keep-alive timeout and a body size limit. It writes responses, and for a
WebSocket upgrade it writes the 101 and hands back the bytes h11 had already
read past the request, after which the stream belongs to the caller and the
h11 state is dropped (an upgraded connection keeps nothing of its HTTP past).

The first request head of a connection is read by hand when it is a plain
WebSocket upgrade (``_head.py``: a strict subset of what h11 accepts, with
the same results), and its ``101`` written by hand: h11, created on first
need, then never runs for that connection. Any other head, and everything
after a first request that did not upgrade, goes through h11 with the bytes
read so far, so it is answered exactly as h11 answers it. On a plain socket
that first head is read and the ``101`` written with non-blocking
``os.read``/``os.write`` on its descriptor (POSIX), waiting for the socket
only when it is not ready: ``receive_some``/``send_all`` each yield to the
scheduler even when they need not wait.

Bad input never raises anything but :class:`HTTPInputError` carrying the
status to answer (400, 408, 413, 431, ...), so the caller can answer it and
close this one connection. A response that cannot be written (a status out
of range, a header h11 refuses) raises ``ValueError`` before any byte of it
is sent; :meth:`ServerHTTPConnection.send_error` can still answer 500 then.
Once the peer is gone (a read or write failed) or the protocol switched,
:attr:`~ServerHTTPConnection.can_respond` is False: nothing more is written.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import h11
import trio

from ._head import (
    encode_headers,
    find_head_end,
    parse_request_head,
    reason_phrase,
    response_headers,
    writable,
    write_head,
)
from ._headers import Headers
from ._io import socket_fd, write_now

__all__ = ["HTTPInputError", "RawRequest", "ServerHTTPConnection"]

READ_SIZE = 64 * 1024

# Method names decoded once, shared by every request that uses them.
_METHODS = {
    m.encode("ascii"): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
}


_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_STATUS_101 = b"HTTP/1.1 101 Switching Protocols\r\n"


class HTTPInputError(Exception):
    """The client sent a request that cannot be served; answer ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class RawRequest:
    """A parsed request head."""

    method: str
    target: str
    version: str
    headers: Headers


class ServerHTTPConnection:
    """HTTP/1.1 request/response exchange over ``stream`` for a server."""

    __slots__ = (
        "_fd",
        "_first",
        "_h11",
        "_head",
        "_head_timeout",
        "_keepalive_timeout",
        "_lost",
        "_max_head_size",
        "_max_headers",
        "_rest",
        "_spoilt",
        "_switched",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_head_size: int = 16 * 1024,
        max_headers: int = 100,
        head_timeout: float = 10.0,
        keepalive_timeout: float = 75.0,
    ) -> None:
        self.stream = stream
        # Created on first need (see _conn): an upgrade read by the fast path never needs it.
        self._h11: h11.Connection | None = None
        # True once switch_protocols() handed the stream to another protocol.
        self._switched = False
        # The head of the request the fast path read (h11 has not seen it),
        # and the bytes read past it.
        self._head: bytes | None = None
        self._rest = b""
        # The socket's descriptor for direct reads and writes; -1 for other streams.
        self._fd = socket_fd(stream)
        self._max_head_size = max_head_size
        self._max_headers = max_headers
        self._head_timeout = head_timeout
        self._keepalive_timeout = keepalive_timeout
        self._first = True
        # The stream failed (peer gone): nothing more can be read or written.
        self._lost = False
        # h11 refused a response of ours before any of it was written: its
        # state is ERROR, but a hand-written 500 can still go out.
        self._spoilt = False

    @property
    def _conn(self) -> h11.Connection:
        """The h11 state, created on first use with every byte read so far.

        After a request read by the fast path, h11 reads that same head
        again, so it stands where it would have stood had it read it first.
        """
        conn = self._h11
        if conn is None:
            if self._switched:
                raise RuntimeError("the connection switched protocols: HTTP is over")
            conn = self._h11 = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._max_head_size
            )
            head, self._head = self._head, None
            data, self._rest = (head or b"") + self._rest, b""
            if data:
                conn.receive_data(data)
            if head is not None:
                event = conn.next_event()
                assert isinstance(event, h11.Request), event  # the fast path's subset
        return conn

    @property
    def lost(self) -> bool:
        """True once a read or write on the stream failed: the peer is gone."""
        return self._lost

    async def _read_into_h11(self) -> None:
        try:
            data = await self.stream.receive_some(READ_SIZE)
        except _STREAM_ERRORS:
            self._lost = True
            raise
        self._conn.receive_data(data)  # type: ignore[arg-type]

    async def _write(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except _STREAM_ERRORS:
            self._lost = True
            raise

    def _next_event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        try:
            return self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise HTTPInputError(exc.error_status_hint, str(exc)) from None

    async def next_request(self) -> RawRequest | None:
        """Wait for the next request head.

        Returns ``None`` when the client closed the connection or stayed idle
        past ``keepalive_timeout`` between requests (nothing to answer).
        Raises :class:`HTTPInputError`: 408 when a started head is not
        complete within ``head_timeout``, 431 for a head over ``max_head_size``
        or with more than ``max_headers`` headers, 400 for malformed input.
        """
        if self._switched:
            return None
        idle_deadline = trio.current_time() + self._keepalive_timeout
        if self._first:
            self._first = False
            return await self._first_request(idle_deadline)
        conn = self._conn
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return None
        conn.start_next_cycle()
        return await self._h11_request(conn, idle_deadline, None)

    async def _first_request(self, idle_deadline: float) -> RawRequest | None:
        """The first head: by the fast path if it is a plain upgrade, else by h11."""
        head_deadline: float | None = None
        buf = b""
        eof = False
        while True:
            if buf:
                if not buf.startswith(b"GET "[: len(buf)]):
                    break  # not for the fast path: h11 judges it now, as it would have
                end = find_head_end(buf)
                if end >= 0:
                    raw = self._fast_request(buf, end)
                    if raw is not None:
                        return raw
                    break
                if len(buf) > self._max_head_size:
                    break  # h11 answers 431
            deadline = head_deadline if head_deadline is not None else idle_deadline
            with trio.move_on_at(deadline):
                try:
                    data = await self._receive()
                except _STREAM_ERRORS:
                    return None
                if head_deadline is None:
                    head_deadline = trio.current_time() + self._head_timeout
                if not data:
                    eof = True
                    break
                buf += data
                continue
            if head_deadline is None:
                return None  # idle keep-alive connection: just close it
            raise HTTPInputError(408, "request head not received in time")
        conn = self._conn
        if buf:
            conn.receive_data(buf)
        if eof:
            conn.receive_data(b"")
        return await self._h11_request(conn, idle_deadline, head_deadline)

    def _fast_request(self, buf: bytes, end: int) -> RawRequest | None:
        """The request in ``buf[:end]`` if it is a plain upgrade; None for h11 to read."""
        head = buf[:end]
        if b"\nupgrade:" not in head.lower():
            return None  # plain HTTP: h11 reads it once, not after us
        parsed = parse_request_head(head)
        if parsed is None:
            return None
        target, raw = parsed
        self._check_size(target, raw)
        self._head = head
        self._rest = buf[end:]
        return RawRequest(
            method="GET",
            target=target.decode("ascii"),
            version="1.1",
            headers=Headers.from_raw(raw),
        )

    def _check_size(self, target: bytes, raw: list[tuple[bytes, bytes]]) -> None:
        if len(raw) > self._max_headers:
            raise HTTPInputError(431, "too many headers")
        # h11 only bounds a head that arrives in pieces; bound complete ones too.
        if len(target) + sum(len(k) + len(v) + 4 for k, v in raw) > self._max_head_size:
            raise HTTPInputError(431, "request head too large")

    async def _receive(self) -> bytes | bytearray:
        """One read; on a plain socket a direct one, waiting only when nothing is there."""
        fd = self._fd
        try:
            if fd < 0:
                return await self.stream.receive_some(READ_SIZE)
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                try:
                    return os.read(fd, READ_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
        except _STREAM_ERRORS:
            self._lost = True
            raise

    async def _h11_request(
        self, conn: h11.Connection, idle_deadline: float, head_deadline: float | None
    ) -> RawRequest | None:
        while True:
            event = self._next_event()
            if isinstance(event, h11.Request):
                break
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is not h11.NEED_DATA:
                raise HTTPInputError(400, f"unexpected {event!r}")
            if head_deadline is None and conn.trailing_data[0]:
                head_deadline = trio.current_time() + self._head_timeout
            deadline = head_deadline if head_deadline is not None else idle_deadline
            with trio.move_on_at(deadline):
                try:
                    await self._read_into_h11()
                except _STREAM_ERRORS:
                    return None
                if head_deadline is None:
                    head_deadline = trio.current_time() + self._head_timeout
                continue
            if head_deadline is None:
                return None  # idle keep-alive connection: just close it
            raise HTTPInputError(408, "request head not received in time")
        raw = event.headers.raw_items()
        if len(event.headers) > self._max_headers:
            raise HTTPInputError(431, "too many headers")
        self._check_size(event.target, raw)
        return RawRequest(
            method=_METHODS.get(event.method) or event.method.decode("ascii"),
            target=event.target.decode("ascii", "replace"),
            version="1.1" if event.http_version == b"1.1" else event.http_version.decode("ascii"),
            headers=Headers.from_raw(raw),
        )

    async def read_body(self, limit: int) -> bytes:
        """Read the request body.

        Raises :class:`HTTPInputError` 413 past ``limit`` bytes and 400 for a
        broken body, ``trio.TooSlowError`` after ``3 * head_timeout`` without
        a byte, and the stream's error (``trio.BrokenResourceError``, ...)
        when the peer is gone (:attr:`lost` is then True).
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if limit and size > limit:
                    raise HTTPInputError(413, f"body larger than {limit} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            elif event is h11.NEED_DATA:
                with trio.fail_after(self._head_timeout * 3):
                    await self._read_into_h11()
            else:
                raise HTTPInputError(400, "connection closed while reading the body")

    async def discard_body(self, limit: int) -> bool:
        """Skip an unread body so the connection can be reused; False if it cannot."""
        if self._conn.their_state is h11.DONE:
            return True
        try:
            with trio.move_on_after(self._head_timeout) as scope:
                await self.read_body(limit)
        except HTTPInputError:
            return False
        return not scope.cancelled_caught

    @property
    def keep_alive(self) -> bool:
        """True when another request may follow on this connection."""
        # Without h11 nothing was answered yet: not done.
        conn = self._h11
        return (
            conn is not None
            and not self._lost
            and conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
        )

    @property
    def can_respond(self) -> bool:
        """True while a response may still be started (not after the peer left)."""
        if self._switched or self._lost:
            return False
        conn = self._h11
        # Without h11, nothing was answered yet.
        return conn is None or conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def send_response(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool = False
    ) -> None:
        """Write a complete response; ``close`` adds ``Connection: close``.

        Raises ``ValueError`` for a response that cannot be written: a status
        outside 200-999, a header refused by :func:`check_header` (the message
        names it) or by h11 (e.g. a ``Content-Length`` that is not the body's
        length). Nothing is written then, and :meth:`send_error` can still
        answer. Raises ``RuntimeError`` when no response can be started (see
        :attr:`can_respond`), and the stream's error if the write fails.
        """
        if close:
            headers = [*headers, ("Connection", "close")]
        if not self.can_respond:
            raise RuntimeError("no response can be sent on this connection now")
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 999:
            raise ValueError(f"response status must be an int in 200-999, not {status!r}")
        wire = encode_headers(response_headers(headers, len(body)))
        conn = self._conn
        try:
            head = conn.send(
                h11.Response(status_code=status, headers=wire, reason=reason_phrase(status))
            )
            data = conn.send(h11.Data(data=body)) if body else b""
            end = conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            self._spoilt = True
            raise ValueError(f"response cannot be sent: {exc}") from None
        await self._write(b"".join((head or b"", data or b"", end or b"")))

    async def send_error(self, status: int, reason: str) -> None:
        """Best-effort plain-text error response that closes the connection.

        Sends nothing once the peer is gone or a response was started; after
        a response that :meth:`send_response` refused, writes the error by
        hand. Never raises.
        """
        body = f"{status}: {reason}".encode("ascii", "replace")
        if self._spoilt and not self._lost:
            self._spoilt = False
            head = (
                b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\nServer: trio_ws\r\n\r\n"
                % (status, reason_phrase(status), len(body))
            )
            with contextlib.suppress(*_STREAM_ERRORS):
                await self._write(head + body)
            return
        if not self.can_respond:
            return
        try:
            await self.send_response(
                status, [("Content-Type", "text/plain; charset=utf-8")], body, close=True
            )
        except (ValueError, *_STREAM_ERRORS):
            return

    async def switch_protocols(self, headers: list[tuple[str, str]]) -> bytes:
        """Write ``101 Switching Protocols``; return bytes already read past the request.

        After this, the stream carries the new protocol: the h11 state (its
        buffer, the request) is released, and the HTTP methods no longer apply
        (``keep_alive`` and ``can_respond`` are False, ``next_request()``
        returns None, the others raise ``RuntimeError``), even when the write
        fails. Raises :class:`HTTPInputError` (400) for an upgrade request
        with a body (nothing is written: the caller can answer it),
        ``ValueError`` for a header that cannot be written (nothing is
        written: :meth:`send_error` can answer), and the stream's error
        (``trio.BrokenResourceError``, ...) when the peer is gone.
        """
        if self._h11 is None and self._head is not None:
            # The fast path read the request (no body): write the 101 as h11 would.
            wire = encode_headers(response_headers(headers, None))
            if writable(wire):
                trailing, self._rest, self._head = self._rest, b"", None
                self._switched = True
                await self._write_now(write_head(_STATUS_101, wire))
                return trailing
        conn = self._conn
        # A request without a body ends at once: h11 then waits for our answer
        # to the upgrade. Bytes after a body would be fed to the new protocol.
        while conn.their_state is h11.SEND_BODY:
            event = self._next_event()
            if not isinstance(event, h11.EndOfMessage):
                raise HTTPInputError(400, "an upgrade request must not have a body")
        wire = encode_headers(response_headers(headers, None))
        try:
            data = conn.send(
                h11.InformationalResponse(
                    status_code=101, headers=wire, reason=b"Switching Protocols"
                )
            )
        except h11.LocalProtocolError as exc:
            self._spoilt = True
            raise ValueError(f"101 response cannot be sent: {exc}") from None
        trailing = bytes(conn.trailing_data[0])
        self._h11 = None
        self._switched = True
        await self._write(data or b"")
        return trailing

    async def _write_now(self, data: bytes) -> None:
        try:
            await write_now(self.stream, self._fd, data)
        except _STREAM_ERRORS:
            self._lost = True
            raise
