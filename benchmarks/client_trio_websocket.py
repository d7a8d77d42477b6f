"""Client driver: trio-websocket (no permessage-deflate support)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from trio_websocket import open_websocket_url

from benchmarks import _trio_driver
from benchmarks._common import MAX_MSG_SIZE, client_args, raise_fd_limit
from benchmarks._conn import Conn


@asynccontextmanager
async def connect(url: str, compress: bool) -> AsyncIterator[Conn]:
    if compress:
        raise SystemExit("trio-websocket does not support permessage-deflate")
    async with open_websocket_url(url, max_message_size=MAX_MSG_SIZE) as ws:
        yield Conn(ws.send_message, ws.send_message, ws.get_message, ws.get_message)  # type: ignore[arg-type]


async def main() -> None:
    url, scenario, params = client_args()
    result = await _trio_driver.run(connect, url, scenario, params)
    result.emit()


if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main)
