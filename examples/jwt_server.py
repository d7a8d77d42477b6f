"""WebSocket with authentication: the specification's JWT example on trio_ws.

    python examples/jwt_server.py [--host 127.0.0.1] [--port 8080]

The first message must be ``{"type": "auth", "token": <JWT>}``; a valid token
(HS256, signed with ``SECRET_KEY``) unlocks ``{"type": "ping"}`` and
``{"type": "message", ...}``. An invalid token is answered with ``auth_error``
and the connection is closed. Needs PyJWT (``pip install trio_ws[jwt]``).

Changed from the specification: the key comes from ``JWT_SECRET_KEY`` (the
specification's short key is below HS256's 32 bytes), ``datetime.utcnow()`` (deprecated) became an
aware UTC time, and a message that is not JSON gets an error answer instead of
ending the connection.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os

import jwt

from trio_ws import WSMsgType, web

# HS256 wants a key of at least 32 bytes (PyJWT warns below that); set your own.
SECRET_KEY = os.environ.get("JWT_SECRET_KEY", "your-secret-key-change-me-in-production")


def create_token(username: str) -> str:
    """Create JWT token for user."""
    payload = {
        "username": username,
        "exp": datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    }
    return jwt.encode(payload, SECRET_KEY, algorithm="HS256")


def verify_token(token: str) -> str | None:
    """Verify JWT token."""
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=["HS256"])
        return payload.get("username")  # type: ignore[no-any-return]
    except jwt.ExpiredSignatureError:
        return None
    except jwt.InvalidTokenError:
        return None


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)

    authenticated = False
    username = None

    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    data = msg.json()
                except json.JSONDecodeError:
                    await ws.send_json({"type": "error", "message": "Invalid JSON message"})
                    continue

                if not authenticated:
                    if data.get("type") == "auth":
                        token = data.get("token")
                        username = verify_token(token) if isinstance(token, str) else None

                        if username:
                            authenticated = True
                            await ws.send_json(
                                {"type": "auth_success", "message": f"Welcome {username}!"}
                            )
                        else:
                            await ws.send_json(
                                {"type": "auth_error", "message": "Invalid or expired token"}
                            )
                            break
                    else:
                        await ws.send_json({"type": "error", "message": "Authentication required"})

                else:
                    # Handle authenticated messages
                    if data.get("type") == "ping":
                        await ws.send_json({"type": "pong"})

                    elif data.get("type") == "message":
                        # Process authenticated message
                        await ws.send_json(
                            {"type": "echo", "username": username, "message": data.get("message")}
                        )

            elif msg.type == WSMsgType.ERROR:
                print(f"WebSocket error: {ws.exception()}")
                break

    except Exception as e:
        print(f"WebSocket error: {e}")

    return ws


def build_app() -> web.Application:
    """The application with its WebSocket route at ``/ws``."""
    app = web.Application()
    app.router.add_get("/ws", websocket_handler)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="trio_ws JWT-authenticated server")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    web.run_app(build_app(), host=args.host, port=args.port)
