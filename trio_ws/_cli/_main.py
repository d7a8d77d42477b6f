"""The ``python -m trio_ws`` command line: arguments, help texts, and the entry point.

Theory of operation: :func:`main` parses the arguments (argparse exits with 2
on a bad command line), then runs the ``client`` command in its own
``trio.run`` (``_client.py``) or the ``echo`` command, whose ``run_app`` runs
trio itself (``_echo.py``). It returns the exit code (``_codes.py``); a Ctrl-C
before the client's connection is open gives 130.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Final

import trio

from .. import __version__
from ._client import run_client
from ._codes import EXIT_INTERRUPTED
from ._echo import run_echo

__all__ = ["build_parser", "main"]

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


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name, value.strip()


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Raises ``SystemExit`` (code 2) for a bad command line, and (code 0)
    after ``--help`` or ``--version``, as argparse does.
    """
    args = build_parser().parse_args(argv)
    if args.command == "echo":
        return run_echo(args)
    try:
        return trio.run(run_client, args)
    except KeyboardInterrupt:  # Ctrl-C before the connection was open
        return EXIT_INTERRUPTED
