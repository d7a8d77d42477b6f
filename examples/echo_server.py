"""WebSocket server: the specification's echo + broadcast example on trio_ws.

    python examples/echo_server.py [--host 127.0.0.1] [--port 8080]

Clients send JSON text messages: ``{"type": "echo", "message": ...}`` is answered
with ``{"type": "echo_response", "message": ...}``; ``{"type": "broadcast",
"message": ...}`` is sent to every connected client as ``{"type": "broadcast", ...}``.

Changed from the specification, because its version had bugs:

* a message that is not valid JSON gets ``{"type": "error", ...}`` instead of
  ending the handler (and so the connection) through the catch-all ``except``;
* a broadcast skips, rather than stops at, a client that vanished mid-loop, and
  iterates over a snapshot (the set may change while it awaits).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import weakref

from trio_ws import ClientConnectionResetError, WSMsgType, web

# Store active WebSocket connections
websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)

    # Add to active connections
    websockets.add(ws)

    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    data = msg.json()
                except json.JSONDecodeError:
                    await ws.send_json({"type": "error", "message": "Invalid JSON message"})
                    continue

                if data.get("type") == "echo":
                    # Echo message back
                    await ws.send_json({"type": "echo_response", "message": data.get("message")})

                elif data.get("type") == "broadcast":
                    # Broadcast to all connections
                    message = data.get("message")
                    for websocket in list(websockets):
                        if not websocket.closed:
                            # A client that went away meanwhile is skipped, not fatal.
                            with contextlib.suppress(ClientConnectionResetError):
                                await websocket.send_json({"type": "broadcast", "message": message})

            elif msg.type == WSMsgType.ERROR:
                print(f"WebSocket error: {ws.exception()}")
                break

    except Exception as e:
        print(f"WebSocket handler error: {e}")

    finally:
        websockets.discard(ws)

    return ws


def build_app() -> web.Application:
    """The application with its WebSocket route at ``/ws``."""
    app = web.Application()
    app.router.add_get("/ws", websocket_handler)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trio_ws echo + broadcast server")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    web.run_app(build_app(), host=args.host, port=args.port)
