"""The frame parser (``trio_ws._protocol._driver.FrameDriver``), sans I/O.

The parser is our own (wsproto's decoder copied payloads about ten times), so
it is checked against wsproto's ``FrameProtocol`` as a reference: the same
frame streams, cut into random pieces, must give the same messages, and the
same protocol errors must be refused with the same close code. Then the
properties the reference does not have: a binary frame is buffered whole and
unmasked once, a too-large frame is refused from its header alone, invalid
UTF-8 fails before the rest of its frame arrives.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from trio_ws import WebSocketError, WSMessage, WSMsgType
from trio_ws._protocol._deflate import BoundedDeflate
from trio_ws._protocol._driver import FrameDriver

from .test_hardening import frame as raw_frame

PROPS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """One raw frame; ``rsv`` is the bits as they stand in the first byte (0x40 = RSV1)."""
    return raw_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv >> 4)


def long_length_frame(payload: bytes, length_bytes: int) -> bytes:
    """A masked BINARY frame whose length uses ``length_bytes`` (2 or 8) even if fewer would do."""
    head = struct.pack(
        "!BBH" if length_bytes == 2 else "!BBQ",
        0x82,
        0x80 | (126 if length_bytes == 2 else 127),
        len(payload),
    )
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def feed_in_pieces(driver: FrameDriver, data: bytes, cuts: list[int]) -> list[WSMessage]:
    out: list[WSMessage] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        driver.feed(data[a:b], out)
    return out


def reference(data: bytes, *, client: bool) -> tuple[list[tuple[object, object]], int | None]:
    """wsproto's reading of ``data``: ``(type, data)`` per message, and its error code."""
    proto = FrameProtocol(client, [])
    proto.receive_bytes(data)
    messages: list[tuple[object, object]] = []
    parts: list[object] = []
    try:
        for f in proto.received_frames():
            if f.opcode in (Opcode.TEXT, Opcode.BINARY):
                parts.append(f.payload)
                if f.message_finished:
                    kind = WSMsgType.TEXT if f.opcode is Opcode.TEXT else WSMsgType.BINARY
                    joined = "".join(parts) if kind is WSMsgType.TEXT else b"".join(parts)  # type: ignore[arg-type]
                    messages.append((kind, joined))
                    parts = []
            elif f.opcode is Opcode.PING:
                messages.append((WSMsgType.PING, f.payload))
            elif f.opcode is Opcode.PONG:
                messages.append((WSMsgType.PONG, f.payload))
            elif f.opcode is Opcode.CLOSE:
                code, reason = f.payload  # type: ignore[misc]
                messages.append((WSMsgType.CLOSE, (0 if code == 1005 else int(code), reason)))
                break
    except ParseFailed as exc:
        return messages, int(exc.code)
    return messages, None


def ours(
    data: bytes, cuts: list[int], *, client: bool
) -> tuple[list[tuple[object, object]], int | None]:
    driver = FrameDriver(client=client)
    out: list[WSMessage] = []
    code = None
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    try:
        for a, b in itertools.pairwise(points):
            driver.feed(data[a:b], out)
    except WebSocketError as exc:
        code = exc.code
    got = [(m.type, (m.data, m.extra) if m.type is WSMsgType.CLOSE else m.data) for m in out]
    return got, code


# ------------------------------------------------------------------ strategies

texts = st.text(max_size=300)
blobs = st.binary(max_size=300)


@st.composite
def message_frames(draw: st.DrawFn, mask: bool) -> bytes:
    """One message as 1-4 frames, with control frames between fragments."""
    if draw(st.booleans()):
        raw = draw(texts).encode()
        opcode = 0x1
    else:
        raw = draw(blobs)
        opcode = 0x2
    if draw(st.booleans()) or len(raw) < 2:
        return frame(opcode, raw, mask=mask)
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=3)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    out = b""
    for i, piece in enumerate(pieces):
        op = opcode if i == 0 else 0x0
        out += frame(op, piece, fin=i == len(pieces) - 1, mask=mask)
        if draw(st.integers(0, 4)) == 0:
            out += frame(0x9, draw(st.binary(max_size=125)), mask=mask)
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, bool]:
    client = draw(st.booleans())
    mask = not client
    data = b"".join(draw(st.lists(message_frames(mask), max_size=6)))
    if draw(st.booleans()):
        data += frame(0x8, struct.pack("!H", 1000) + b"bye", mask=mask)
    return data, client


