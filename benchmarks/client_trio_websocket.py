"""Client driver: trio-websocket (no permessage-deflate support)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from trio_websocket import open_websocket_url

from benchmarks import _trio_driver
from benchmarks._common import MAX_MSG_SIZE, NotNegotiated, client_args, raise_fd_limit
from benchmarks._conn import Conn, Connect

#: Seconds for the opening handshake (TCP, TLS and HTTP upgrade) of one connection.
CONNECT_TIMEOUT = 5.0


def connector(ssl_context: ssl.SSLContext | None) -> Connect:
    """``connect(url, compress)`` for the driver (TLS with ``ssl_context`` for wss://)."""

    @asynccontextmanager
    async def connect(url: str, compress: bool) -> AsyncIterator[Conn]:
        if compress:
            raise NotNegotiated("trio_websocket", "it has no permessage-deflate")
        # A failed TLS handshake (a certificate error) surfaces only as the connect timeout
        # (python-trio/trio-websocket#199), so keep that short instead of its default 60 s.
        async with open_websocket_url(
            url, ssl_context, max_message_size=MAX_MSG_SIZE, connect_timeout=CONNECT_TIMEOUT
        ) as ws:
            yield Conn(ws.send_message, ws.send_message, ws.get_message, ws.get_message)  # type: ignore[arg-type]

    return connect


async def main() -> None:
    url, scenario, params, ssl_context = client_args()
    result = await _trio_driver.run(connector(ssl_context), url, scenario, params)
    result.emit()


if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main)
