"""Real-time chat server: the specification's chat example, ported to trio_ws.

Run it and open the printed address in two browser tabs::

    python examples/chat_server.py [--host 127.0.0.1] [--port 8080] [--heartbeat 30]

``--port 0`` picks a free port; the server prints the address it serves on either way
(``======== Running on http://127.0.0.1:8080 ========``). ``--heartbeat SECONDS`` is how long
a connection may be silent before the server pings it (30; ``0`` turns the pings off); a page
that does not answer within half that again is disconnected.

The page (``chat.html``, next to this file) connects to ``/ws`` on the host that served it,
asks for a name, shows who is online, and reconnects with backoff when the server restarts.

The protocol is JSON over WebSocket text messages. The client sends::

    {"type": "join", "username": "alice"}
    {"type": "message", "message": "hello"}

and the server answers with objects whose ``type`` is ``system`` (your own welcome, with the
name you got), ``user_joined``, ``user_left``, ``message`` or ``error``. Every object carries a
human-readable ``message``; the join and leave notices and the welcome also carry ``users``,
the sorted list of names online.

What changed from the specification's version, and why:

* One client that vanished or stopped reading must not stall the room. Each client has a small
  outbox drained by its own writer task, so :meth:`ChatRoom.broadcast` never awaits. A client
  whose outbox is full, or whose send takes longer than ``SEND_TIMEOUT``, is disconnected
  (close code 1008) instead of holding everybody else up. The reader yields after every
  message, so a burst from one client reaches the others' outboxes one line at a time.
* Names are tidied (whitespace, length) and made unique ("alice", "alice (2)").
* JSON that is not an object, unknown types, a message before ``join`` and a second ``join``
  get an ``error`` answer instead of an exception or silence.
* The room belongs to the application (``build_app()`` makes a fresh one), so tests can run
  several servers in one process.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from trio_ws import WSCloseCode, WSMsgType, web

logger = logging.getLogger("chat")

Message = dict[str, Any]

CHAT_PAGE = (Path(__file__).with_name("chat.html")).read_text(encoding="utf-8")
DEFAULT_NAME = "Anonymous"
MAX_NAME_LENGTH = 32
MAX_MESSAGE_LENGTH = 2000
OUTBOX_SIZE = 64  # messages queued for one client before it counts as too slow
SEND_TIMEOUT = 10.0  # seconds one send may take before the client counts as too slow
CLOSE_TIMEOUT = 5.0  # seconds to wait for a disconnected client's close reply
HEARTBEAT = 30.0  # seconds of silence before the server pings a client


@dataclass(eq=False)
class Client:
    """One connected browser: its WebSocket, its outbox and, once joined, its name."""

    ws: web.WebSocketResponse
    outbox: trio.MemorySendChannel[Message]
    username: str | None = None
    kicked: str | None = None  # why the server is disconnecting it, if it is
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def send(self, message: Message) -> bool:
        """Queue ``message`` for this client without waiting; False if it is gone or full."""
        try:
            self.outbox.send_nowait(message)
        except trio.WouldBlock:
            self.kick("too slow: outbox full")
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def kick(self, reason: str) -> None:
        """Disconnect this client from any task; its handler closes the WebSocket."""
        if self.kicked is None:
            self.kicked = reason
            logger.warning("Disconnecting %s: %s", self.username or "a client", reason)
        self.cancel_scope.cancel()


class ChatRoom:
    """Who is online, and the one way to reach all of them."""

    def __init__(self) -> None:
        self.clients: list[Client] = []  # joined clients, in join order

    def usernames(self) -> list[str]:
        return sorted((c.username for c in self.clients if c.username), key=str.casefold)

    def unique_name(self, wanted: str) -> str:
        taken = {c.username for c in self.clients}
        if wanted not in taken:
            return wanted
        for n in range(2, len(taken) + 3):  # one of these is free: there are len(taken) names
            candidate = f"{wanted} ({n})"
            if candidate not in taken:
                return candidate
        raise AssertionError("unreachable")

    def add_client(self, client: Client, username: str) -> None:
        client.username = username
        self.clients.append(client)
        logger.info("User %s joined the chat (%d online)", username, len(self.clients))

    def remove_client(self, client: Client) -> bool:
        """Forget ``client``; True if it had joined (so a leave notice is due)."""
        if client not in self.clients:
            return False
        self.clients.remove(client)
        logger.info("User %s left the chat (%d online)", client.username, len(self.clients))
        return True

    def broadcast(self, message: Message, exclude: Client | None = None) -> None:
        """Queue ``message`` for every joined client but ``exclude``. Never waits."""
        for client in list(self.clients):
            if client is not exclude:
                client.send(message)


CHAT_ROOM = "chat_room"  # the application state key for its ChatRoom
CHAT_HEARTBEAT = "chat_heartbeat"  # ... and for the heartbeat (seconds, or None for none)


def clean_name(raw: object) -> str:
    """A display name from whatever the client sent: trimmed, printable, not too long."""
    if not isinstance(raw, str):
        return DEFAULT_NAME
    name = "".join(ch for ch in raw if ch.isprintable()).strip()[:MAX_NAME_LENGTH].strip()
    return name or DEFAULT_NAME


def handle_message(room: ChatRoom, client: Client, text: str) -> None:
    """Act on one text message from ``client``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        client.send({"type": "error", "message": "Invalid JSON message"})
        return
    if not isinstance(data, dict):
        client.send({"type": "error", "message": "Expected a JSON object"})
        return

    msg_type = data.get("type")
    if msg_type == "join":
        if client.username is not None:
            client.send({"type": "error", "message": f"Already joined as {client.username}"})
            return
        username = room.unique_name(clean_name(data.get("username", DEFAULT_NAME)))
        room.add_client(client, username)
        users = room.usernames()
        # Send welcome message
        client.send(
            {
                "type": "system",
                "username": username,
                "message": f"Welcome {username}!",
                "users": users,
            }
        )
        # Notify others
        room.broadcast(
            {
                "type": "user_joined",
                "username": username,
                "message": f"{username} joined the chat",
                "users": users,
            },
            exclude=client,
        )

    elif msg_type == "message":
        if client.username is None:
            client.send({"type": "error", "message": 'Join first: {"type": "join", ...}'})
            return
        body = data.get("message", "")
        if not isinstance(body, str) or not body.strip():
            client.send({"type": "error", "message": "A message needs some text"})
            return
        if len(body) > MAX_MESSAGE_LENGTH:
            client.send(
                {"type": "error", "message": f"Message too long (max {MAX_MESSAGE_LENGTH})"}
            )
            return
        room.broadcast({"type": "message", "username": client.username, "message": body})

    else:
        client.send({"type": "error", "message": f"Unknown message type: {msg_type!r}"})


