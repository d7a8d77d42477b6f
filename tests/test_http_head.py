"""The handshake's hand-written HTTP heads (``trio_ws._http._head``) agree with h11.

The fast path reads a plain upgrade request or ``101`` answer and writes
heads by hand; whatever it accepts must be read (and written) exactly as
h11 reads (and writes) it, and whatever h11 refuses it must leave to h11.
These properties compare both on generated heads, valid and broken.
"""

from __future__ import annotations

import h11
import hypothesis.strategies as st
from hypothesis import given, settings

from trio_ws._http._client import _plain_request
from trio_ws._http._head import (
    find_head_end,
    parse_request_head,
    parse_response_head,
    writable,
    write_head,
)

# Bytes that matter to HTTP's grammar, for the mutations.
_ODD = b"\x00\x01\t \x7f\x80\xff:,;\r\n\x0b\x0c"
_token = st.text(alphabet="abzAZ09-!#$%&'*+.^_`|~", min_size=1, max_size=6).map(str.encode)
_names = st.one_of(
    st.sampled_from([b"Upgrade", b"Connection", b"X-A", b"Content-Length", b"transfer-encoding"]),
    _token,
    _token,
)
_values = st.one_of(
    st.sampled_from([b"websocket", b"Upgrade", b"", b"0", b"chunked", b"a\tb", b"\x80\xff"]),
    st.text(alphabet='aZ09-/=%?,;:" ', max_size=8).map(str.encode),
)
_separators = st.sampled_from([b":", b": "] * 4 + [b":  ", b":\t", b" :"])
_eol = st.sampled_from([b"\r\n"] * 16 + [b"\n", b"\r\r\n"])


@st.composite
def _head(draw: st.DrawFn, start: st.SearchStrategy[bytes]) -> bytes:
    """A head that is mostly well formed, maybe with one odd byte put in or swapped."""
    eol = draw(_eol)
    lines = [draw(start)]
    hosts = draw(st.sampled_from([1] * 8 + [0, 2]))
    headers = [(b"Host", b"127.0.0.1:80")] * hosts + draw(
        st.lists(st.tuples(_names, _values), max_size=5)
    )
    for name, value in draw(st.permutations(headers)):
        lines.append(name + draw(_separators) + value + draw(st.sampled_from([b"", b" ", b"\t"])))
        if draw(st.integers(0, 19)) == 0:
            lines.append(draw(st.sampled_from([b" folded", b"\tfolded"])))
    head = eol.join(lines) + eol + draw(_eol)
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(head) - 1))
        odd = bytes([draw(st.sampled_from(list(_ODD)))])
        head = head[:at] + odd + head[at + draw(st.integers(0, 1)) :]
    return head + draw(st.sampled_from([b"", b"XYZ", b"\r\n"]))


_request_line = st.builds(
    lambda m, t, v: m + b" " + t + b" " + v,
    st.sampled_from([b"GET"] * 6 + [b"get", b"POST", b"GET "]),
    st.one_of(
        st.sampled_from([b"/ws", b"/", b"*", b"/a?b=c"]),
        st.text(alphabet="/a%?=&~#", max_size=6).map(str.encode),
    ),
    st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]),
)
_status_line = st.builds(
    lambda v, s, r: v + b" " + s + r,
    st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0"]),
    st.sampled_from([b"101"] * 6 + [b"100", b"200", b"1010", b"10"]),
    st.sampled_from([b" Switching Protocols", b"", b" ", b" \tx ", b" \x80"]),
)


def _h11_reads(conn: h11.Connection, data: bytes) -> tuple[object, bytes] | None:
    """What h11 makes of ``data``: the first event and the bytes past the head; None if refused."""
    conn.receive_data(data)
    try:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Request) and (
            not isinstance(conn.next_event(), h11.EndOfMessage)
            or conn.next_event() not in (h11.PAUSED, h11.NEED_DATA)
        ):
            return event, b"?"  # a body: never what the fast path may accept
    except h11.RemoteProtocolError:
        return None
    return event, bytes(conn.trailing_data[0])


