"""The one module that parses and encodes WebSocket frames: bytes in, messages out.

Theory of operation: :class:`FrameDriver` parses frames itself (RFC 6455
section 5: header with ``struct``, unmasking with ``bytes.translate``) and
turns them into :class:`~trio_ws.WSMessage` values, joining fragments and
validating UTF-8. wsproto supplies the rules' vocabulary (opcodes, close
reasons) and is the oracle of the differential tests (``tests/test_fuzz*.py``).
When permessage-deflate was negotiated, the RSV1 bit of a message's first
frame marks the whole message compressed (RFC 7692 section 6): the payload of
each of its frames goes through
:meth:`~trio_ws._protocol._deflate.BoundedDeflate.inflate` and its end through
``end_message``. Control frames, which may arrive between a message's
fragments, never touch that state. wsproto's decoder copied every payload
about ten times through its buffer, masker and extension chain; this one
copies a payload once from the read, twice when it must be unmasked.

Invariants:
* A data message never holds more than ``max_size`` bytes in memory: the
  declared length of an uncompressed frame is checked against the running
  total *before* its payload is buffered, and inflated bytes are bounded by
  :class:`~trio_ws._protocol._deflate.BoundedDeflate`.
* A frame that is whole in the buffer becomes a message with one copy (plus
  one unmasking pass). A frame that arrives in pieces is processed as its
  bytes arrive (unmasked, inflated, UTF-8 checked), so invalid UTF-8 or a bad
  deflate stream fails fast, and its pieces are joined once at the end.
* :meth:`FrameDriver.feed` appends every message that came before a protocol
  error to its output list before it raises, so nothing valid is lost.
* After an error or a received close frame the driver parses nothing more.

Never: touch sockets, trio or clocks; block; copy a payload it does not need to.
"""

from __future__ import annotations

import codecs
import os
import struct
from collections.abc import Sequence

from wsproto.frame_protocol import (
    LOCAL_ONLY_CLOSE_REASONS,
    MAX_CLOSE_REASON,
    MAX_PROTOCOL_CLOSE_REASON,
    MIN_CLOSE_REASON,
    CloseReason,
    Opcode,
)

from .._exceptions import WebSocketError
from .._models import WSMessage, WSMsgType
from ._deflate import BoundedDeflate
from ._mask import mask, masked_frame

__all__ = ["FrameDriver"]

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_PING = WSMsgType.PING
_PONG = WSMsgType.PONG
_CLOSE = WSMsgType.CLOSE