async def write_outbox(client: Client, outbox: trio.MemoryReceiveChannel[Message]) -> None:
    """Send what is queued for ``client``, in order. Never raises: it kicks instead."""
    async with outbox:
        async for message in outbox:
            with trio.move_on_after(SEND_TIMEOUT) as timeout:
                try:
                    await client.ws.send_json(message)
                except Exception as exc:
                    logger.info("Send to %s failed: %r", client.username or "a client", exc)
                    client.kick(f"send failed: {exc!r}")
                    return
            if timeout.cancelled_caught:
                client.kick(f"too slow: a send took over {SEND_TIMEOUT:g} s")
                return


async def read_messages(room: ChatRoom, client: Client) -> None:
    """Handle ``client``'s messages until it closes. Never raises but Cancelled."""
    ws = client.ws
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                handle_message(room, client, msg.data)
                # receive() only yields when it has to wait, and one read can hold hundreds
                # of messages: let the writers drain the outboxes between two of them.
                await trio.lowlevel.checkpoint()
            elif msg.type == WSMsgType.BINARY:
                client.send({"type": "error", "message": "Send JSON text, not binary"})
            elif msg.type == WSMsgType.ERROR:
                logger.error("WebSocket error: %r", ws.exception())
                break
    except Exception:
        logger.exception("WebSocket handler error")


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=request.app[CHAT_HEARTBEAT], max_msg_size=64 * 1024)
    await ws.prepare(request)

    room = request.app[CHAT_ROOM]
    outbox_send, outbox_receive = trio.open_memory_channel[Message](OUTBOX_SIZE)
    client = Client(ws, outbox_send)
    try:
        with client.cancel_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_outbox, client, outbox_receive)
                await read_messages(room, client)
                nursery.cancel_scope.cancel()  # the peer is gone: stop its writer
    finally:
        outbox_send.close()
        if room.remove_client(client):
            room.broadcast(
                {
                    "type": "user_left",
                    "username": client.username,
                    "message": f"{client.username} left the chat",
                    "users": room.usernames(),
                },
                exclude=client,
            )

    if client.kicked is not None and not ws.closed:
        with trio.move_on_after(CLOSE_TIMEOUT):
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too slow")
    return ws


# Serve static files (chat UI)
async def index_handler(request: web.Request) -> web.Response:
    return web.Response(text=CHAT_PAGE, content_type="text/html")


def build_app(heartbeat: float | None = HEARTBEAT) -> web.Application:
    """The chat application, with a room of its own.

    ``heartbeat`` is how many idle seconds pass before the server pings a client (None: never).
    Raises ValueError if it is not positive.
    """
    if heartbeat is not None and not heartbeat > 0:
        raise ValueError(f"heartbeat must be positive or None, not {heartbeat!r}")
    app = web.Application()
    app[CHAT_ROOM] = ChatRoom()
    app[CHAT_HEARTBEAT] = heartbeat
    app.router.add_get("/", index_handler)
    app.router.add_get("/ws", websocket_handler)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port, 0 for any free (8080)")
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=HEARTBEAT,
        metavar="SECONDS",
        help=f"ping a client after this many idle seconds, 0 for never ({HEARTBEAT:g})",
    )
    args = parser.parse_args(argv)
    if not args.heartbeat >= 0:  # also rejects nan
        parser.error(f"--heartbeat must be 0 or more, not {args.heartbeat:g}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Prints "======== Running on http://127.0.0.1:8080 ========" with the port it bound, and
    # shuts down gracefully on Ctrl-C or SIGTERM: every browser gets 1001 and reconnects.
    web.run_app(
        build_app(heartbeat=args.heartbeat or None),
        host=args.host,
        port=args.port,
        print=functools.partial(print, flush=True),
    )


if __name__ == "__main__":
    main()