@settings(max_examples=1500, deadline=None)
@given(_head(_request_line))
def test_a_request_head_read_by_hand_is_read_as_h11_reads_it(data: bytes) -> None:
    end = find_head_end(data)
    fast = parse_request_head(data[:end]) if end >= 0 else None
    if fast is None:
        return  # left to h11, which answers whatever it answers
    h11_view = _h11_reads(h11.Connection(h11.SERVER), data)
    assert h11_view is not None, "the fast path accepted a head h11 refuses"
    event, trailing = h11_view
    assert isinstance(event, h11.Request)
    target, pairs = fast
    assert (event.method, event.http_version) == (b"GET", b"1.1")
    assert event.target == target
    assert event.headers.raw_items() == pairs
    assert trailing == data[end:]


def test_the_request_property_sees_accepted_heads() -> None:
    # Guard against a vacuous property: plain heads do take the fast path.
    head = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade:  websocket \r\nX-Empty:\r\n\r\n"
    assert parse_request_head(head) == (
        b"/ws",
        [(b"Host", b"x"), (b"Upgrade", b"websocket"), (b"X-Empty", b"")],
    )
    for refused in (
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",  # no Host
        b"GET /ws HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",  # two
        b"GET /ws HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",  # a body's framing
        b"GET /ws HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET /ws HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET /ws HTTP/1.1\nHost: a\n\n",
    ):
        assert parse_request_head(refused) is None, refused


def _h11_client_after_upgrade_request() -> h11.Connection:
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Upgrade", "websocket")])
    )
    conn.send(h11.EndOfMessage())
    return conn


@settings(max_examples=1500, deadline=None)
@given(_head(_status_line))
def test_a_101_read_by_hand_is_read_as_h11_reads_it(data: bytes) -> None:
    end = find_head_end(data)
    fast = parse_response_head(data[:end]) if end >= 0 else None
    if fast is None:
        return
    conn = _h11_client_after_upgrade_request()
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        raise AssertionError("the fast path accepted a 101 h11 refuses") from None
    assert isinstance(event, h11.InformationalResponse)
    reason, pairs = fast
    assert (event.status_code, event.reason) == (101, reason)
    assert event.headers.raw_items() == pairs
    assert bytes(conn.trailing_data[0]) == data[end:]


def test_the_101_property_sees_accepted_heads() -> None:
    assert parse_response_head(b"HTTP/1.1 101\r\nUpgrade: websocket\r\n\r\n") == (
        b"",
        [(b"Upgrade", b"websocket")],
    )
    assert parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n") is None
    assert parse_response_head(b"HTTP/1.1 101 x\r\nContent-Length: 5\r\n\r\n") is None


_str_names = st.one_of(
    st.sampled_from(["Host", "host", "Upgrade", "X-A", "Content-Length", "Bad Name", "é"]),
    st.text(alphabet="aZ-\t :\r\n\x00é", max_size=6),
)
_str_values = st.one_of(
    st.sampled_from(["websocket", "", " x", "x ", "a\tb", "é", "1, 2", ","]),
    st.text(alphabet="aZ-\t :\r\n\x00\x7f\x0bé,", max_size=8),
)


_base_request_headers = st.sampled_from(
    [[("Host", "x"), ("Upgrade", "websocket")]] * 4 + [[("Host", "x")], [("Upgrade", "w")], []]
)


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(st.sampled_from(["/ws", "/a?b", "", "/ sp", "/é"]), st.text(max_size=5)),
    st.builds(
        lambda base, extra: base + extra,
        _base_request_headers,
        st.lists(st.tuples(_str_names, _str_values), max_size=4),
    ).flatmap(st.permutations),
)
def test_a_request_written_by_hand_is_what_h11_writes(
    target: str, headers: list[tuple[str, str]]
) -> None:
    fast = _plain_request(target, headers)
    if fast is None:
        return
    conn = h11.Connection(h11.CLIENT)
    try:
        wire = conn.send(h11.Request(method="GET", target=target, headers=headers))
        wire = (wire or b"") + (conn.send(h11.EndOfMessage()) or b"")
    except (h11.LocalProtocolError, UnicodeEncodeError):
        raise AssertionError("written by hand, refused by h11") from None
    assert fast == wire
    # And h11 takes a 101 as the answer to it (it saw an Upgrade).
    conn.receive_data(b"HTTP/1.1 101 OK\r\n\r\n")
    assert isinstance(conn.next_event(), h11.InformationalResponse)


