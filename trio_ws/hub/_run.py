"""``run_app`` for applications with a hub: the hub runs in every serving process."""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Callable

from ..web import Application, ServerLimits
from ..web._run import run_processes
from ._hub import Hub

__all__ = ["run_app"]


def run_app(
    app: Application,
    hub: Hub,
    *,
    host: str | list[str] | None = "0.0.0.0",
    port: int | None = None,
    workers: int = 1,
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
    limits: ServerLimits | None = None,
    print: Callable[..., None] | None = print,
) -> None:
    """Serve ``app`` as :func:`trio_ws.web.run_app` does, with ``hub`` running around it.

    ``hub`` must not be running yet: it is started in each serving process
    before the server accepts connections and stopped after the server's
    graceful shutdown (every WebSocket got 1001). With ``workers > 1`` each
    worker process gets its own copy of ``hub`` (and its own Redis
    connections); without a Redis backend, workers do not see each other's
    messages. Blocks until SIGINT or SIGTERM. Raises ``RuntimeError`` if
    ``hub`` is already running or the workers keep crashing, and ``OSError``
    if the address cannot be bound.
    """
    if hub.running:
        raise RuntimeError("run_app starts the hub itself: pass a hub that is not running")
    if port is None:
        port = 8443 if ssl_context is not None else 8080
    run_processes(
        app,
        workers=workers,
        host=host,
        port=port,
        ssl_context=ssl_context,
        shutdown_timeout=shutdown_timeout,
        limits=limits,
        print=print,
        contexts=[hub],
    )
