"""Property tests: hostile bytes never produce anything but the documented outcomes.

* After the handshake (the engine over in-memory streams, both roles): random
  bytes and mutated valid frame streams, delivered in random pieces and then
  EOF. ``receive()`` only ever returns TEXT, BINARY, ERROR (a WebSocketError
  with code 1002, 1007 or 1009), CLOSE or CLOSED; the engine ends on its own
  (no hang, bounded by ``trio.fail_after``); no task is left; what it sends
  back is pongs and at most one close frame, the last, with the matching code.
* Before it (a real server on 127.0.0.1): random bytes and mutated valid
  requests as the request head are answered with a 1xx-4xx status (or 501
  for an unknown transfer coding) or a close, never a 500 or a crash, and the
  server keeps serving.

Bounded: ``max_examples`` per test, no deadline, well under a minute in all.
"""

from __future__ import annotations

import itertools
import logging
import re
import struct
import zlib
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event

from trio_ws import WebSocketError, WSMsgType, web

from ._peer import ws_pair
from .test_hardening import (
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Echo,
    get_ok,
    hello,
    running,
    task_count,
    upgrade_request,
)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis directory in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ERROR_CODES = {1002, 1007, 1009}
DATA_TYPES = {WSMsgType.TEXT, WSMsgType.BINARY}

# ------------------------------------------------------------------ strategies


def build_frame(
    opcode: int, payload: bytes, *, fin: bool, rsv: int, mask: bool, key: bytes
) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not mask:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


texts = st.one_of(
    st.text(max_size=40),
    st.integers(100, 400).map(lambda n: "x" * n),  # around max_msg_size=256 and past 125
)
binaries = st.one_of(st.binary(max_size=40), st.integers(100, 400).map(lambda n: b"y" * n))
close_codes = st.sampled_from([1000, 1001, 1003, 1011, 3000, 4999, 999, 1005, 1016, 5000])


