"""The one module that drives wsproto: bytes in, messages out.

Theory of operation: :class:`FrameDriver` owns a :class:`wsproto.frame_protocol.
FrameProtocol` (the frame state machine, UTF-8 validation and extensions) and
turns the frames it yields into :class:`~trio_ws.WSMessage` values, joining
fragments. It also encodes outgoing messages and control frames.

Invariants:
* A data message never holds more than ``max_size`` bytes in memory: the
  declared length of an uncompressed frame is checked against the running
  total *before* its payload is read, and inflated bytes are bounded by
  :class:`~trio_ws._protocol._deflate.BoundedDeflate`.
* :meth:`FrameDriver.feed` appends every message that came before a protocol
  error to its output list before it raises, so nothing valid is lost.
* After an error or a received close frame the driver parses nothing more.

Never: touch sockets, trio or clocks; block; copy a payload it does not need to.
"""

from __future__ import annotations

import os
import struct

from wsproto.extensions import Extension
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    ParseFailed,
    RsvBits,
)

from .._exceptions import WebSocketError
from .._models import WSMessage, WSMsgType

__all__ = ["FrameDriver"]

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_OP_TEXT = Opcode.TEXT
_OP_BINARY = Opcode.BINARY
_OP_CONT = Opcode.CONTINUATION
_OP_CLOSE = Opcode.CLOSE
_OP_PING = Opcode.PING
_OP_PONG = Opcode.PONG


