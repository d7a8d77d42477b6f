"""Client driver: websockets, asyncio implementation (``websockets.asyncio``)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import connect as ws_connect

from benchmarks import _asyncio_driver
from benchmarks._common import MAX_MSG_SIZE, NotNegotiated, client_args, raise_fd_limit
from benchmarks._conn import Conn, Connect


def connector(ssl_context: ssl.SSLContext | None) -> Connect:
    """``connect(url, compress)`` for the driver (TLS with ``ssl_context`` for wss://)."""
    options: dict[str, Any] = {} if ssl_context is None else {"ssl": ssl_context}

    @asynccontextmanager
    async def connect(url: str, compress: bool) -> AsyncIterator[Conn]:
        async with ws_connect(
            url,
            compression="deflate" if compress else None,
            max_size=MAX_MSG_SIZE,
            ping_interval=None,
            proxy=None,
            **options,
        ) as ws:
            names = [ext.name for ext in ws.protocol.extensions]
            if compress and "permessage-deflate" not in names:
                raise NotNegotiated("websockets_asyncio", f"extensions = {names!r}")
            yield Conn(ws.send, ws.send, ws.recv, ws.recv)  # type: ignore[arg-type]

    return connect


async def main() -> None:
    url, scenario, params, ssl_context = client_args()
    result = await _asyncio_driver.run(connector(ssl_context), url, scenario, params)
    result.emit()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(main())