# ----------------------------------------------------------- the reference


@PROPS
@given(streams(), st.lists(st.integers(0, 10_000), max_size=12))
def test_valid_streams_read_as_wsproto_reads_them(
    sample: tuple[bytes, bool], cuts: list[int]
) -> None:
    data, client = sample
    expected, error = reference(data, client=client)
    assert error is None
    assert ours(data, cuts, client=client) == (expected, None)


@PROPS
@given(
    streams(),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.lists(st.integers(0, 10_000), max_size=6),
)
def test_corrupted_streams_fail_as_wsproto_fails(
    sample: tuple[bytes, bool], where: int, value: int, cuts: list[int]
) -> None:
    data, client = sample
    if not data:
        return
    i = where % len(data)
    data = data[:i] + bytes([value]) + data[i + 1 :]
    expected, error = reference(data, client=client)
    got, code = ours(data, cuts, client=client)
    if error is None:
        # The corruption may leave a frame waiting for more bytes: wsproto and
        # we must then agree on everything before it.
        assert code is None
        assert got == expected
    else:
        assert code == error
        assert got == expected


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(0x3, b""), 1002),  # reserved opcode
        (frame(0x9, b"x", fin=False), 1002),  # fragmented control frame
        (frame(0x9, b"x" * 126), 1002),  # control frame too long
        (long_length_frame(b"x" * 10, 2), 1002),  # 2-byte length for a short frame
        (long_length_frame(b"x" * 200, 8), 1002),  # 8-byte length for a medium frame
        (frame(0x2, b"x", rsv=0x40), 1002),  # RSV1 without an extension
        (frame(0x2, b"x", mask=False), 1002),  # a client must mask
        (frame(0x0, b"x"), 1002),  # continuation with no message
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002),  # new message mid-message
        (frame(0x1, b"\xff"), 1007),
        (frame(0x8, b"\x03"), 1002),  # 1-byte close payload
        (frame(0x8, struct.pack("!H", 999)), 1002),
        (frame(0x8, struct.pack("!H", 1005)), 1002),  # local-only code
        (frame(0x8, struct.pack("!H", 1004)), 1002),  # unassigned reserved code
        (frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),
    ],
)
def test_each_protocol_error_has_its_close_code(data: bytes, code: int) -> None:
    assert reference(data, client=False)[1] == code
    driver = FrameDriver(client=False)
    with pytest.raises(WebSocketError) as info:
        driver.feed(data, [])
    assert info.value.code == code
    # Nothing more is parsed after an error.
    out: list[WSMessage] = []
    driver.feed(frame(0x2, b"more"), out)
    assert out == []


def test_messages_before_an_error_are_kept() -> None:
    driver = FrameDriver(client=False)
    out: list[WSMessage] = []
    with pytest.raises(WebSocketError):
        driver.feed(frame(0x1, b"one") + frame(0x2, b"two") + frame(0x3, b""), out)
    assert [m.data for m in out] == ["one", b"two"]


# ------------------------------------------------------ beyond the reference


def test_large_binary_frame_arrives_once_complete() -> None:
    payload = os.urandom(1 << 20)
    data = frame(0x2, payload)
    driver = FrameDriver(client=False, max_size=1 << 21)
    out: list[WSMessage] = []
    for i in range(0, len(data), 65536):
        driver.feed(data[i : i + 65536], out)
        if i + 65536 < len(data):
            assert out == []
    assert out == [WSMessage(WSMsgType.BINARY, payload, "")]
    assert type(out[0].data) is bytes


def test_oversized_frame_is_refused_from_its_header() -> None:
    driver = FrameDriver(client=False, max_size=1000)
    head = frame(0x2, b"x" * 1001)[:8]  # header and mask key only
    with pytest.raises(WebSocketError) as info:
        driver.feed(head, [])
    assert info.value.code == 1009
    assert "1000" in str(info.value)


def test_oversized_fragmented_message_is_refused() -> None:
    driver = FrameDriver(client=False, max_size=1000)
    out: list[WSMessage] = []
    driver.feed(frame(0x2, b"x" * 600, fin=False), out)
    with pytest.raises(WebSocketError) as info:
        driver.feed(frame(0x0, b"x" * 401)[:8], out)
    assert info.value.code == 1009


