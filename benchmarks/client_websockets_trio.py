"""Client driver: websockets, trio implementation (``websockets.trio``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from websockets.trio.client import connect as ws_connect

from benchmarks import _trio_driver
from benchmarks._common import MAX_MSG_SIZE, client_args, raise_fd_limit
from benchmarks._conn import Conn


@asynccontextmanager
async def connect(url: str, compress: bool) -> AsyncIterator[Conn]:
    async with ws_connect(
        url,
        compression="deflate" if compress else None,
        max_size=MAX_MSG_SIZE,
        ping_interval=None,
        proxy=None,
    ) as ws:
        yield Conn(ws.send, ws.send, ws.recv, ws.recv)  # type: ignore[arg-type]


async def main() -> None:
    url, scenario, params = client_args()
    result = await _trio_driver.run(connect, url, scenario, params)
    result.emit()


if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main)