def test_the_written_request_property_sees_accepted_heads() -> None:
    headers = [("Upgrade", "websocket"), ("host", "x:1"), ("X", "")]
    assert _plain_request("/ws", headers) == (
        b"GET /ws HTTP/1.1\r\nhost: x:1\r\nUpgrade: websocket\r\nX: \r\n\r\n"
    )
    assert _plain_request("/ws", [("Host", "x"), ("Upgrade", "")]) is None
    assert _plain_request("/ws", [("Host", "x"), ("Upgrade", "w"), ("X", " pad")]) is None


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=6))
def test_a_101_written_by_hand_is_what_h11_writes(pairs: list[tuple[bytes, bytes]]) -> None:
    if not writable(pairs):
        return
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
    conn.next_event()
    conn.next_event()
    try:
        wire = conn.send(
            h11.InformationalResponse(status_code=101, headers=pairs, reason=b"Switching Protocols")
        )
    except h11.LocalProtocolError:
        raise AssertionError("written by hand, refused by h11") from None
    assert write_head(b"HTTP/1.1 101 Switching Protocols\r\n", pairs) == wire


def test_writable_refuses_what_h11_refuses() -> None:
    assert writable([(b"Upgrade", b"websocket"), (b"X", b"")])
    assert not writable([(b"X", b" pad")])
    assert not writable([(b"Bad Name", b"x")])
    assert not writable([(b"Content-Length", b"0")])


def _agree_on_request(head: bytes) -> None:
    end = find_head_end(head)
    fast = parse_request_head(head[:end]) if end >= 0 else None
    if fast is None:
        return
    view = _h11_reads(h11.Connection(h11.SERVER), head)
    assert view is not None, f"the fast path accepted {head!r}, which h11 refuses"
    event, trailing = view
    assert isinstance(event, h11.Request)
    assert (event.target, event.headers.raw_items(), trailing) == (*fast, head[end:])


def test_every_byte_in_every_place_of_a_request_is_judged_as_h11_judges_it() -> None:
    # Exhaustive over one byte in each place: the rarities (NUL, DEL, obs-text,
    # a bare CR) that generated heads seldom put in the right spot.
    for byte in (bytes([b]) for b in range(256)):
        for head in (
            b"GET /w" + byte + b"s HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: x\r\nX-" + byte + b"A: v\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: x\r\nX: a" + byte + b"b\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: x\r\nX: " + byte + b"\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: x\r\nX:" + byte + b"v\r\n\r\n",
        ):
            _agree_on_request(head)


def test_every_byte_in_every_place_of_a_101_is_judged_as_h11_judges_it() -> None:
    for byte in (bytes([b]) for b in range(256)):
        for head in (
            b"HTTP/1.1 101 Sw" + byte + b"itching\r\n\r\n",
            b"HTTP/1.1 101\r\nX: a" + byte + b"b\r\n\r\n",
            b"HTTP/1.1 101\r\nX" + byte + b": b\r\n\r\n",
        ):
            fast = parse_response_head(head)
            if fast is None:
                continue
            conn = _h11_client_after_upgrade_request()
            conn.receive_data(head)
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                raise AssertionError(
                    f"the fast path accepted {head!r}, which h11 refuses"
                ) from None
            assert isinstance(event, h11.InformationalResponse)
            assert (event.reason, event.headers.raw_items()) == fast
