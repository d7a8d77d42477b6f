"""permessage-deflate (RFC 7692): negotiation and a bounded inflater.

What this module owns: parsing and answering ``Sec-WebSocket-Extensions``
offers, and the wsproto extension object that compresses and decompresses.

Invariants:
* An offer with an unknown, repeated or out-of-range parameter is declined
  (RFC 7692 section 5); the server then answers the next offer or none.
* Decompression never produces more than ``max_size + 1`` bytes for one
  message: :class:`BoundedDeflate` asks zlib for at most the remaining budget,
  so a small "zip bomb" closes the connection with 1009 without ever being
  inflated whole. wsproto's own extension has no such bound.

Never: touch sockets, trio or clocks.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = ["BoundedDeflate", "client_offer", "parse_offers", "server_accept", "client_finalize"]

_NAME = "permessage-deflate"
_PARAMS = {
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
}


class DeflateNegotiationError(ValueError):
    """An extension header that cannot be accepted."""


def _split_params(offer: str) -> tuple[str, dict[str, str | None]]:
    parts = [p.strip() for p in offer.split(";")]
    name = parts[0].lower()
    params: dict[str, str | None] = {}
    for part in parts[1:]:
        if not part:
            raise DeflateNegotiationError(f"empty parameter in {offer!r}")
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if key in params:
            raise DeflateNegotiationError(f"repeated parameter {key!r}")
        params[key] = value.strip().strip('"') if sep else None
    return name, params


def parse_offers(header_values: list[str]) -> list[tuple[str, dict[str, str | None]]]:
    """Split ``Sec-WebSocket-Extensions`` values into ``(name, params)`` offers.

    An offer whose parameters cannot be parsed is kept with the name
    ``"invalid"`` so that it is declined without hiding the others.
    """
    offers = []
    for value in header_values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                offers.append(_split_params(item))
            except DeflateNegotiationError:
                offers.append(("invalid", {}))
    return offers


def _bits(value: str | None, *, allow_none: bool) -> int | None:
    if value is None:
        if allow_none:
            return None
        raise DeflateNegotiationError("window bits need a value")
    if not value.isdigit():
        raise DeflateNegotiationError(f"bad window bits {value!r}")
    bits = int(value)
    if not 8 <= bits <= 15:
        raise DeflateNegotiationError(f"window bits {bits} out of range")
    return bits


def server_accept(header_values: list[str], *, max_size: int) -> tuple[str, BoundedDeflate] | None:
    """Answer a client's offers as a server.

    Returns the response header value and the configured extension for the
    first acceptable permessage-deflate offer, or ``None`` to decline all.
    """
    for name, params in parse_offers(header_values):
        if name != _NAME or not set(params) <= _PARAMS:
            continue
        try:
            server_bits = (
                _bits(params["server_max_window_bits"], allow_none=False)
                if ("server_max_window_bits" in params)
                else 15
            )
            client_bits_offer = "client_max_window_bits" in params
            client_bits = _bits(params.get("client_max_window_bits"), allow_none=True)
            for flag in ("server_no_context_takeover", "client_no_context_takeover"):
                if flag in params and params[flag] is not None:
                    raise DeflateNegotiationError(f"{flag} takes no value")
        except DeflateNegotiationError:
            continue
        assert server_bits is not None
        if server_bits < 9:
            # zlib cannot compress with an 8-bit window; decline this offer.
            continue
        response = [_NAME]
        server_nct = "server_no_context_takeover" in params
        client_nct = "client_no_context_takeover" in params
        if server_nct:
            response.append("server_no_context_takeover")
        if client_nct:
            response.append("client_no_context_takeover")
        if "server_max_window_bits" in params:
            response.append(f"server_max_window_bits={server_bits}")
        if client_bits_offer and client_bits is not None:
            response.append(f"client_max_window_bits={client_bits}")
        ext = BoundedDeflate(
            max_size=max_size,
            client=False,
            local_bits=server_bits,
            remote_bits=max(client_bits or 15, 9),
            local_no_context_takeover=server_nct,
            remote_no_context_takeover=client_nct,
        )
        return "; ".join(response), ext
    return None


def client_offer(compress: int, *, notakeover: bool = False) -> str:
    """The client's ``Sec-WebSocket-Extensions`` offer for window bits ``compress``.

    ``notakeover`` adds ``client_no_context_takeover``: the client resets its
    compressor after every message (less memory, larger messages).
    """
    offer = f"{_NAME}; client_max_window_bits"
    if compress < 15:
        offer += f"; server_max_window_bits={compress}"
    if notakeover:
        offer += "; client_no_context_takeover"
    return offer


def client_finalize(
    header_values: list[str], *, compress: int, max_size: int, notakeover: bool = False
) -> BoundedDeflate | None:
    """Check the server's answer to :func:`client_offer`.

    Returns the extension to use, ``None`` when the server declined, and raises
    :class:`DeflateNegotiationError` for an answer the client did not offer
    (unknown extension or parameter, or window bits larger than requested).
    """
    offers = parse_offers(header_values)
    if not offers:
        return None
    if len(offers) != 1:
        raise DeflateNegotiationError("server accepted more than one extension")
    name, params = offers[0]
    if name != _NAME or not set(params) <= _PARAMS:
        raise DeflateNegotiationError(f"server answered an extension not offered: {name}")
    server_bits = _bits(params.get("server_max_window_bits"), allow_none=True) or 15
    if "server_max_window_bits" in params and params["server_max_window_bits"] is None:
        raise DeflateNegotiationError("server_max_window_bits needs a value")
    if compress < 15 and server_bits > compress:
        raise DeflateNegotiationError("server window larger than requested")
    client_bits = _bits(params.get("client_max_window_bits"), allow_none=True) or 15
    if "client_max_window_bits" in params and params["client_max_window_bits"] is None:
        raise DeflateNegotiationError("client_max_window_bits needs a value")
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in params and params[flag] is not None:
            raise DeflateNegotiationError(f"{flag} takes no value")
    return BoundedDeflate(
        max_size=max_size,
        client=True,
        local_bits=max(client_bits, 9),
        remote_bits=max(server_bits, 9),
        # Offering client_no_context_takeover is a promise to reset, agreed or not.
        local_no_context_takeover=notakeover or "client_no_context_takeover" in params,
        remote_no_context_takeover="server_no_context_takeover" in params,
    )


class BoundedDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate with a cap on each inflated message.

    ``max_size`` of 0 means no cap. Set :attr:`skip_next` to send the next
    message uncompressed (the per-message ``compress=0`` of ``send_*``).
    """

    def __init__(
        self,
        *,
        max_size: int,
        client: bool,
        local_bits: int,
        remote_bits: int,
        local_no_context_takeover: bool,
        remote_no_context_takeover: bool,
    ) -> None:
        if client:
            super().__init__(
                client_no_context_takeover=local_no_context_takeover,
                client_max_window_bits=local_bits,
                server_no_context_takeover=remote_no_context_takeover,
                server_max_window_bits=remote_bits,
            )
        else:
            super().__init__(
                client_no_context_takeover=remote_no_context_takeover,
                client_max_window_bits=remote_bits,
                server_no_context_takeover=local_no_context_takeover,
                server_max_window_bits=local_bits,
            )
        self._enabled = True
        self.max_size = max_size
        self.skip_next = False
        self._skipping = False
        self._inflated = 0

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        try:
            if not self.max_size:
                return self._decompressor.decompress(data)
            budget = self.max_size - self._inflated + 1
            out = self._decompressor.decompress(data, budget)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin:
            return None
        if not self._inbound_is_compressible or not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        result = self._inflate(b"\x00\x00\xff\xff")
        if isinstance(result, CloseReason):
            return result
        self._inflated = 0
        if self.server_no_context_takeover if proto.client else self.client_no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return result

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if opcode is not Opcode.CONTINUATION and opcode in (Opcode.TEXT, Opcode.BINARY):
            self._skipping = self.skip_next
            self.skip_next = False
        if self._skipping and opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
            return rsv, data
        if self._compressor is None and opcode is not Opcode.CONTINUATION:
            # Level 1 (as aiohttp): about 3x faster than zlib's default for
            # a few percent in size.
            bits = self.client_max_window_bits if proto.client else self.server_max_window_bits
            self._compressor = zlib.compressobj(1, zlib.DEFLATED, -int(bits))
        return super().frame_outbound(proto, opcode, rsv, data, fin)
