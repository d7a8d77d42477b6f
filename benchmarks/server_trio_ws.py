"""Echo server: trio_ws (the implementation this project builds)."""

from __future__ import annotations

from functools import partial

import trio

import trio_ws
from benchmarks._common import (
    MAX_MSG_SIZE,
    emit,
    parse_bcast,
    raise_fd_limit,
    report_import,
    server_args,
    server_ssl_context,
)
from trio_ws import WSMsgType, web


async def main() -> None:
    args = server_args()
    report_import(trio_ws)
    clients: set[web.WebSocketResponse] = set()

    async def broadcast(count: int, size: int) -> None:
        payload = b"b" * size
        targets = list(clients)
        for _ in range(count):
            for ws in targets:
                try:
                    await ws.send_bytes(payload)
                except Exception:
                    clients.discard(ws)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            heartbeat=None, compress=args.compress, max_msg_size=MAX_MSG_SIZE
        )
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    command = parse_bcast(msg.data)
                    if command is None:
                        await ws.send_str(msg.data)
                    else:
                        await broadcast(*command)
        finally:
            clients.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with trio.open_nursery() as nursery:
        site = await nursery.start(
            partial(web.serve, ssl_context=server_ssl_context(args)), app, args.host, args.port
        )
        emit(f"READY {site.port}")


if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main)
