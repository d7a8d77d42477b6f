"""``python -m trio_ws``: an interactive WebSocket client and an echo server.

    python -m trio_ws client ws://HOST:PORT/PATH [--header 'Name: value'] [--subprotocol P]
                             [--insecure] [--wait SECONDS] [--timeout SECONDS]
    python -m trio_ws echo [--host 127.0.0.1] [--port 8080]

Theory of operation (client): one trio task reads standard input and sends
each line as a text message; another receives messages and writes them to
standard output (``< text``, or ``< [binary N bytes] 0a1b...`` with at most 32
bytes shown in hex). Notices (connected, closed, errors) go to standard error,
so standard output carries only received messages. On POSIX the three
standard streams are wrapped in :class:`trio.lowlevel.FdStream` (duplicated
descriptors, restored to blocking mode on exit), so no thread waits on input
and a large message cannot make a write to a non-blocking terminal fail. On
Windows a worker thread reads standard input, abandoned when the client exits.

End of input closes the WebSocket with 1000, after ``--wait`` seconds if given
(the engine drops messages that arrive once ``close()`` has begun). Ctrl-C
closes with 1001 (a second Ctrl-C drops the connection at once).

Exit codes are the ``EXIT_*`` constants below.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Final, TextIO

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from . import __version__
from ._client._session import ClientSession
from ._client._ws import ClientWebSocketResponse
from ._exceptions import ClientConnectionResetError, ClientError
from ._models import WSCloseCode, WSMessage, WSMsgType
from .web import (
    Application,
    HTTPNotFound,
    Request,
    Response,
    StreamResponse,
    WebSocketResponse,
    run_app,
)

__all__ = [
    "EXIT_ABNORMAL",
    "EXIT_CONNECT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "echo_app",
    "format_message",
    "main",
]

EXIT_OK: Final = 0
"""The connection ended normally: our close (end of input) was answered, or the
server closed with 1000 OK or 1001 GOING_AWAY. The echo server stopped on Ctrl-C/SIGTERM."""
EXIT_ABNORMAL: Final = 1
"""The connection ended otherwise: another close code, a protocol error, a lost
connection, an unanswered close, or standard output went away. The echo server
could not listen on the address."""
EXIT_USAGE: Final = 2
"""Bad command line (argparse's own exit code)."""
EXIT_CONNECT: Final = 3
"""The client could not connect: bad URL, name resolution, refused, TLS,
handshake rejected by the server, or timeout."""
EXIT_INTERRUPTED: Final = 130
"""The client was interrupted with Ctrl-C (SIGINT)."""

_HEX_SHOWN: Final = 32
_READ_SIZE: Final = 64 * 1024

_CLIENT_HELP = """\
Connect to URL and talk to it from the terminal.

Each line typed (or piped) on standard input is sent as a text message. Each
message received is printed on standard output as '< text', or as
'< [binary N bytes] 0a1b...' (at most the first 32 bytes, in hex). Notices
(connected, closed, errors) go to standard error.

End of input (Ctrl-D) closes the connection with 1000, after --wait seconds
during which replies are still printed (once the close begins, later replies
are dropped). Ctrl-C closes with 1001; a second Ctrl-C quits at once. When
the server closes, its close code is printed on standard error and the client
exits.
"""

_ECHO_HELP = """\
Run a WebSocket echo server: on every path, each text or binary message is
sent back as it came. A plain HTTP GET of / answers with how to connect.

Once listening it prints '======== Running on http://HOST:PORT ========' (with
--port 0, PORT is the one the system picked) and the ws:// URL to use. Ctrl-C
or SIGTERM stops it gracefully: open WebSockets are closed with 1001.
"""

_EPILOG = """\
exit codes:
  0    closed normally (end of input answered, or server closed with 1000/1001)
  1    closed abnormally (other close code, error, connection lost)
  2    bad command line
  3    could not connect (URL, DNS, refused, TLS, handshake rejected, timeout)
  130  interrupted with Ctrl-C
"""


# ------------------------------------------------------------------ console


class _Console:
    """Standard input as lines, standard output and error as text, all awaited in trio."""

    def __init__(self) -> None:
        self._posix = sys.platform != "win32"  # FdStream exists on POSIX only
        self._stdin: trio.lowlevel.FdStream | None = None
        self._stdout: trio.lowlevel.FdStream | None = None
        self._stderr: trio.lowlevel.FdStream | None = None
        self._out_lock = trio.Lock()
        self._err_lock = trio.Lock()

    async def __aenter__(self) -> _Console:
        if sys.platform != "win32":  # (spelled out for type checkers)
            self._stdin = _fd_stream(0)
            self._stdout = _fd_stream(1)
            self._stderr = _fd_stream(2)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Closing an FdStream restores the blocking mode it found. On a terminal
        # the three share one open file, so the one opened first (and found it
        # blocking) must be closed last.
        for stream in (self._stderr, self._stdout, self._stdin):
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def lines(self) -> AsyncIterator[str]:
        """Each line of standard input (without ``\\n`` or ``\\r\\n``), until end of input.

        A last line without a newline is yielded too. A read error counts as
        end of input.
        """
        buffer = b""
        while True:
            data = await self._read()
            if not data:
                break
            buffer += data
            if b"\n" not in data:
                continue
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                yield _decode_line(line)
        if buffer:
            yield _decode_line(buffer)

    async def _read(self) -> bytes:
        if self._posix:
            if self._stdin is None:
                await trio.lowlevel.checkpoint()
                return b""
            try:
                return bytes(await self._stdin.receive_some(_READ_SIZE))
            except trio.BrokenResourceError:
                return b""
        # Windows: one blocking read in a worker thread, abandoned if we exit first.
        try:
            return await trio.to_thread.run_sync(os.read, 0, _READ_SIZE, abandon_on_cancel=True)
        except OSError:
            return b""

    async def out(self, text: str) -> None:
        """Write ``text`` and a newline to standard output.

        Raises ``trio.BrokenResourceError`` when standard output is closed.
        """
        async with self._out_lock:
            await _write(self._stdout, sys.stdout, text)

    async def err(self, text: str) -> None:
        """Write ``text`` and a newline to standard error (ignored if it is closed)."""
        async with self._err_lock:
            with contextlib.suppress(trio.BrokenResourceError):
                await _write(self._stderr, sys.stderr, text)


def _fd_stream(fd: int) -> trio.lowlevel.FdStream | None:
    try:
        return trio.lowlevel.FdStream(os.dup(fd))
    except OSError:  # this standard stream is not open
        return None


async def _write(stream: trio.abc.SendStream | None, file: TextIO | None, text: str) -> None:
    data = (text + "\n").encode("utf-8", "backslashreplace")
    if stream is not None:
        await stream.send_all(data)
        return
    # Windows, or a descriptor that could not be duplicated: a plain blocking write.
    await trio.lowlevel.checkpoint()
    if file is None:
        raise trio.BrokenResourceError("no such standard stream")
    try:
        file.buffer.write(data)
        file.flush()
    except (OSError, ValueError) as exc:
        raise trio.BrokenResourceError(str(exc)) from exc


def _decode_line(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", "replace")


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


# ------------------------------------------------------------------- client


class _ClientRun:
    """One interactive connection: the tasks that pump input and output, and the exit code."""

    def __init__(
        self, ws: ClientWebSocketResponse, console: _Console, nursery: trio.Nursery, wait: float
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


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name, value.strip()


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


async def _run_client(args: argparse.Namespace) -> int:
    headers: dict[str, str] = {}
    for name, value in args.header:
        # A repeated name becomes one comma-separated value (RFC 9110, section 5.3).
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connected = False
    async with _Console() as console, ClientSession() as session:
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


# --------------------------------------------------------------------- echo


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


def _run_echo(args: argparse.Namespace) -> int:
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


# ---------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m trio_ws`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_ws",
        description="trio_ws command line: an interactive WebSocket client and an echo server.",
        epilog="Run 'python -m trio_ws COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"trio_ws {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    client = commands.add_parser(
        "client",
        help="connect to a WebSocket and talk to it from the terminal",
        description=_CLIENT_HELP,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    client.add_argument("url", metavar="URL", help="ws:// or wss:// URL to connect to")
    client.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        type=_parse_header,
        metavar="'NAME: VALUE'",
        help="extra handshake header (repeat for more)",
    )
    client.add_argument(
        "-p",
        "--subprotocol",
        action="append",
        default=[],
        metavar="PROTOCOL",
        help="subprotocol to offer, in order of preference (repeat for more)",
    )
    client.add_argument(
        "-k",
        "--insecure",
        action="store_true",
        help="for wss://, do not verify the server's certificate or host name",
    )
    client.add_argument(
        "-w",
        "--wait",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="at end of input, keep printing messages this long before closing "
        "(default: %(default)s)",
    )
    client.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="limit for connecting plus the handshake, and for the close handshake "
        "(default: %(default)s)",
    )

    echo = commands.add_parser(
        "echo",
        help="run a WebSocket echo server",
        description=_ECHO_HELP,
        epilog="exit codes:\n  0  stopped by Ctrl-C/SIGTERM\n  1  cannot listen on the "
        "address\n  2  bad command line\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    echo.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    echo.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="port to listen on, 0 for any free port (default: %(default)s)",
    )
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Raises ``SystemExit`` (code 2) for a bad command line, and (code 0)
    after ``--help`` or ``--version``, as argparse does.
    """
    args = build_parser().parse_args(argv)
    if args.command == "echo":
        return _run_echo(args)
    try:
        return trio.run(_run_client, args)
    except KeyboardInterrupt:  # Ctrl-C before the connection was open
        return EXIT_INTERRUPTED
