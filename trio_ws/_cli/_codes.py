"""The command line's exit codes, one constant each (``python -m trio_ws --help`` lists them)."""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_ABNORMAL", "EXIT_CONNECT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE"]

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
