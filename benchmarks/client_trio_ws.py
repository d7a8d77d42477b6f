"""Client driver: trio_ws (the implementation this project builds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

import trio_ws
from benchmarks import _trio_driver
from benchmarks._common import MAX_MSG_SIZE, client_args, raise_fd_limit, report_import
from benchmarks._conn import Conn


async def main() -> None:
    url, scenario, params = client_args()
    report_import(trio_ws)
    async with trio_ws.ClientSession() as session:

        @asynccontextmanager
        async def connect(url: str, compress: bool) -> AsyncIterator[Conn]:
            async with session.ws_connect(
                url, compress=15 if compress else 0, max_msg_size=MAX_MSG_SIZE
            ) as ws:
                yield Conn(ws.send_bytes, ws.send_str, ws.receive_bytes, ws.receive_str)

        result = await _trio_driver.run(connect, url, scenario, params)
    result.emit()


if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main)