def test_message_of_exactly_max_size_is_accepted() -> None:
    driver = FrameDriver(client=False, max_size=1000)
    out: list[WSMessage] = []
    driver.feed(frame(0x1, b"a" * 500, fin=False) + frame(0x0, b"b" * 500), out)
    assert out == [WSMessage(WSMsgType.TEXT, "a" * 500 + "b" * 500, "")]


def test_invalid_utf8_fails_before_the_frame_is_complete() -> None:
    data = frame(0x1, b"ok" + b"\xc3\x28" + b"x" * 10_000)
    driver = FrameDriver(client=False)
    with pytest.raises(WebSocketError) as info:
        driver.feed(data[:20], [])  # header, mask key and the first bytes only
    assert info.value.code == 1007


def test_text_split_inside_a_character_across_reads() -> None:
    text = "h\u00e9llo \u2603 \U0001f600" * 50
    data = frame(0x1, text.encode())
    driver = FrameDriver(client=False)
    out: list[WSMessage] = []
    for i in range(0, len(data), 7):
        driver.feed(data[i : i + 7], out)
    assert out == [WSMessage(WSMsgType.TEXT, text, "")]


def test_close_without_code_reads_as_zero_and_ends_parsing() -> None:
    driver = FrameDriver(client=True)
    out: list[WSMessage] = []
    driver.feed(frame(0x8, b"", mask=False) + frame(0x2, b"after", mask=False), out)
    assert out == [WSMessage(WSMsgType.CLOSE, 0, "")]
    assert driver.closed


# ------------------------------------------------------------ with deflate


def _deflate_pair(max_size: int = 0) -> tuple[FrameProtocol, FrameDriver]:
    sender_ext = PerMessageDeflate()
    sender_ext._enabled = True
    sender = FrameProtocol(True, [sender_ext])
    ext = BoundedDeflate(
        max_size=max_size,
        client=False,
        local_bits=15,
        remote_bits=15,
        local_no_context_takeover=False,
        remote_no_context_takeover=False,
    )
    return sender, FrameDriver(client=False, extensions=[ext], max_size=max_size)


@PROPS
@given(
    st.lists(st.one_of(texts, blobs), min_size=1, max_size=5),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_compressed_messages_round_trip(messages: list[str | bytes], cuts: list[int]) -> None:
    sender, driver = _deflate_pair()
    data = b"".join(sender.send_data(m) for m in messages)
    got = feed_in_pieces(driver, data, cuts)
    assert [m.data for m in got] == messages


def test_ping_between_compressed_fragments() -> None:
    # wsproto's own decoder forgets that a message is compressed when a
    # control frame arrives between its fragments; this one does not.
    sender, driver = _deflate_pair()
    text = "fragmented and compressed " * 20
    data = sender.send_data(text[:100], fin=False)
    data += frame(0x9, b"ping")
    data += sender.send_data(text[100:], fin=True)
    out: list[WSMessage] = []
    driver.feed(bytes(data), out)
    assert [(m.type, m.data) for m in out] == [(WSMsgType.PING, b"ping"), (WSMsgType.TEXT, text)]


def test_compressed_bomb_is_refused_with_1009() -> None:
    _sender, driver = _deflate_pair(max_size=1 << 16)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = bomb.compress(b"\0" * (1 << 24)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    data = frame(0x2, body[:-4], rsv=0x40)
    with pytest.raises(WebSocketError) as info:
        driver.feed(data, [])
    assert info.value.code == 1009


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize("backend", ["speedups", "pure"])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 1023, 1024, 1025, 4099, 70_001])
def test_mask_matches_the_definition(monkeypatch: pytest.MonkeyPatch, backend: str, n: int) -> None:
    from trio_ws._protocol import _mask

    if backend == "pure":
        monkeypatch.setattr(_mask, "_np", None)
    elif _mask._np is None:
        pytest.skip("numpy (the speedups extra) is not installed")
    key = os.urandom(4)
    payload = os.urandom(n)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert _mask.mask(key, payload) == expected
    assert _mask.mask(key, memoryview(b"xx" + payload)[2:]) == expected
    assert bytes(_mask.masked_frame(b"\x82\x80", key, payload)) == b"\x82\x80" + key + expected