_PROTOCOL_ERROR = 1002
_INVALID_DATA = 1007
_TOO_BIG = 1009
_KNOWN_CODES = frozenset(int(c) for c in CloseReason)
_LOCAL_ONLY = frozenset(int(c) for c in LOCAL_ONLY_CLOSE_REASONS)
_VALID_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_u64 = struct.Struct("!Q").unpack_from
_new_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class FrameDriver:
    """Sans-I/O WebSocket framing for one connection, for either role.

    ``client`` selects masking rules. ``extensions`` are the negotiated ones
    (one :class:`~trio_ws._protocol._deflate.BoundedDeflate` at most).
    ``max_size`` caps one message (0: no cap).
    """

    __slots__ = (
        "_buf",
        "_compressed",
        "_deflate",
        "_fin",
        "_key",
        "_left",
        "_msg_op",
        "_need",
        "_parts",
        "_seen",
        "_total",
        "_utf8",
        "client",
        "closed",
        "max_size",
    )

    def __init__(
        self,
        *,
        client: bool,
        extensions: Sequence[BoundedDeflate] | None = None,
        max_size: int = 0,
    ) -> None:
        if extensions and len(extensions) > 1:
            raise ValueError("at most one extension (permessage-deflate) is supported")
        self.client = client
        self.max_size = max_size
        self.closed = False
        self._deflate = extensions[0] if extensions else None
        self._buf = bytearray()  # unparsed bytes, from a frame's first byte
        self._need = 0  # do not parse again before the buffer holds this many bytes
        # The frame being streamed (TEXT or compressed): payload bytes still
        # to come (-1: none), its FIN bit, mask key, bytes of it seen so far.
        self._left = -1
        self._fin = False
        self._key: bytes | None = None
        self._seen = 0
        # The message being assembled: opcode (0: none), parts, size so far.
        self._msg_op = 0
        self._parts: list[str | bytes] = []
        self._total = 0
        self._compressed = False
        self._utf8: codecs.IncrementalDecoder | None = None

    # ------------------------------------------------------------- inbound

    @property
    def payload_due(self) -> int:
        """Payload bytes of the frame in progress not received yet (0 if none)."""
        return self._left if self._left > 0 else 0

    def feed(self, data: bytes | bytearray, out: list[WSMessage]) -> None:
        """Parse ``data`` and append every complete message and control frame to ``out``.

        PING, PONG and CLOSE become ``WSMessage`` values of those types (CLOSE
        carries ``(code, reason)``, code 0 when the frame had none). After a
        CLOSE nothing more is parsed. Raises :class:`WebSocketError` with the
        close code to send (1002, 1007, 1009) on any protocol violation.
        """
        if self.closed:
            return
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = buf
            self._buf = bytearray()
        try:
            pos = self._parse(data, out)
        except WebSocketError:
            self.closed = True
            raise
        if pos < len(data) and not self.closed:
            self._buf = bytearray(memoryview(data)[pos:])

    def _parse(self, data: bytes | bytearray, out: list[WSMessage]) -> int:
        """Parse frames from ``data``; return the offset of the first unparsed byte."""
        view = memoryview(data)
        end = len(data)
        pos = 0
        append = out.append
        client = self.client
        max_size = self.max_size
        deflate = self._deflate
        self._need = 0
        while True:
            if self._left >= 0:
                # Streaming the payload of a frame that arrives in pieces.
                take = min(self._left, end - pos)
                if take or not self._left:
                    key = self._key
                    if key is not None:
                        shift = self._seen & 3
                        chunk = mask(key[shift:] + key[:shift], view[pos : pos + take])
                    elif take == end and type(data) is bytes:
                        chunk = data  # the whole read is payload: no copy
                    else:
                        chunk = bytes(view[pos : pos + take])
                    pos += take
                    self._left -= take
                    self._seen += take
                    self._payload(chunk, out)
                if self._left >= 0:
                    return pos
                continue
            if end - pos < 2:
                self._need = 2
                return pos
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            length = b1 & 0x7F
            if opcode not in _VALID_OPCODES:
                raise WebSocketError(_PROTOCOL_ERROR, f"Invalid opcode {opcode:#x}")
            if opcode & 0x8:
                if not fin:
                    raise WebSocketError(
                        _PROTOCOL_ERROR, "Invalid attempt to fragment control frame"
                    )
                if length > 125:
                    raise WebSocketError(_PROTOCOL_ERROR, "Control frame with payload len > 125")
            extra = 2 if length == 126 else 8 if length == 127 else 0
            if end - pos < 2 + extra:
                self._need = 2 + extra
                return pos
            if length == 126:
                (length,) = _unpack_u16(data, pos + 2)
                if length <= 125:
                    raise WebSocketError(
                        _PROTOCOL_ERROR, "Payload length used 2 bytes when 1 would have sufficed"
                    )
            elif length == 127:
                (length,) = _unpack_u64(data, pos + 2)
                if length <= 0xFFFF:
                    raise WebSocketError(
                        _PROTOCOL_ERROR, "Payload length used 8 bytes when 2 would have sufficed"
                    )
                if length >> 63:
                    raise WebSocketError(_PROTOCOL_ERROR, "8-byte payload length with non-zero MSB")
            rsv = b0 & 0x70
            if rsv:
                # Only RSV1, only with permessage-deflate, only on the first
                # frame of a data message (RFC 7692 section 6).
                if rsv != 0x40 or deflate is None:
                    raise WebSocketError(_PROTOCOL_ERROR, "Reserved bit set unexpectedly")
                if opcode & 0x8:
                    raise WebSocketError(_PROTOCOL_ERROR, "RSV1 set on a control frame")
                if not opcode:
                    raise WebSocketError(_PROTOCOL_ERROR, "RSV1 set on a continuation frame")
            masked = b1 & 0x80
            if masked:
                if client:
                    raise WebSocketError(_PROTOCOL_ERROR, "client received unexpected masked frame")
            elif not client:
                raise WebSocketError(_PROTOCOL_ERROR, "server received unexpected unmasked frame")
            head = 2 + extra + (4 if masked else 0)
            if end - pos < head:
                self._need = head
                return pos
            start = pos + head
            stop = start + length
            if opcode & 0x8:
                if end < stop:
                    self._need = stop - pos
                    return pos
                payload = _payload(view, start, stop, masked)
                pos = stop
                if opcode == 0x9:
                    append(WSMessage(_PING, payload, ""))
                elif opcode == 0xA:
                    append(WSMessage(_PONG, payload, ""))
                else:
                    self.closed = True
                    append(_parse_close(payload))
                    return pos
                continue
            # A data frame.
            if opcode:
                if self._msg_op:
                    raise WebSocketError(
                        _PROTOCOL_ERROR, f"expected CONTINUATION, got {Opcode(opcode)!r}"
                    )
                total = 0
                # RSV1 on a message's first frame (checked above) marks the
                # whole message compressed.
                compressed = bool(rsv)
            elif not self._msg_op:
                raise WebSocketError(_PROTOCOL_ERROR, "unexpected CONTINUATION")
            else:
                total = self._total
                compressed = self._compressed
            if max_size and not compressed and total + length > max_size:
                raise WebSocketError(_TOO_BIG, f"Message size exceeds limit {max_size}")
            if fin and opcode and end >= stop:
                # Hot path: a whole one-frame message.
                payload = _payload(view, start, stop, masked)
                pos = stop
                if compressed:
                    # One bounded zlib call for the payload and its tail
                    # (1009 past the inflater's max_size, 1007 when invalid).
                    assert deflate is not None
                    payload = deflate.inflate_message(payload)
                    if max_size and len(payload) > max_size:
                        raise WebSocketError(_TOO_BIG, f"Message size exceeds limit {max_size}")
                if opcode == 0x1:
                    try:
                        append(WSMessage(_TEXT, payload.decode(), ""))
                    except UnicodeDecodeError as exc:
                        raise WebSocketError(_INVALID_DATA, str(exc)) from None
                else:
                    append(WSMessage(_BINARY, payload, ""))
                continue
            # General path: stream this frame through _payload().
            if opcode:
                self._msg_op = opcode
                self._total = 0
                self._compressed = compressed
                self._utf8 = _new_utf8_decoder() if opcode == 0x1 else None
            self._fin = bool(fin)
            self._key = bytes(view[start - 4 : start]) if masked else None
            self._seen = 0
            self._left = length
            pos = start

    def _payload(self, chunk: bytes, out: list[WSMessage]) -> None:
        """Take the next (unmasked) piece of a streamed frame's payload."""
        done = self._left == 0
        if self._compressed:
            deflate = self._deflate
            assert deflate is not None
            chunk = deflate.inflate(chunk)
            if done and self._fin:
                chunk += deflate.end_message()
        self._total += len(chunk)
        if self.max_size and self._total > self.max_size:
            raise WebSocketError(_TOO_BIG, f"Message size exceeds limit {self.max_size}")
        last = done and self._fin
        if self._utf8 is not None:
            try:
                text = self._utf8.decode(chunk, last)
            except UnicodeDecodeError as exc:
                raise WebSocketError(_INVALID_DATA, str(exc)) from None
            if text:
                self._parts.append(text)
        elif chunk:
            self._parts.append(chunk)
        if done:
            self._left = -1
            if last:
                out.append(self._join())

    def _join(self) -> WSMessage:
        parts = self._parts
        if self._msg_op == 0x1:
            msg = WSMessage(_TEXT, "".join(parts), "")  # type: ignore[arg-type]
        else:
            msg = WSMessage(_BINARY, b"".join(parts), "")  # type: ignore[arg-type]
        self._parts = []
        self._msg_op = 0
        self._utf8 = None
        return msg

    # ------------------------------------------------------------ outbound

    def encode(self, data: str | bytes | bytearray | memoryview) -> bytes | bytearray:
        """The frame bytes for one complete TEXT (``str``) or BINARY message."""
        first = 0x81 if isinstance(data, str) else 0x82
        payload = data.encode() if isinstance(data, str) else data
        deflate = self._deflate
        if deflate is not None:
            if deflate.skip_next:
                deflate.skip_next = False
            else:
                return self._frame(first | 0x40, deflate.compress(payload))
        return self._frame(first, payload)

    def encode_ping(self, payload: bytes) -> bytes | bytearray:
        """The frame bytes for a PING; raises ValueError past 125 bytes."""
        return self._frame(0x89, _control_payload(payload))

    def encode_pong(self, payload: bytes) -> bytes | bytearray:
        """The frame bytes for a PONG; raises ValueError past 125 bytes."""
        return self._frame(0x8A, _control_payload(payload))

    def encode_close(self, code: int | None, reason: str) -> bytes | bytearray:
        """The frame bytes for a CLOSE; ``code`` None sends an empty payload.

        The reason is cut to fit the 125-byte control frame at a character
        boundary.
        """
        if code is None:
            return self._frame(0x88, b"")
        raw = reason.encode()
        if len(raw) > 123:
            raw = raw[:123].decode(errors="ignore").encode()
        return self._frame(0x88, _pack_code(code) + raw)

    def _frame(self, first: int, payload: bytes | bytearray | memoryview) -> bytes | bytearray:
        # Our own header writer: wsproto's copies the payload three times; this
        # copies it once (twice when a client masks it).
        n = len(payload)
        if self.client:
            if n < 126:
                header = _pack_small(first, 0x80 | n)
            elif n < 65536:
                header = _pack_medium(first, 0xFE, n)
            else:
                header = _pack_large(first, 0xFF, n)
            try:
                key = _mask_keys.pop()
            except IndexError:
                key = _refill_mask_keys()
            return masked_frame(header, key, payload)
        if n < 126:
            return _pack_small(first, n) + payload
        if n < 65536:
            return _pack_medium(first, 126, n) + payload
        return _pack_large(first, 127, n) + payload


