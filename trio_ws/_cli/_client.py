"""``python -m trio_ws client``: talk to a WebSocket from the terminal.

Theory of operation: one trio task reads standard input and sends each line
as a text message; another receives messages and writes them to standard
output (``< text``, or ``< [binary N bytes] 0a1b...`` with at most 32 bytes
shown in hex). Notices (connected, closed, errors) go to standard error, so
standard output carries only received messages (see ``_console.py``).

End of input closes the WebSocket with 1000, after ``--wait`` seconds if given
(the engine drops messages that arrive once ``close()`` has begun). Ctrl-C
closes with 1001 (a second Ctrl-C drops the connection at once). The exit
code (``_codes.py``) says how the connection ended.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import AsyncIterator
from typing import Final

import trio

from .. import (
    ClientConnectionResetError,
    ClientError,
    ClientSession,
    ClientWebSocketResponse,
    WSCloseCode,
    WSMessage,
    WSMsgType,
)
from ._codes import EXIT_ABNORMAL, EXIT_CONNECT, EXIT_INTERRUPTED, EXIT_OK
from ._console import Console

__all__ = ["format_message", "run_client"]

_HEX_SHOWN: Final = 32


def format_message(msg: WSMessage) -> str:
    """The line the client prints for a received TEXT or BINARY message.

    ``< text`` for text; ``< [binary N bytes] hex`` for binary, with at most
    the first 32 bytes in hex followed by ``...`` when there are more.
    """
    if msg.type == WSMsgType.TEXT:
        return f"< {msg.data}"
    data: bytes = msg.data
    more = "..." if len(data) > _HEX_SHOWN else ""
    return f"< [binary {len(data)} bytes] {data[:_HEX_SHOWN].hex()}{more}".rstrip()


def _describe_code(code: int | None) -> str:
    if not code:
        return "no status code"
    try:
        return f"{code} {WSCloseCode(code).name}"
    except ValueError:
        return str(code)


class _ClientRun:
    """One interactive connection: the tasks that pump input and output, and the exit code."""

    def __init__(
        self, ws: ClientWebSocketResponse, console: Console, nursery: trio.Nursery, wait: float
    ) -> None:
        self.ws = ws
        self.wait = wait
        self.console = console
        self.nursery = nursery
        self.exit_code = EXIT_OK
        self.closing = False  # we started the close handshake
        self.close_done = trio.Event()
        self.interrupted = False

    async def close(self, code: int) -> None:
        """Run our close handshake once; a later caller waits for the first one."""
        if self.closing:
            await self.close_done.wait()
            return
        self.closing = True
        try:
            await self.ws.close(code=code)
        finally:
            self.close_done.set()

    async def send_input(self) -> None:
        """Send each line of standard input as a text message; close with 1000 at its end."""
        async for line in self.console.lines():
            try:
                await self.ws.send_str(line)
            except ClientConnectionResetError:
                return  # closed meanwhile: print_messages reports how
        if self.wait:
            # --wait: let replies to the last lines arrive (the engine drops
            # messages that arrive once close() has begun, as aiohttp does).
            await trio.sleep(self.wait)
        await self.close(WSCloseCode.OK)

    async def print_messages(self) -> None:
        """Print what arrives until the connection ends, then stop the other tasks."""
        ws = self.ws
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self.console.out(format_message(msg))
                elif msg.type == WSMsgType.ERROR:
                    # The engine has sent the close frame with the error's code.
                    self.exit_code = EXIT_ABNORMAL
                    code = _describe_code(ws.close_code)
                    await self.console.err(f"Protocol error, closed ({code}): {msg.data}")
                    break
                elif msg.type == WSMsgType.CLOSE:
                    await self._server_closed(msg)
                    break
                elif self.closing:
                    await self._finish_our_close()
                    break
                else:
                    self.exit_code = EXIT_ABNORMAL
                    why = ws.exception() or "closed"
                    await self.console.err(
                        f"Connection lost ({_describe_code(ws.close_code)}): {why}"
                    )
                    break
        except trio.BrokenResourceError:
            # Standard output went away (say, a closed pipe): nothing left to show.
            self.exit_code = EXIT_ABNORMAL
            await self.console.err("Standard output is closed: closing with 1001")
            await self.close(WSCloseCode.GOING_AWAY)
        self.nursery.cancel_scope.cancel()

    async def _server_closed(self, msg: WSMessage) -> None:
        code: int | None = msg.data
        reason = f": {msg.extra}" if msg.extra else ""
        await self.console.err(f"Server closed the connection ({_describe_code(code)}){reason}")
        if code and code not in (WSCloseCode.OK, WSCloseCode.GOING_AWAY):
            self.exit_code = EXIT_ABNORMAL

    async def _finish_our_close(self) -> None:
        # receive() reports CLOSED as soon as our close begins (messages queued
        # before it were printed first); wait for the handshake to end.
        await self.close_done.wait()
        code = self.ws.close_code
        if code == WSCloseCode.ABNORMAL_CLOSURE:
            self.exit_code = EXIT_ABNORMAL
            why = self.ws.exception() or "connection lost"
            await self.console.err(f"Close not completed: {why}")
        else:
            await self.console.err(f"Closed ({_describe_code(code)})")

    async def watch_interrupt(self, signals: AsyncIterator[int]) -> None:
        """First Ctrl-C: close with 1001. A second one drops the connection at once."""
        async for _ in signals:
            if self.interrupted:
                self.nursery.cancel_scope.cancel()
                return
            self.interrupted = True
            await self.console.err("Interrupted: closing (Ctrl-C again to quit at once)")
            self.nursery.start_soon(self.close, WSCloseCode.GOING_AWAY)


async def run_client(args: argparse.Namespace) -> int:
    """Connect to ``args.url`` and talk until the connection ends; return the exit code."""
    headers: dict[str, str] = {}
    for name, value in args.header:
        # A repeated name becomes one comma-separated value (RFC 9110, section 5.3).
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connected = False
    async with Console() as console, ClientSession() as session:
        try:
            async with session.ws_connect(
                args.url,
                protocols=args.subprotocol,
                headers=headers,
                ssl=not args.insecure,
                timeout=args.timeout,
            ) as ws:
                connected = True
                # Ctrl-C is ours from here on (before, KeyboardInterrupt ends
                # the run); "Connected" is printed only once it is.
                with trio.open_signal_receiver(signal.SIGINT) as signals:
                    chosen = f" (subprotocol {ws.protocol})" if ws.protocol else ""
                    await console.err(f"Connected to {args.url}{chosen}")
                    async with trio.open_nursery() as nursery:
                        run = _ClientRun(ws, console, nursery, args.wait)
                        nursery.start_soon(run.print_messages)
                        nursery.start_soon(run.send_input)
                        nursery.start_soon(run.watch_interrupt, signals)
        except (ClientError, OSError) as exc:
            if connected:
                raise
            await console.err(f"Cannot connect to {args.url}: {_connect_error(exc)}")
            return EXIT_CONNECT
    return EXIT_INTERRUPTED if run.interrupted else run.exit_code


def _connect_error(exc: ClientError | OSError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
