"""A fast path for the one HTTP head a WebSocket handshake is made of; h11 for the rest.

Theory of operation: an opening handshake is one ``GET`` request head
answered by one ``101`` response head, and h11's general machinery (its
state machine, event objects and header validation) costs more than the
rest of the server's work on that request. These functions read and write
exactly those heads by hand, and only when they are plain: every rule they
check is one h11 checks too, and they accept a strict subset of what h11
accepts (fewer bytes allowed in names and values, ``HTTP/1.1`` only, no
``Content-Length`` or ``Transfer-Encoding``, no folded lines, CRLF line
ends only). For anything else they return ``None``, and the caller hands
the same bytes to h11, so an unusual or malformed head gets h11's answer
(its error, its status) exactly as before. The values they return are what
h11 would have returned for the same bytes.

The server's answers also take their common headers (``Date``, once per
second; ``Server``) and their checked encoding from here.

Never: accept a head that h11 would refuse or read differently.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus

from ._headers import check_header

__all__ = [
    "encode_headers",
    "find_head_end",
    "parse_request_head",
    "parse_response_head",
    "reason_phrase",
    "response_headers",
    "writable",
    "write_head",
]

# Where a head ends, found as h11 finds it (the first blank line, LF or CRLF).
_BLANK_LINE = re.compile(rb"\n\r?\n")
# Subsets of h11's grammar: visible ASCII and obs-text, no controls at all.
_REQUEST_LINE = re.compile(rb"GET ([\x21-\x7e]+) HTTP/1\.1\r\n")
_STATUS_LINE_101 = re.compile(rb"HTTP/1\.1 101(?: ([\t \x21-\x7e\x80-\xff]*))?\r\n")
_HEADER_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*"
    rb"([\x21-\x7e\x80-\xff](?:[\t \x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
    rb"[ \t]*\r\n"
)
# Header names that give a message a body, or make h11 check more: left to h11.
_FRAMING = frozenset((b"content-length", b"transfer-encoding"))
# What h11 itself lets us write (its grammar, not the subset above).
_WRITABLE_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_WRITABLE_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")


def find_head_end(data: bytes | bytearray) -> int:
    """The offset just past the head in ``data`` (its blank line included); -1 if incomplete."""
    match = _BLANK_LINE.search(data)
    return -1 if match is None else match.end()


def _header_lines(head: bytes, pos: int) -> list[tuple[bytes, bytes]] | None:
    """The ``(name, value)`` pairs from ``pos`` to the blank line; None if one is unusual."""
    end = len(head) - 2
    pairs = []
    match_line = _HEADER_LINE.match
    while pos < end:
        m = match_line(head, pos)
        if m is None:
            return None
        name, value = m.groups()
        if name.lower() in _FRAMING:
            return None
        pairs.append((name, value or b""))
        pos = m.end()
    return pairs


def parse_request_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """The target and header pairs of a plain ``GET`` head (ending with its blank line).

    None when the head is anything else (another method or version, a body,
    no or several ``Host`` headers, a character or a line form outside the
    fast path's subset): h11 must read it.
    """
    if not head.endswith(b"\r\n\r\n"):
        return None
    line = _REQUEST_LINE.match(head)
    if line is None:
        return None
    pairs = _header_lines(head, line.end())
    if pairs is None:
        return None
    hosts = 0
    for name, _ in pairs:
        if len(name) == 4 and name.lower() == b"host":
            hosts += 1
    if hosts != 1:
        return None  # h11 answers 400 for none or several
    return line.group(1), pairs


def parse_response_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """The reason phrase and header pairs of a plain ``101`` head (ending with its blank line).

    None for any other status or an unusual head: h11 must read it.
    """
    if not head.endswith(b"\r\n\r\n"):
        return None
    line = _STATUS_LINE_101.match(head)
    if line is None:
        return None
    pairs = _header_lines(head, line.end())
    if pairs is None:
        return None
    return line.group(1) or b"", pairs


def writable(headers: list[tuple[bytes, bytes]]) -> bool:
    """True when h11 would write ``headers`` as they are (and they frame no body)."""
    name_ok = _WRITABLE_NAME.fullmatch
    value_ok = _WRITABLE_VALUE.fullmatch
    for name, value in headers:
        if name_ok(name) is None or value_ok(value) is None or name.lower() in _FRAMING:
            return False
    return True


def write_head(start_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A head as h11 writes it: the start line, ``Host`` first, then the others in order.

    Only for headers :func:`writable` accepts.
    """
    out = [start_line]
    hosts = [(n, v) for n, v in headers if n.lower() == b"host"]
    for name, value in (*hosts, *(p for p in headers if p[0].lower() != b"host")):
        out.append(b"%s: %s\r\n" % (name, value))
    out.append(b"\r\n")
    return b"".join(out)


# --------------------------------------------------------------- the server's answers

# The Date header's value, computed once per second ([second, value]).
_date = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if now != _date[0]:
        _date[1] = formatdate(now, usegmt=True)
        _date[0] = now
    return str(_date[1])


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of ``status`` (empty for an unknown one)."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def response_headers(headers: list[tuple[str, str]], body_len: int | None) -> list[tuple[str, str]]:
    """``headers`` plus ``Date``, ``Server`` and (with ``body_len``) ``Content-Length``,
    each unless already there."""
    names = {k.lower() for k, _ in headers}
    out = list(headers)
    if "date" not in names:
        out.append(("Date", _http_date()))
    if "server" not in names:
        out.append(("Server", "trio_ws"))
    if body_len is not None and "content-length" not in names:
        out.append(("Content-Length", str(body_len)))
    return out


def encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Check each header and encode it; ``ValueError``/``TypeError`` name a bad one."""
    out = []
    for name, value in headers:
        check_header(name, value)
        out.append((name.encode("ascii"), value.strip(" \t").encode("ascii")))
    return out