# Masking keys (RFC 6455 section 5.3: unpredictable, from a strong source):
# os.urandom output taken 256 keys per system call instead of one call per
# client frame. ``list.pop`` is atomic, so no key is handed out twice even to
# drivers in different threads; a forked child starts with no keys of its own
# parent's.
_mask_keys: list[bytes] = []
_KEYS_PER_REFILL = 256


def _refill_mask_keys() -> bytes:
    """Refill the shared pool of masking keys from os.urandom; one new key."""
    fresh = os.urandom(4 * _KEYS_PER_REFILL)
    _mask_keys.extend([fresh[i : i + 4] for i in range(4, len(fresh), 4)])
    return fresh[:4]


os.register_at_fork(after_in_child=_mask_keys.clear)

_pack_small = struct.Struct("!BB").pack
_pack_medium = struct.Struct("!BBH").pack
_pack_large = struct.Struct("!BBQ").pack
_pack_code = struct.Struct("!H").pack


def _control_payload(payload: bytes | bytearray | memoryview) -> bytes:
    payload = bytes(payload)
    if len(payload) > 125:
        raise ValueError("control frame payload must be at most 125 bytes")
    return payload


def _payload(view: memoryview, start: int, stop: int, masked: int) -> bytes:
    """The payload at ``view[start:stop]``, unmasked with the key just before it if ``masked``."""
    if masked:
        return mask(bytes(view[start - 4 : start]), view[start:stop])
    return bytes(view[start:stop])