@st.composite
def message_frames(draw: Any, deflate: bool, comp: Any) -> list[tuple[int, bytes, bool, int]]:
    """The frames ``(opcode, payload, fin, rsv)`` of one item: a data message, a control
    frame, a close, or (rarely) a frame with random header bits."""
    kind = draw(
        st.sampled_from(["text", "binary", "text", "binary", "ping", "pong", "close", "odd"])
    )
    if kind in ("text", "binary"):
        data = draw(texts).encode() if kind == "text" else draw(binaries)
        if draw(st.integers(0, 4)) == 4:  # a cut, maybe inside a UTF-8 sequence
            data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=3))
        rsv = 0
        if deflate and draw(st.booleans()):
            rsv = 4
            data = (comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
        parts = draw(st.integers(1, 3))
        step = len(data) // parts + 1
        chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        opcode = OP_TEXT if kind == "text" else OP_BINARY
        frames = [(opcode, chunks[0], len(chunks) == 1, rsv)]
        frames += [(OP_CONT, c, i == len(chunks) - 2, 0) for i, c in enumerate(chunks[1:])]
        return frames
    if kind in ("ping", "pong"):
        payload = draw(st.binary(max_size=draw(st.sampled_from([20, 125, 130]))))
        return [(OP_PING if kind == "ping" else OP_PONG, payload, True, 0)]
    if kind == "close":
        body = b""
        if draw(st.integers(0, 4)):
            body = struct.pack("!H", draw(close_codes)) + draw(st.text(max_size=8)).encode()
        return [(OP_CLOSE, body, True, 0)]
    return [
        (
            draw(st.integers(0, 15)),
            draw(st.binary(max_size=20)),
            draw(st.booleans()),
            draw(st.integers(0, 7)),
        )
    ]


@st.composite
def frame_streams(draw: Any, masked: bool, deflate: bool) -> bytes:
    """Mostly well-formed messages (fragmented, compressed, interleaved control frames),
    then up to three byte-level mutations (none in a quarter of the cases)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    items = draw(st.lists(message_frames(deflate, comp), max_size=6))
    frames = [f for item in items for f in item]
    if frames and draw(st.integers(0, 3)) == 0:  # a control frame inside a fragmented message
        at = draw(st.integers(0, len(frames) - 1))
        frames.insert(at, (OP_PING, draw(st.binary(max_size=10)), True, 0))
    out = bytearray()
    for opcode, payload, fin, rsv in frames:
        mask = masked if draw(st.integers(0, 19)) != 19 else not masked
        key = draw(st.binary(min_size=4, max_size=4))
        out += build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, key=key)
    for _ in range(draw(st.integers(0, 3))):
        if not out:
            break
        pos = draw(st.integers(0, len(out) - 1))
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if kind == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del out[pos]
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        else:
            del out[pos:]
    return bytes(out)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# --------------------------------------------------------------- engine fuzz


async def feed_engine(
    data: bytes, role: str, cuts: list[int], *, deflate: bool, max_msg_size: int
) -> None:
    """Deliver ``data`` then EOF to an engine of ``role``; check every documented outcome."""
    tasks_before = task_count()
    with trio.fail_after(10):
        async with ws_pair(role, deflate=deflate, max_msg_size=max_msg_size) as (ws, peer, _):
            try:
                for piece in pieces(data, cuts):
                    await peer.send_raw(piece)
                await peer.stream.send_eof()
            except trio.BrokenResourceError:
                pass  # the engine already closed the connection (after an error)
            received = []
            while True:
                msg = await ws.receive()
                received.append(msg)
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                    break
                if msg.type == WSMsgType.ERROR:
                    assert isinstance(msg.data, WebSocketError), msg
                    assert msg.data.code in ERROR_CODES, msg
                    assert (await ws.receive()).type == WSMsgType.CLOSED
                    break
                assert msg.type in DATA_TYPES, msg
                assert isinstance(msg.data, str if msg.type == WSMsgType.TEXT else bytes)
                if max_msg_size:
                    assert len(msg.data) <= max_msg_size
            end = (
                received[-2] if len(received) > 1 and received[-2].type == WSMsgType.ERROR else None
            )
            end = end or received[-1]
            note_event(f"ends with {end.type.name} {getattr(end.data, 'code', '')}".strip())
            note_event(f"data messages: {min(sum(m.type in DATA_TYPES for m in received), 2)}+")
            await ws._done.wait()  # the engine ends by itself
            assert ws.closed
            # What it sent back: pongs, then at most one close frame.
            sent = []
            while (event := await peer.next_event()) is not None:
                sent.append(event)
            names = [type(e).__name__ for e in sent]
            assert set(names) <= {"Pong", "CloseConnection"}, names
            assert names.count("CloseConnection") <= 1
            if "CloseConnection" in names:
                assert names[-1] == "CloseConnection"
                code = sent[-1].code
                last = received[-1] if received[-1].type != WSMsgType.CLOSED else received[-2:][0]
                if last.type == WSMsgType.ERROR:
                    assert code == last.data.code
                elif last.type == WSMsgType.CLOSE:
                    assert code == (last.data or 1005)
            if received[-1].type == WSMsgType.ERROR or (
                len(received) > 1 and received[-2].type == WSMsgType.ERROR
            ):
                assert ws.close_code in ERROR_CODES
    assert task_count() == tasks_before


@FUZZ
@given(
    data=st.binary(max_size=600),
    role=st.sampled_from(["server", "client"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
async def test_engine_random_bytes(data: bytes, role: str, cuts: list[int]) -> None:
    await feed_engine(data, role, cuts, deflate=False, max_msg_size=4 * 2**20)


@FUZZ
@given(
    data=st.data(),
    role=st.sampled_from(["server", "client"]),
    deflate=st.booleans(),
    max_msg_size=st.sampled_from([0, 256, 4 * 2**20]),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
async def test_engine_mutated_frame_streams(
    data: st.DataObject, role: str, deflate: bool, max_msg_size: int, cuts: list[int]
) -> None:
    stream = data.draw(frame_streams(masked=role == "server", deflate=deflate))
    await feed_engine(stream, role, cuts, deflate=deflate, max_msg_size=max_msg_size)


# ----------------------------------------------------------------- HTTP fuzz

VALID_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    upgrade_request("/ws", key="dGhlIHNhbXBsZSBub25jZQ=="),
    upgrade_request(
        "/ws",
        key="dGhlIHNhbXBsZSBub25jZQ==",
        extra=[("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")],
    ),
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /nowhere HTTP/1.0\r\n\r\n",
]


@st.composite
def request_heads(draw: Any) -> bytes:
    if draw(st.booleans()):
        return bytes(draw(st.binary(max_size=400))) + draw(st.sampled_from([b"", b"\r\n\r\n"]))
    out = bytearray(draw(st.sampled_from(VALID_REQUESTS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(out) - 1))
        kind = draw(st.sampled_from(["flip", "delete", "insert", "set"]))
        if kind == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del out[pos : pos + draw(st.integers(1, 8))]
        elif kind == "insert":
            out[pos:pos] = draw(
                st.sampled_from([b"\r\n", b"\n", b":", b" ", b"\x00", b"\xff", b"\r\n\r\n"])
                | st.binary(min_size=1, max_size=8)
            )
        else:
            out[pos] = draw(st.integers(0, 255))
        if not out:
            break
    return bytes(out)


def fuzz_app() -> web.Application:
    app = Echo().app()
    app.router.add_post("/", hello)
    return app


STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.1 (\d{3}) ")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@FUZZ
@given(head=request_heads(), pieces_at=st.lists(st.integers(0, 10_000), max_size=3))
async def test_random_request_heads_never_crash_the_server(
    head: bytes, pieces_at: list[int]
) -> None:
    errors = _Errors()
    logger = logging.getLogger("trio_ws")
    logger.addHandler(errors)
    limits = web.ServerLimits(head_timeout=2.0, max_head_size=1024, max_headers=20)
    try:
        async with running(fuzz_app(), limits=limits) as site:
            stream = await trio.open_tcp_stream(HOST, site.port)
            async with stream:
                try:
                    for piece in pieces(head, pieces_at):
                        await stream.send_all(piece)
                    await stream.send_eof()  # nothing more comes: every head is final
                except trio.BrokenResourceError:
                    pass  # the server already answered and closed
                answer = b""
                with trio.fail_after(5):
                    while True:
                        try:
                            chunk = await stream.receive_some(65536)
                        except trio.BrokenResourceError:
                            break
                        if not chunk:
                            break
                        answer += chunk
            statuses = [int(s) for s in STATUS.findall(answer)]
            note_event(f"statuses {statuses}")
            assert answer == b"" or statuses, answer[:100]
            # 501: a transfer coding h11 does not implement (RFC 9112 6.1).
            assert all(100 <= s < 500 or s == 501 for s in statuses), (statuses, answer[:200])
            assert await get_ok(site.port) < 2.0  # still serving
    finally:
        logger.removeHandler(errors)
    assert errors.records == [], [r.getMessage() for r in errors.records]


@pytest.mark.parametrize("head", VALID_REQUESTS, ids=range(len(VALID_REQUESTS)))
async def test_valid_requests_used_as_seeds_are_served(head: bytes) -> None:
    """The seeds of the mutations are themselves answered with 101, 200 or 404."""
    async with running(fuzz_app()) as site:
        stream = await trio.open_tcp_stream(HOST, site.port)
        async with stream:
            await stream.send_all(head)
            await stream.send_eof()
            with trio.fail_after(5):
                answer = await stream.receive_some(65536)
        assert int(STATUS.findall(answer)[0]) in (101, 200, 404), answer[:100]
