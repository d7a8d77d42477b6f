"""Echo server: trio-websocket (no permessage-deflate support)."""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

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
    if args.compress:
        raise SystemExit("trio-websocket does not support permessage-deflate")
    clients: set[WebSocketConnection] = set()

    async def broadcast(count: int, size: int) -> None:
        payload = b"b" * size
        targets = list(clients)
        for _ in range(count):
            for ws in targets:
                try:
                    await ws.send_message(payload)
                except ConnectionClosed:
                    clients.discard(ws)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        clients.add(ws)
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, str):
                    command = parse_bcast(message)
                    if command is not None:
                        await broadcast(*command)
                        continue
                await ws.send_message(message)
        except ConnectionClosed:
            pass
        finally:
            clients.discard(ws)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler,
                args.host,
                args.port,
                server_ssl_context(args),
                max_message_size=MAX_MSG_SIZE,
                task_status=task_status,
            )
        )
        emit(f"READY {server.port}")


if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main)