def _parse_close(payload: bytes) -> WSMessage:
    """The CLOSE message for a close frame's payload (code 0 when it had none).

    Raises :class:`WebSocketError` for a 1-byte payload, a code outside
    1000-4999, a local-only or unassigned reserved code (1002), and a reason
    that is not UTF-8 (1007), as RFC 6455 section 7.4 asks.
    """
    if not payload:
        return WSMessage(_CLOSE, 0, "")
    if len(payload) == 1:
        raise WebSocketError(_PROTOCOL_ERROR, "CLOSE with 1 byte payload")
    (code,) = _unpack_u16(payload)
    if code < MIN_CLOSE_REASON or code > MAX_CLOSE_REASON:
        raise WebSocketError(_PROTOCOL_ERROR, "CLOSE with invalid code")
    if code in _LOCAL_ONLY:
        raise WebSocketError(_PROTOCOL_ERROR, "remote CLOSE with local-only reason")
    if code <= MAX_PROTOCOL_CLOSE_REASON and code not in _KNOWN_CODES:
        raise WebSocketError(_PROTOCOL_ERROR, "CLOSE with unknown reserved code")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError as exc:
        raise WebSocketError(_INVALID_DATA, "Error decoding CLOSE reason: " + str(exc)) from None
    return WSMessage(_CLOSE, code, reason)
