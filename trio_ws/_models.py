"""Protocol types shared by the client and the server.

Only the standard library is imported here: these names describe messages and
close codes and know nothing about sockets, trio or wsproto.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple

__all__ = ["WSCloseCode", "WSMessage", "WSMsgType", "WebSocketReady"]


class WSMsgType(IntEnum):
    """The kind of a :class:`WSMessage`.

    The first six values are RFC 6455 opcodes. ``ERROR``, ``CLOSING`` and
    ``CLOSED`` are local states that ``receive()`` reports; they never appear
    on the wire. ``ERROR`` is ``0x100`` as the specification gives it (aiohttp
    3.14 numbers it ``0x102``); compare with the names, never with numbers.
    Lower-case aliases (``WSMsgType.text``) exist as in aiohttp.
    """

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA
    ERROR = 0x100
    CLOSING = 0x101
    CLOSED = 0x102

    continuation = CONTINUATION
    text = TEXT
    binary = BINARY
    close = CLOSE
    ping = PING
    pong = PONG
    error = ERROR
    closing = CLOSING
    closed = CLOSED


class WSCloseCode(IntEnum):
    """Close codes of RFC 6455 section 7.4.1 (and the IANA registry's 1012-1014)."""

    OK = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    ABNORMAL_CLOSURE = 1006
    INVALID_TEXT = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


class WSMessage(NamedTuple):
    """One message returned by ``receive()``: ``(type, data, extra)``.

    * TEXT: ``data`` is a ``str``, ``extra`` is ``""``.
    * BINARY, PING, PONG: ``data`` is ``bytes``, ``extra`` is ``""``.
    * CLOSE: ``data`` is the peer's close code (``int``; ``0`` when the close
      frame carried no code) and ``extra`` the reason (``str``).
    * ERROR: ``data`` is the exception, ``extra`` is ``None``.
    * CLOSING, CLOSED: ``data`` and ``extra`` are ``None``.
    """

    type: WSMsgType
    data: Any
    extra: Any

    def json(self, *, loads: Callable[[Any], Any] = json.loads) -> Any:
        """Parse ``data`` as JSON with ``loads``.

        Raises whatever ``loads`` raises (``json.JSONDecodeError`` for bad JSON,
        ``TypeError`` when ``data`` is not text or bytes).
        """
        return loads(self.data)


WS_CLOSED_MESSAGE = WSMessage(WSMsgType.CLOSED, None, None)
WS_CLOSING_MESSAGE = WSMessage(WSMsgType.CLOSING, None, None)


@dataclass(frozen=True)
class WebSocketReady:
    """The result of :meth:`trio_ws.web.WebSocketResponse.can_prepare` and ``prepare``.

    It honours both readings of the name. As in aiohttp it is a frozen
    ``(ok, protocol)`` object that is truthy when ``ok``. As in the
    specification it compares equal to the enumeration strings
    ``WebSocketReady.OK`` (``"OK"``) and ``WebSocketReady.ERROR`` (``"ERROR"``),
    and :attr:`status` gives that string.
    """

    ok: bool
    protocol: str | None = None

    OK: ClassVar[str] = "OK"
    ERROR: ClassVar[str] = "ERROR"

    @property
    def status(self) -> str:
        """``"OK"`` when the upgrade can go ahead, ``"ERROR"`` otherwise."""
        return self.OK if self.ok else self.ERROR

    def __bool__(self) -> bool:
        return self.ok

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.status == other
        if isinstance(other, WebSocketReady):
            return (self.ok, self.protocol) == (other.ok, other.protocol)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.ok, self.protocol))
