"""WebSocket client: the specification's client example on trio_ws.

    python examples/client.py [ws://localhost:8080/ws]

Only the imports and ``asyncio.run`` → ``trio.run`` changed, plus one addition:
against ``examples/echo_server.py`` the loop stops once the echo of the JSON
greeting arrived (the specification's loop runs until the server closes).
"""

from __future__ import annotations

import sys

import trio

import trio_ws


async def websocket_client(url: str = "ws://localhost:8080/ws") -> None:
    session = trio_ws.ClientSession()

    try:
        async with session.ws_connect(url) as ws:
            # Send messages
            await ws.send_str("Hello, Server!")
            await ws.send_json({"type": "greeting", "message": "Hello"})
            await ws.send_json({"type": "echo", "message": "Hello"})

            # Receive messages
            async for msg in ws:
                if msg.type == trio_ws.WSMsgType.TEXT:
                    print(f"Received text: {msg.data}")
                    if '"echo_response"' in msg.data:
                        break
                elif msg.type == trio_ws.WSMsgType.BINARY:
                    print(f"Received binary: {msg.data}")
                elif msg.type == trio_ws.WSMsgType.ERROR:
                    print(f"WebSocket error: {ws.exception()}")
                    break
                elif msg.type == trio_ws.WSMsgType.CLOSE:
                    print("WebSocket closed")
                    break

    finally:
        await session.close()


if __name__ == "__main__":
    trio.run(websocket_client, *sys.argv[1:2])