class _SizeGuard(Extension):
    """Rejects a message past ``max_size`` before its payload is buffered.

    It sits after permessage-deflate in the chain, so it counts inflated bytes.
    It is never negotiated: it only uses wsproto's extension hooks.
    """

    name = "trio-ws-size-guard"

    def __init__(self, max_size: int, deflate: Extension | None) -> None:
        self.max_size = max_size
        self._deflate = deflate
        self._total = 0
        self._compressed = False
        self._counting = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:  # pragma: no cover - never negotiated
        return False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode is _OP_TEXT or opcode is _OP_BINARY:
            self._total = 0
            self._compressed = self._deflate is not None and rsv.rsv1
        # Control frames (at most 125 bytes) may sit between fragments: never counted.
        self._counting = not opcode.iscontrol()
        if (
            self._counting
            and not self._compressed
            and self._total + payload_length > self.max_size
        ):
            return CloseReason.MESSAGE_TOO_BIG
        return RsvBits(False, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._counting:
            return data
        self._total += len(data)
        if self._total > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return data

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        return None


class FrameDriver:
    """Sans-I/O WebSocket framing for one connection, for either role.

    ``client`` selects masking rules. ``extensions`` are the negotiated ones
    (a :class:`BoundedDeflate` at most). ``max_size`` caps one message (0: no
    cap).
    """

    __slots__ = ("_parts", "_proto", "_tx", "client", "closed", "max_size")

    def __init__(
        self, *, client: bool, extensions: list[Extension] | None = None, max_size: int = 0
    ) -> None:
        exts: list[Extension] = list(extensions or [])
        self.max_size = max_size
        # Outgoing frames go through wsproto only when an extension must
        # transform them; the reading side also gets the size guard.
        self._tx = FrameProtocol(client, list(exts)) if exts else None
        if max_size:
            exts.append(_SizeGuard(max_size, exts[0] if exts else None))
        self.client = client
        self._proto = FrameProtocol(client, exts)
        self._parts: list[str | bytes] = []
        self.closed = False

    def feed(self, data: bytes | bytearray, out: list[WSMessage]) -> None:
        """Parse ``data`` and append every complete message and control frame to ``out``.

        PING, PONG and CLOSE become ``WSMessage`` values of those types (CLOSE
        carries ``(code, reason)``, code 0 when the frame had none). After a
        CLOSE nothing more is parsed. Raises :class:`WebSocketError` with the
        close code to send (1002, 1007, 1009) on any protocol violation.
        """
        if self.closed:
            return
        proto = self._proto
        proto.receive_bytes(data)  # type: ignore[arg-type]
        parts = self._parts
        append = out.append
        try:
            for frame in proto.received_frames():
                opcode = frame.opcode
                if opcode is _OP_TEXT or opcode is _OP_BINARY:
                    if frame.message_finished and not parts:
                        # Hot path: one frame, one message, no join.
                        append(
                            WSMessage(_TEXT if opcode is _OP_TEXT else _BINARY, frame.payload, "")
                        )
                        continue
                    parts.append(frame.payload)  # type: ignore[arg-type]
                    if frame.message_finished:
                        append(self._join(opcode))
                elif opcode is _OP_PING:
                    append(WSMessage(WSMsgType.PING, frame.payload, ""))
                elif opcode is _OP_PONG:
                    append(WSMessage(WSMsgType.PONG, frame.payload, ""))
                elif opcode is _OP_CLOSE:
                    code, reason = frame.payload  # type: ignore[str-unpack]
                    self.closed = True
                    append(
                        WSMessage(
                            WSMsgType.CLOSE,
                            0 if code == CloseReason.NO_STATUS_RCVD else int(code),
                            reason,
                        )
                    )
                    return
        except ParseFailed as exc:
            self.closed = True
            raise WebSocketError(int(exc.code), _describe(exc, self.max_size)) from None

    def _join(self, opcode: Opcode) -> WSMessage:
        parts = self._parts
        if opcode is _OP_TEXT:
            msg = WSMessage(_TEXT, "".join(parts), "")  # type: ignore[arg-type]
        else:
            msg = WSMessage(_BINARY, b"".join(parts), "")  # type: ignore[arg-type]
        parts.clear()
        return msg

    def encode(self, data: str | bytes | bytearray | memoryview) -> bytes | bytearray:
        """The frame bytes for one complete TEXT (``str``) or BINARY message."""
        if self._tx is not None:
            return self._tx.send_data(data)  # type: ignore[arg-type]
        if isinstance(data, str):
            return self._frame(0x81, data.encode())
        return self._frame(0x82, data)

    def encode_ping(self, payload: bytes) -> bytes:
        """The frame bytes for a PING; raises ValueError past 125 bytes."""
        return self._frame(0x89, _control_payload(payload))

    def encode_pong(self, payload: bytes) -> bytes:
        """The frame bytes for a PONG; raises ValueError past 125 bytes."""
        return self._frame(0x8A, _control_payload(payload))

    def encode_close(self, code: int | None, reason: str) -> bytes:
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

    def _frame(self, first: int, payload: bytes | bytearray | memoryview) -> bytes:
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
            key = os.urandom(4)
            return header + key + _mask(key, payload)
        if n < 126:
            return _pack_small(first, n) + payload
        if n < 65536:
            return _pack_medium(first, 126, n) + payload
        return _pack_large(first, 127, n) + payload


_pack_small = struct.Struct("!BB").pack
_pack_medium = struct.Struct("!BBH").pack
_pack_large = struct.Struct("!BBQ").pack
_pack_code = struct.Struct("!H").pack


def _control_payload(payload: bytes | bytearray | memoryview) -> bytes:
    payload = bytes(payload)
    if len(payload) > 125:
        raise ValueError("control frame payload must be at most 125 bytes")
    return payload


_XOR_TABLES = [bytes(i ^ k for i in range(256)) for k in range(256)]


def _mask(key: bytes, payload: bytes | bytearray | memoryview) -> bytes:
    n = len(payload)
    if not n:
        return b""
    if n < 1024:
        # XOR as one big integer: runs in C, cheapest for small payloads.
        keys = (key * ((n >> 2) + 1))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
            n, "little"
        )
    # Large payloads: one translate() per key byte over a stride-4 slice.
    out = bytearray(payload)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR_TABLES[key[i]])
    return bytes(out)


def _describe(exc: ParseFailed, max_size: int) -> str:
    if exc.code == CloseReason.MESSAGE_TOO_BIG:
        return f"Message size exceeds limit {max_size}"
    if exc.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA and "extension" in str(exc):
        return "Invalid compressed data"
    return str(exc)
