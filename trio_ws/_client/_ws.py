"""The client's WebSocket: the shared engine with the client's rules."""

from __future__ import annotations

import math
from types import TracebackType

from .._engine._websocket import WebSocketEngine

__all__ = ["ClientWebSocketResponse"]

#: The wait for the server's close frame when a block ends, if ``ws_close`` is None:
#: that close is shielded from cancellation, so it must end on its own.
_EXIT_CLOSE_BOUND = 10.0


class ClientWebSocketResponse(WebSocketEngine):
    """A connected client WebSocket, as returned by ``ClientSession.ws_connect``.

    The whole API is the engine's: ``send_str``, ``send_bytes``,
    ``send_json``, ``ping``, ``pong``, ``close``, ``receive``,
    ``receive_str``, ``receive_bytes``, ``receive_json``, ``async for``,
    ``closed``, ``close_code``, ``protocol``, ``exception()``. Client rules
    (as aiohttp): ``receive()`` after close always returns CLOSED; a receive
    timeout sets ``close_code`` to 1006 but leaves the connection usable; a
    heartbeat timeout reports :class:`~trio_ws.ServerTimeoutError`;
    ``compress`` is the negotiated window bits. It is also an async context
    manager: ``async with await session.ws_connect(url) as ws:`` closes it
    on exit.
    """

    _client = True

    @property
    def compress(self) -> int:  # type: ignore[override]
        """The window bits this client compresses with (9-15), or 0 without permessage-deflate.

        As aiohttp's client: the server's ``client_max_window_bits`` answer,
        15 when it sets none (a ``compress`` below 15 limits the *server's*
        window, so it does not show here). Truthy exactly when compression is on.
        """
        deflate = self._deflate
        return 0 if deflate is None else deflate.client_max_window_bits

    @property
    def client_notakeover(self) -> bool:
        """True when the client resets its compression context after each message."""
        return self._deflate is not None and self._deflate.client_no_context_takeover

    async def __aenter__(self) -> ClientWebSocketResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on leaving ``async with``, as the ``ws_connect`` block does.

        1000 normally (waiting up to ``ws_close`` for the server's answer),
        1011 if the block raised, 1001 if it was cancelled; every task of the
        connection has ended on return. The block's exception propagates
        unchanged; this raises nothing of its own.
        """
        await self.owner_exit(exc)

    async def owner_exit(self, exc: BaseException | None) -> None:
        """As the engine's ``owner_exit``, with an infinite ``timeout`` bounded first.

        :meta private:
        """
        if self._timeout == math.inf:
            self._timeout = _EXIT_CLOSE_BOUND
        await super().owner_exit(exc)

    def __repr__(self) -> str:
        return f"<ClientWebSocketResponse {'closed' if self.closed else 'open'}>"
