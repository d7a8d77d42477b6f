"""Chat on trio_ws.hub: one room shared by every process that serves it.

A simplified ``chat_server.py`` whose messages go through a :class:`trio_ws.hub.Hub`, so that
it can run as several processes::

    python examples/chat_hub.py                                    # one process
    python examples/chat_hub.py --workers 2 --redis redis://127.0.0.1:6379
    python examples/chat_hub.py --port 8081 --redis redis://127.0.0.1:6379   # and a second
    python examples/chat_hub.py --port 8082 --redis redis://127.0.0.1:6379   # server beside it

Open ``http://127.0.0.1:8080/`` (the same ``chat.html`` page as ``chat_server.py``) in two
tabs; with Redis, users connected to different processes see each other's messages.
``--workers`` needs ``--redis``: without it each worker would have a room of its own.

The protocol is the one ``chat_server.py`` speaks (JSON text messages). The client sends
``{"type": "join", "username": ...}`` then ``{"type": "message", "message": ...}``; the server
answers ``system`` (the welcome, only to you), and sends everybody in the room ``user_joined``,
``message`` and ``user_left``; mistakes get ``error``. Every object carries a readable
``message``; the welcome also names the ``server`` process that answered.

Simplified on purpose: names are not made unique and there is no ``users`` list (both need
state shared between processes, such as a Redis set, beyond what a hub does). A user whose
browser stops reading is disconnected with 1013 TRY_AGAIN_LATER once 64 messages wait for
them (the hub's default ``overflow="close"``); the page reconnects and joins again.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import trio

from trio_ws import WSMsgType, web
from trio_ws.hub import Hub, RedisBackend, run_app

logger = logging.getLogger("chat_hub")

CHAT_PAGE = Path(__file__).with_name("chat.html").read_text(encoding="utf-8")
ROOM = "room"  # the one topic
HUB = "hub"  # the application state key for the Hub
DEFAULT_NAME = "Anonymous"
MAX_NAME_LENGTH = 32
MAX_MESSAGE_LENGTH = 2000
LEAVE_TIMEOUT = 1.0  # seconds to publish a leave notice while the handler is being cancelled


def clean_name(raw: object) -> str:
    """A display name from whatever the client sent: printable, trimmed, not too long."""
    if not isinstance(raw, str):
        return DEFAULT_NAME
    name = "".join(ch for ch in raw if ch.isprintable()).strip()[:MAX_NAME_LENGTH].strip()
    return name or DEFAULT_NAME


class ChatSession:
    """One browser's conversation: its WebSocket, and its name once it joined."""

    def __init__(self, ws: web.WebSocketResponse, hub: Hub) -> None:
        self.ws = ws
        self.hub = hub
        self.username: str | None = None

    async def error(self, text: str) -> None:
        await self.ws.send_json({"type": "error", "message": text})

    async def handle(self, text: str) -> None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            await self.error("Invalid JSON message")
            return
        if not isinstance(data, dict):
            await self.error("Expected a JSON object")
            return
        kind = data.get("type")
        if kind == "join":
            await self.join(data.get("username"))
        elif kind == "message":
            await self.say(data.get("message"))
        else:
            await self.error(f"Unknown message type: {kind!r}")

    async def join(self, raw_name: object) -> None:
        if self.username is not None:
            await self.error(f"Already joined as {self.username}")
            return
        name = self.username = clean_name(raw_name)
        await self.ws.send_json(
            {
                "type": "system",
                "username": name,
                "message": f"Welcome {name}!",
                "server": f"pid {os.getpid()}",
            }
        )
        # Announce before subscribing: everybody else hears it, the newcomer does not.
        await self.hub.publish(
            ROOM, {"type": "user_joined", "username": name, "message": f"{name} joined the chat"}
        )
        self.hub.subscribe(self.ws, ROOM)
        logger.info("%s joined", name)

    async def say(self, body: object) -> None:
        if self.username is None:
            await self.error('Join first: {"type": "join", ...}')
        elif not isinstance(body, str) or not body.strip():
            await self.error("A message needs some text")
        elif len(body) > MAX_MESSAGE_LENGTH:
            await self.error(f"Message too long (max {MAX_MESSAGE_LENGTH})")
        else:
            await self.hub.publish(
                ROOM, {"type": "message", "username": self.username, "message": body}
            )

    async def leave(self) -> None:
        """Unsubscribe, then tell the others (briefly, even while being cancelled)."""
        self.hub.unsubscribe(self.ws)
        if self.username is None:
            return
        notice: dict[str, Any] = {
            "type": "user_left",
            "username": self.username,
            "message": f"{self.username} left the chat",
        }
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + LEAVE_TIMEOUT
            await self.hub.publish(ROOM, notice)
        logger.info("%s left", self.username)


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
    await ws.prepare(request)
    session = ChatSession(ws, request.app[HUB])
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await session.error("Send JSON text, not binary")
    finally:
        await session.leave()
    return ws


async def index_handler(request: web.Request) -> web.Response:
    return web.Response(text=CHAT_PAGE, content_type="text/html")


def build_app(hub: Hub) -> web.Application:
    """The chat application, talking through ``hub`` (which the caller runs)."""
    app = web.Application()
    app[HUB] = hub
    app.router.add_get("/", index_handler)
    app.router.add_get("/ws", websocket_handler)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port, 0 for any free (8080)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port (1)")
    parser.add_argument("--redis", metavar="URL", help="share the room through Redis at URL")
    args = parser.parse_args(argv)
    if args.workers > 1 and args.redis is None:
        parser.error("--workers needs --redis: each worker would have a room of its own")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s"
    )
    hub = Hub(RedisBackend(args.redis) if args.redis else None)
    # Prints "======== Running on http://127.0.0.1:8080 ========" once every process serves;
    # Ctrl-C or SIGTERM shuts down gracefully: every browser gets 1001 and reconnects.
    run_app(
        build_app(hub),
        hub,
        host=args.host,
        port=args.port,
        workers=args.workers,
        print=functools.partial(print, flush=True),
    )


if __name__ == "__main__":
    main()
