"""Client driver: trio_ws (the implementation this project builds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

import trio_ws
from benchmarks import _trio_driver
from benchmarks._common import (
    MAX_MSG_SIZE,
    NotNegotiated,
    client_args,
    raise_fd_limit,
    report_import,
)
from benchmarks._conn import Conn


async def main() -> None:
    url, scenario, params, ssl_context = client_args()
    report_import(trio_ws)
    async with trio_ws.ClientSession() as session:

        @asynccontextmanager
        async def connect(url: str, compress: bool) -> AsyncIterator[Conn]:
            # compress=15 explicitly: ws_connect's default is 0 (no offer), as aiohttp's.
            async with session.ws_connect(
                url,
                compress=15 if compress else 0,
                max_msg_size=MAX_MSG_SIZE,
                ssl=ssl_context if ssl_context is not None else True,
            ) as ws:
                if compress and not ws.compress:
                    raise NotNegotiated("trio_ws", f"ws.compress = {ws.compress!r}")
                yield Conn(ws.send_bytes, ws.send_str, ws.receive_bytes, ws.receive_str)

        result = await _trio_driver.run(connect, url, scenario, params)
    result.emit()


if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main)
