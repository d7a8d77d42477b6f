"""The small connection interface the generic client drivers use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Conn:
    """Bound methods of one open connection of the implementation under test."""

    send_bytes: Callable[[bytes], Awaitable[object]]
    send_text: Callable[[str], Awaitable[object]]
    recv_bytes: Callable[[], Awaitable[bytes]]
    recv_text: Callable[[], Awaitable[str]]


#: ``connect(url, compress)`` opens a connection for the duration of the context.
Connect = Callable[[str, bool], AbstractAsyncContextManager[Conn]]

#: Connection attempts in flight at once (below every server's default listen backlog).
CONNECT_CONCURRENCY = 50

HELLO = b"hello"
