"""Client driver: aiohttp (asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from benchmarks import _asyncio_driver
from benchmarks._common import MAX_MSG_SIZE, NotNegotiated, client_args, raise_fd_limit
from benchmarks._conn import Conn


async def main() -> None:
    url, scenario, params, ssl_context = client_args()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        @asynccontextmanager
        async def connect(url: str, compress: bool) -> AsyncIterator[Conn]:
            async with session.ws_connect(
                url,
                compress=15 if compress else 0,
                max_msg_size=MAX_MSG_SIZE,
                ssl=ssl_context if ssl_context is not None else True,
            ) as ws:
                if compress and not ws.compress:
                    raise NotNegotiated("aiohttp", f"ws.compress = {ws.compress!r}")
                yield Conn(ws.send_bytes, ws.send_str, ws.receive_bytes, ws.receive_str)

        result = await _asyncio_driver.run(connect, url, scenario, params)
    result.emit()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(main())
