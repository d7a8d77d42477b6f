"""The server side of one HTTP/1.1 connection, on h11.

Theory of operation: :class:`ServerHTTPConnection` reads requests from a
trio stream with h11, enforcing a size limit on the request head, a cap on
the number of headers, a deadline for the whole head (slowloris), an idle
keep-alive timeout and a body size limit. It writes responses, and for a
WebSocket upgrade it writes the 101 and hands back the bytes h11 had already
read past the request, after which the stream belongs to the caller and the
h11 state is dropped (an upgraded connection keeps nothing of its HTTP past).

Bad input never raises anything but :class:`HTTPInputError` carrying the
status to answer (400, 408, 413, 431, ...), so the caller can answer it and
close this one connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

import h11
import trio

from ._headers import Headers

__all__ = ["HTTPInputError", "RawRequest", "ServerHTTPConnection"]

READ_SIZE = 64 * 1024

# Method names decoded once, shared by every request that uses them.
_METHODS = {
    m.encode("ascii"): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
}


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


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
        "_first",
        "_h11",
        "_head_timeout",
        "_keepalive_timeout",
        "_max_head_size",
        "_max_headers",
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
        # None once switch_protocols() handed the stream to another protocol.
        self._h11: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=max_head_size
        )
        self._max_head_size = max_head_size
        self._max_headers = max_headers
        self._head_timeout = head_timeout
        self._keepalive_timeout = keepalive_timeout
        self._first = True

    @property
    def _conn(self) -> h11.Connection:
        conn = self._h11
        if conn is None:
            raise RuntimeError("the connection switched protocols: HTTP is over")
        return conn

    async def _read_into_h11(self) -> None:
        data = await self.stream.receive_some(READ_SIZE)
        self._conn.receive_data(data)  # type: ignore[arg-type]

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
        conn = self._h11
        if conn is None:
            return None
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        elif not self._first:
            return None
        self._first = False
        idle_deadline = trio.current_time() + self._keepalive_timeout
        head_deadline: float | None = None
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
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return None
                if head_deadline is None:
                    head_deadline = trio.current_time() + self._head_timeout
                continue
            if head_deadline is None:
                return None  # idle keep-alive connection: just close it
            raise HTTPInputError(408, "request head not received in time")
        if len(event.headers) > self._max_headers:
            raise HTTPInputError(431, "too many headers")
        raw = event.headers.raw_items()
        # h11 only bounds a head that arrives in pieces; bound complete ones too.
        if len(event.target) + sum(len(k) + len(v) + 4 for k, v in raw) > self._max_head_size:
            raise HTTPInputError(431, "request head too large")
        return RawRequest(
            method=_METHODS.get(event.method) or event.method.decode("ascii"),
            target=event.target.decode("ascii", "replace"),
            version="1.1" if event.http_version == b"1.1" else event.http_version.decode("ascii"),
            headers=Headers.from_raw(raw),
        )

    async def read_body(self, limit: int) -> bytes:
        """Read the request body; raises :class:`HTTPInputError` 413 past ``limit`` bytes."""
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

    def _header_list(
        self, headers: list[tuple[str, str]], body_len: int | None
    ) -> list[tuple[str, str]]:
        names = {k.lower() for k, _ in headers}
        out = list(headers)
        if "date" not in names:
            out.append(("Date", formatdate(usegmt=True)))
        if "server" not in names:
            out.append(("Server", "trio_ws"))
        if body_len is not None and "content-length" not in names:
            out.append(("Content-Length", str(body_len)))
        return out

    @property
    def keep_alive(self) -> bool:
        """True when another request may follow on this connection."""
        conn = self._h11
        return conn is not None and conn.our_state is h11.DONE and conn.their_state is h11.DONE

    @property
    def can_respond(self) -> bool:
        """True while a response may still be started."""
        conn = self._h11
        return conn is not None and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def send_response(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool = False
    ) -> None:
        """Write a complete response; ``close`` adds ``Connection: close``."""
        if close:
            headers = [*headers, ("Connection", "close")]
        conn = self._conn
        head = conn.send(
            h11.Response(
                status_code=status,
                headers=self._header_list(headers, len(body)),
                reason=_phrase(status),
            )
        )
        data = conn.send(h11.Data(data=body)) if body else b""
        end = conn.send(h11.EndOfMessage())
        await self.stream.send_all(b"".join((head or b"", data or b"", end or b"")))

    async def send_error(self, status: int, reason: str) -> None:
        """Best-effort plain-text error response that closes the connection."""
        if not self.can_respond:
            return
        body = f"{status}: {reason}".encode()
        try:
            await self.send_response(
                status, [("Content-Type", "text/plain; charset=utf-8")], body, close=True
            )
        except (
            h11.LocalProtocolError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
        ):
            return

    async def switch_protocols(self, headers: list[tuple[str, str]]) -> bytes:
        """Write ``101 Switching Protocols``; return bytes already read past the request.

        After this, the stream carries the new protocol: the h11 state (its
        buffer, the request) is released, and the HTTP methods no longer apply
        (``keep_alive`` and ``can_respond`` are False, ``next_request()``
        returns None, the others raise ``RuntimeError``).
        """
        conn = self._conn
        data = conn.send(
            h11.InformationalResponse(
                status_code=101,
                headers=self._header_list(headers, None),
                reason=b"Switching Protocols",
            )
        )
        trailing = bytes(conn.trailing_data[0])
        self._h11 = None
        await self.stream.send_all(data or b"")
        return trailing
