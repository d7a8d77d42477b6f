"""The contract between a server connection and the WebSocket that takes it over.

Theory of operation: a :class:`~trio_ws.web.Request` arrives on a connection
that the server owns. ``WebSocketResponse.prepare()`` needs four things from
that connection and nothing else, and they are this module's
:class:`Upgrade`: whether the client is still there, the byte stream (TLS
included) the WebSocket will speak over, a way to write the ``101`` and get
back the bytes already read past the request, and a way to hand the open
WebSocket to the connection, which then owns it. The server implements it
(``web/_connection.py``); the WebSocket uses it (``web/_ws.py``); neither
imports the other's module, and :class:`~trio_ws.web.Request` carries it
typed as this interface only.

Ownership after the hand-over: the connection's task (the one that ran the
handler) ends the WebSocket through :func:`owner_exit` when the handler
returns or raises, and sends 1001 through :class:`OwnedWebSocket`'s
``close()`` at graceful shutdown. The WebSocket's own tasks (reader, writer,
heartbeat) run in the nursery :meth:`Upgrade.adopt` returns.

This module imports nothing else of ``trio_ws.web``.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["OwnedWebSocket", "Upgrade", "owner_exit"]


class OwnedWebSocket(Protocol):
    """What a server connection needs of the WebSocket it owns after the upgrade."""

    @property
    def closed(self) -> bool:
        """True once the WebSocket's close has begun or it has ended."""
        ...

    async def close(self, code: int | None = ..., message: bytes | str = ...) -> bool:
        """Start (or join) the close handshake; True if this call closed it."""
        ...

    async def owner_exit(self, exc: BaseException | None) -> None:
        """End the WebSocket as its owner's scope ends (see :func:`owner_exit`)."""
        ...


class Upgrade(Protocol):
    """The part of a server connection that ``WebSocketResponse.prepare()`` takes over."""

    @property
    def lost(self) -> bool:
        """True once a read or write failed: the client is gone, nothing can be answered."""
        ...

    @property
    def stream(self) -> trio.abc.Stream:
        """The connection's byte stream (the TLS stream over TLS) the WebSocket will use."""
        ...

    async def switch_protocols(self, headers: list[tuple[str, str]]) -> bytes:
        """Write ``101 Switching Protocols`` with ``headers``; return the bytes read past
        the request head (the first WebSocket bytes, if the client sent them early).

        From then on the stream speaks no HTTP. Raises ``HTTPInputError`` when
        the request cannot be upgraded (it has a body), a trio stream error or
        ``OSError`` when the client is gone.
        """
        ...

    def adopt(self, websocket: OwnedWebSocket) -> trio.Nursery:
        """Make ``websocket`` this connection's; return the nursery for its tasks.

        Call it once the ``101`` is written. From then on the connection
        closes the WebSocket when the handler ends (:func:`owner_exit`) and
        at graceful shutdown (1001).
        """
        ...


async def owner_exit(websocket: OwnedWebSocket, exc: BaseException | None) -> None:
    """End ``websocket`` because the scope that owns it (the handler's) is ending.

    ``exc`` is what ends that scope: ``None`` for a normal return (close with
    1000 and wait for the handshake up to the WebSocket's ``timeout``), an
    ``Exception`` (close with 1011), or a cancellation or other
    ``BaseException`` (1001 best-effort, then drop the connection). On return
    the WebSocket's tasks have ended. Raises nothing of its own.

    The engine's side of this contract is ``WebSocketEngine.owner_exit``
    (``trio_ws/_engine/_lifecycle.py``); this function is the one name the
    server calls it by.
    """
    await websocket.owner_exit(exc)
