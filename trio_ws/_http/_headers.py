"""A small case-insensitive multi-valued header mapping."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar, overload

_T = TypeVar("_T")

__all__ = ["Headers", "OutgoingHeaders", "check_header"]

# Header names and whole (name, value) pairs that most requests and responses
# carry, decoded once per process: a parsed head then shares these strings and
# tuples instead of allocating its own. Both tables are fixed: what a peer
# sends never adds to them.
_COMMON_NAMES = (
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Authorization",
    "Cache-Control",
    "Connection",
    "Content-Length",
    "Content-Type",
    "Cookie",
    "Date",
    "Host",
    "Origin",
    "Pragma",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Version",
    "Server",
    "Transfer-Encoding",
    "Upgrade",
    "User-Agent",
)
_NAMES: dict[bytes, str] = {}
for _name in _COMMON_NAMES:
    for _spelling in (_name, _name.lower()):
        _NAMES[_spelling.encode("latin-1")] = _spelling
_PAIRS: dict[tuple[bytes, bytes], tuple[str, str]] = {}
for _name, _value in (
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Connection", "upgrade"),
    ("Connection", "keep-alive, Upgrade"),
    ("Connection", "keep-alive"),
    ("Connection", "close"),
    ("Sec-WebSocket-Version", "13"),
    ("Accept", "*/*"),
    ("Cache-Control", "no-cache"),
    ("Pragma", "no-cache"),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ("Sec-WebSocket-Extensions", "permessage-deflate"),
):
    for _spelling in (_name, _name.lower()):
        _PAIRS[(_spelling.encode("latin-1"), _value.encode("latin-1"))] = (_spelling, _value)
del _name, _value, _spelling


# RFC 9110 token characters (a header name), and the characters a header value
# must not hold: controls other than tab (CR and LF would split the header),
# and DEL. Past those, a value must be ASCII: RFC 9110 leaves other bytes
# opaque, and peers decode them differently (latin-1, UTF-8, or not at all).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_header(name: str, value: str) -> None:
    """Check that ``name: value`` can be written in an HTTP/1.1 head.

    Raises ``TypeError`` when either is not a ``str``, and ``ValueError``,
    naming the header, for a name that is not an RFC 9110 token, or a value
    that holds CR, LF, NUL or another control character, or a character
    outside ASCII (such as ``"José"``: percent-encode it, or use RFC 8187's
    ``name*=UTF-8''...`` form where the header allows it).
    """
    if not isinstance(name, str):
        raise TypeError(f"header name must be str, not {type(name).__name__}: {name!r}")
    if not isinstance(value, str):
        raise TypeError(f"header {name!r}: value must be str, not {type(value).__name__}")
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {name!r}: not an HTTP token")
    bad = _BAD_VALUE.search(value)
    if bad is not None:
        raise ValueError(
            f"header {name!r}: value {value!r} has the control character {bad.group()!r} "
            f"(CR, LF and NUL would break the response head)"
        )
    if not value.isascii():
        char = next(c for c in value if not c.isascii())
        raise ValueError(
            f"header {name!r}: value {value!r} is not ASCII ({char!r} cannot be sent "
            f"as is in an HTTP/1.1 header; percent-encode it)"
        )


def _decode_pair(pair: tuple[bytes, bytes]) -> tuple[str, str]:
    shared = _PAIRS.get(pair)
    if shared is not None:
        return shared
    name, value = pair
    return (_NAMES.get(name) or name.decode("latin-1"), value.decode("latin-1"))


class Headers(Mapping[str, str]):
    """HTTP headers: case-insensitive lookup, repeated names kept in order.

    ``headers[name]`` returns the first value (``KeyError`` if absent);
    :meth:`getall` returns every value; iteration yields each distinct name
    once, as first spelled.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        if items is not None:
            pairs = items.items() if isinstance(items, Mapping) else items
            for key, value in pairs:
                self.add(key, value)

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Build from h11's ``(name, value)`` byte pairs (latin-1 decoded)."""
        headers = cls()
        headers._items = [_decode_pair(pair) for pair in raw]
        return headers

    def add(self, key: str, value: str) -> None:
        """Append a value for ``key``, keeping earlier ones."""
        self._items.append((key, value))

    def getall(self, key: str, default: list[str] | None = None) -> list[str]:
        """Every value of ``key`` in order; ``default`` (or ``KeyError``) if none."""
        lower = key.lower()
        found = [v for k, v in self._items if k == key or k.lower() == lower]
        if found:
            return found
        if default is not None:
            return default
        raise KeyError(key)

    # The lookups compare the spelling first: most peers spell names as we do,
    # and an equal string needs no lower-casing.

    @overload
    def get(self, key: str, /) -> str | None: ...

    @overload
    def get(self, key: str, default: str | _T, /) -> str | _T: ...

    def get(self, key: str, default: object = None, /) -> object:
        """The first value of ``key``, or ``default`` (None) when absent."""
        lower = key.lower()
        for k, v in self._items:
            if k == key or k.lower() == lower:
                return v
        return default

    def __getitem__(self, key: str) -> str:
        lower = key.lower()
        for k, v in self._items:
            if k == key or k.lower() == lower:
                return v
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        lower = key.lower()
        return any(k == key or k.lower() == lower for k, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for k, _ in self._items:
            if k.lower() not in seen:
                seen.add(k.lower())
                yield k

    def __len__(self) -> int:
        return len({k.lower() for k, _ in self._items})

    def items_all(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` pair, repeated names included."""
        return list(self._items)

    def tokens(self, key: str) -> list[str]:
        """The comma-separated tokens of every ``key`` header, stripped and lower-cased."""
        return [t.strip().lower() for v in self.getall(key, []) for t in v.split(",") if t.strip()]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class OutgoingHeaders(Headers):
    """Headers that will be written: each pair is checked when it is set.

    As :class:`Headers`, plus ``headers[name] = value`` (replaces every value
    of ``name``) and ``del headers[name]``. :meth:`add` and item assignment
    raise ``ValueError`` (naming the header) or ``TypeError`` for a pair
    that cannot be written, see :func:`check_header`.
    """

    __slots__ = ()

    @classmethod
    def from_checked(cls, pairs: list[tuple[str, str]]) -> OutgoingHeaders:
        """Headers holding ``pairs`` (taken, not copied), each already checked.

        For pairs that passed :func:`check_header` (or are constants that
        would): they are not checked again.
        """
        headers = cls()
        headers._items = pairs
        return headers

    def add(self, key: str, value: str) -> None:
        """Append a value for ``key``; raises as :func:`check_header` for a bad pair."""
        check_header(key, value)
        self._items.append((key, value))

    def __setitem__(self, key: str, value: str) -> None:
        check_header(key, value)
        lower = key.lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != lower]
        self._items.append((key, value))

    def __delitem__(self, key: str) -> None:
        lower = key.lower()
        kept = [(k, v) for k, v in self._items if k.lower() != lower]
        if len(kept) == len(self._items):
            raise KeyError(key)
        self._items = kept
