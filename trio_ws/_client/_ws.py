"""The client's WebSocket: the shared engine with the client's rules."""

from __future__ import annotations

from .._engine._websocket import WebSocketEngine

__all__ = ["ClientWebSocketResponse"]


class ClientWebSocketResponse(WebSocketEngine):
    """A connected client WebSocket, as returned by ``ClientSession.ws_connect``.

    The whole API is the engine's: ``send_str``, ``send_bytes``,
    ``send_json``, ``ping``, ``pong``, ``close``, ``receive``,
    ``receive_str``, ``receive_bytes``, ``receive_json``, ``async for``,
    ``closed``, ``close_code``, ``protocol``, ``exception()``. Client rules
    (as aiohttp): ``receive()`` after close always returns CLOSED; a receive
    timeout sets ``close_code`` to 1006 but leaves the connection usable; a
    heartbeat timeout reports :class:`~trio_ws.ServerTimeoutError`.
    """

    _client = True

    @property
    def client_notakeover(self) -> bool:
        """True when the client resets its compression context after each message."""
        return self._deflate is not None and self._deflate.client_no_context_takeover

    def __repr__(self) -> str:
        return f"<ClientWebSocketResponse {'closed' if self.closed else 'open'}>"
