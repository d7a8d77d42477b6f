"""permessage-deflate (RFC 7692): negotiation and a bounded inflater.

What this module owns: parsing and answering ``Sec-WebSocket-Extensions``
offers, and the object that compresses and decompresses (our own, over :mod:`zlib`).

Invariants:
* An offer with an unknown, repeated or out-of-range parameter is declined
  (RFC 7692 section 5); the server then answers the next offer or none.
* Decompression never produces more than ``max_size + 1`` bytes for one
  message: :class:`BoundedDeflate` asks zlib for at most the remaining budget,
  so a small "zip bomb" closes the connection with 1009 without ever being
  inflated whole.
* Compression state is per message, never per frame: control frames
  interleaved with a compressed message's frames (RFC 6455 section 5.4) do
  not touch it.

Never: touch sockets, trio or clocks.
"""

from __future__ import annotations

import zlib

from .._exceptions import WebSocketError

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


class BoundedDeflate:
    """One connection's permessage-deflate state: a compressor and a bounded inflater.

    Theory of operation: the frame parser, not this object, knows which
    message is compressed (RSV1 on a message's first frame, RFC 7692 section
    6) and where it ends. It hands this object the (unmasked) payload of every
    frame of a compressed message, in order, with :meth:`inflate`, then calls
    :meth:`end_message` once after the last frame. Control frames never reach
    this object, so a ping or pong before, between or inside compressed
    messages cannot disturb its state. (wsproto's ``PerMessageDeflate`` keeps
    per-frame state that control frames reset; it is not used here.)

    ``max_size`` of 0 means no cap; otherwise :meth:`inflate` never produces
    more than ``max_size + 1`` bytes for one message and raises
    :class:`~trio_ws.WebSocketError` 1009 past ``max_size``. Set
    :attr:`skip_next` to send the next message uncompressed (the per-message
    ``compress=0`` of ``send_*``).
    """

    __slots__ = (
        "_deflater",
        "_inflated",
        "_inflater",
        "client",
        "local_bits",
        "local_no_context_takeover",
        "max_size",
        "remote_bits",
        "remote_no_context_takeover",
        "skip_next",
    )

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
        if not (9 <= local_bits <= 15 and 9 <= remote_bits <= 15):
            raise ValueError("window bits must be between 9 and 15")
        self.max_size = max_size
        self.client = client
        self.local_bits = local_bits
        self.remote_bits = remote_bits
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.skip_next = False
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None
        self._inflated = 0

    # The agreed parameters under their RFC 7692 names.
    @property
    def client_no_context_takeover(self) -> bool:
        """True when the client resets its compression context after every message."""
        return self.local_no_context_takeover if self.client else self.remote_no_context_takeover

    @property
    def server_no_context_takeover(self) -> bool:
        """True when the server resets its compression context after every message."""
        return self.remote_no_context_takeover if self.client else self.local_no_context_takeover

    @property
    def client_max_window_bits(self) -> int:
        """The LZ77 window of the client's compressor (9-15)."""
        return self.local_bits if self.client else self.remote_bits

    @property
    def server_max_window_bits(self) -> int:
        """The LZ77 window of the server's compressor (9-15)."""
        return self.remote_bits if self.client else self.local_bits

    # ------------------------------------------------------------ inbound

    def inflate(self, data: bytes | bytearray | memoryview) -> bytes:
        """Inflate the next piece of a compressed message's payload.

        Raises :class:`~trio_ws.WebSocketError` 1007 for data that is not a
        valid deflate stream and 1009 once the message inflates past
        ``max_size``.
        """
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(-self.remote_bits)
        try:
            if not self.max_size:
                return inflater.decompress(data)
            # Ask for at most one byte more than the budget: a "zip bomb" is
            # refused without ever being inflated whole.
            out = inflater.decompress(data, self.max_size - self._inflated + 1)
        except zlib.error as exc:
            raise WebSocketError(1007, f"Invalid compressed data: {exc}") from None
        self._inflated += len(out)
        if self._inflated > self.max_size:
            raise WebSocketError(1009, f"Message size exceeds limit {self.max_size}")
        return out

    def inflate_message(self, payload: bytes) -> bytes:
        """Inflate a whole compressed message that arrived in one frame.

        The same as :meth:`inflate` then :meth:`end_message`, in one zlib call
        on ``payload`` with the ``00 00 ff ff`` tail appended (one output
        buffer, no concatenation). Still asks zlib for at most ``max_size + 1``
        bytes, so a "zip bomb" is refused without being inflated whole.
        Raises as :meth:`inflate`.
        """
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(-self.remote_bits)
        max_size = self.max_size
        try:
            if max_size:
                out = inflater.decompress(payload + _TAIL, max_size + 1)
            else:
                out = inflater.decompress(payload + _TAIL)
        except zlib.error as exc:
            raise WebSocketError(1007, f"Invalid compressed data: {exc}") from None
        if max_size and len(out) > max_size:
            raise WebSocketError(1009, f"Message size exceeds limit {max_size}")
        if self.remote_no_context_takeover or inflater.eof:
            self._inflater = None
        return out

    def end_message(self) -> bytes:
        """Finish the compressed message whose frames were all inflated; its last bytes.

        Feeds the ``00 00 ff ff`` tail the sender removed (RFC 7692 section
        7.2.2) and drops the inflater when the peer resets its context (or
        ended its stream with a final block). Raises as :meth:`inflate`.
        """
        out = self.inflate(_TAIL)
        inflater = self._inflater
        self._inflated = 0
        if self.remote_no_context_takeover or (inflater is not None and inflater.eof):
            self._inflater = None
        return out

    # ----------------------------------------------------------- outbound

    def compress(self, data: bytes | bytearray | memoryview) -> bytearray:
        """The compressed payload for one whole message (tail removed)."""
        deflater = self._deflater
        if deflater is None:
            # Level 1 (as aiohttp): about 3x faster than zlib's default for a
            # few percent in size. memLevel 5 (zlib's default is 8): a
            # connection's compressor costs about 38 KiB instead of 99 KiB
            # once used, with the same ratio and speed on chat-sized messages
            # (measured: docs/limits.md, "permessage-deflate memory").
            deflater = self._deflater = zlib.compressobj(
                1, zlib.DEFLATED, -self.local_bits, _MEM_LEVEL
            )
        # A full flush forgets the context (no back-references into earlier
        # messages) while keeping the compressor's memory.
        flush = zlib.Z_FULL_FLUSH if self.local_no_context_takeover else zlib.Z_SYNC_FLUSH
        # One output object: the flush (which holds most of the output at
        # level 1) is appended to in place and the tail is cut off the end of
        # the same buffer, without the two copies of ``(a + b)[:-4]``.
        out = bytearray(deflater.compress(data))
        out += deflater.flush(flush)
        # zlib ends every sync or full flush with the empty stored block.
        if out.endswith(_TAIL):
            del out[-4:]
        return out


_TAIL = b"\x00\x00\xff\xff"
_MEM_LEVEL = 5
