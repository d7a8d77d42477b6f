"""``python -m trio_ws echo``: a WebSocket echo server.

Theory of operation: one :class:`~trio_ws.web.Application` answers every path:
a WebSocket upgrade gets each text and binary message sent straight back; a
plain GET of ``/`` gets a page saying how to connect; anything else 404.
:func:`~trio_ws.web.run_app` serves it until Ctrl-C or SIGTERM (open
WebSockets get 1001), and an address it cannot listen on is reported on
standard error with exit code 1.
"""

from __future__ import annotations

import argparse
import re
import sys

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from ..web import (
    Application,
    HTTPNotFound,
    Request,
    Response,
    StreamResponse,
    WebSocketResponse,
    WSMsgType,
    run_app,
)
from ._codes import EXIT_ABNORMAL, EXIT_OK

__all__ = ["echo_app", "run_echo"]

_INDEX = """\
trio_ws echo server

Open a WebSocket to {ws_url} (any path works): every text and binary
message is sent straight back. For example:

    python -m trio_ws client {ws_url}
"""


async def _echo(request: Request) -> StreamResponse:
    """Echo every message of a WebSocket on any path; ``/`` without upgrade explains how."""
    ws = WebSocketResponse()
    if not ws.can_prepare(request):
        if request.path != "/":
            raise HTTPNotFound(text="Not a WebSocket request; see / for how to connect.")
        scheme = "wss" if request.secure else "ws"
        return Response(text=_INDEX.format(ws_url=f"{scheme}://{request.host or 'HOST:PORT'}/"))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def echo_app() -> Application:
    """The echo server's application: WebSocket echo on every path, a help page at ``/``."""
    app = Application()
    app.router.add_get("/{path:.*}", _echo)
    return app


def _announce(*args: object) -> None:
    """``run_app``'s ``print``: flushed at once, plus the WebSocket URL to use."""
    text = " ".join(str(arg) for arg in args)
    print(text, flush=True)
    found = re.search(r"Running on http(s?)://(\S+)", text)
    if found:
        print(f"WebSocket echo on ws{found[1]}://{found[2]}/ (any path)", flush=True)


def run_echo(args: argparse.Namespace) -> int:
    """Serve the echo application on ``args.host``/``args.port``; return the exit code."""
    try:
        run_app(echo_app(), host=args.host, port=args.port, print=_announce)
    except BaseException as exc:
        error = _bind_error(exc)
        if error is None:
            raise
        print(f"Cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return EXIT_ABNORMAL
    return EXIT_OK


def _bind_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` in ``exc`` if that is all it holds (``run_app`` may wrap it in a group)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _bind_error(exc.exceptions[0])
    return None
