"""Echo server: websockets, asyncio implementation (``websockets.asyncio``)."""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection, serve

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
    clients: set[ServerConnection] = set()

    async def broadcast(count: int, size: int) -> None:
        payload = b"b" * size
        targets = list(clients)
        for _ in range(count):
            for ws in targets:
                try:
                    await ws.send(payload)
                except Exception:
                    clients.discard(ws)

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            async for message in ws:
                if isinstance(message, str):
                    command = parse_bcast(message)
                    if command is not None:
                        await broadcast(*command)
                        continue
                await ws.send(message)
        finally:
            clients.discard(ws)

    async with serve(
        handler,
        args.host,
        args.port,
        compression="deflate" if args.compress else None,
        ssl=server_ssl_context(args),
        max_size=MAX_MSG_SIZE,
        ping_interval=None,
    ) as server:
        emit(f"READY {next(iter(server.sockets)).getsockname()[1]}")
        await server.serve_forever()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(main())
