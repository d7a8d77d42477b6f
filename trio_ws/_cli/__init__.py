"""``python -m trio_ws``: an interactive WebSocket client and an echo server.

    python -m trio_ws client ws://HOST:PORT/PATH [--header 'Name: value'] [--subprotocol P]
                             [--insecure] [--wait SECONDS] [--timeout SECONDS]
    python -m trio_ws echo [--host 127.0.0.1] [--port 8080]

The modules, one job each: ``_main`` (arguments, help, the entry point),
``_client`` (the interactive client), ``_console`` (the terminal in trio),
``_echo`` (the echo server), ``_codes`` (the exit codes).
"""

from ._client import format_message
from ._codes import EXIT_ABNORMAL, EXIT_CONNECT, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ._echo import echo_app
from ._main import build_parser, main

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
