"""Echo server: aiohttp (asyncio)."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from benchmarks._common import (
    MAX_MSG_SIZE,
    emit,
    parse_bcast,
    raise_fd_limit,
    server_args,
    server_ssl_context,
)


async def main() -> None:
    args = server_args()
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
        ws = web.WebSocketResponse(compress=args.compress, max_msg_size=MAX_MSG_SIZE)
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
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=server_ssl_context(args))
    await site.start()
    emit(f"READY {runner.addresses[0][1]}")
    await asyncio.Event().wait()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(main())
