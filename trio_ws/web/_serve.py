"""``serve``: run an Application's server in a nursery, for ``nursery.start``.

Theory of operation: :func:`serve` binds its listeners (or takes the ones it
is given), runs the startup hooks, and reports a :class:`Site` to
``nursery.start``. The server's connections (``web/_server.py``) run in one
nursery inside a scope that :func:`serve` shields from the caller's
cancellation, so that when the caller cancels, the server can still stop
gracefully: close the listeners, run ``on_shutdown`` hooks, close idle
keep-alive connections, send 1001 GOING_AWAY to every open WebSocket, wait up
to ``shutdown_timeout`` for handlers to return, cancel what is left, run
``on_cleanup`` hooks, and re-raise the cancellation. Nothing that goes wrong in
one connection ends :func:`serve`: it ends only when cancelled or when a
listener itself fails.

Who owns which task: :func:`serve` owns the server's nursery; the server owns
one task per TCP connection; each connection's task owns its handler and,
after ``prepare()``, that WebSocket's reader, writer and heartbeat.
"""

from __future__ import annotations

import logging
import ssl as _ssl
from dataclasses import dataclass, field

import trio

from ._app import Application
from ._limits import ServerLimits
from ._server import _Server

__all__ = ["Site", "serve"]

logger = logging.getLogger("trio_ws.server")


@dataclass
class Site:
    """What :func:`serve` reports to ``nursery.start``: where it listens."""

    host: str
    port: int
    ports: list[int]
    listeners: list[trio.SocketListener] = field(repr=False)
    secure: bool = False

    @property
    def url(self) -> str:
        """``http://host:port`` (or ``https``) of the first listener."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.secure else 'http'}://{host}:{self.port}"


async def serve(
    app: Application,
    host: str | list[str] | None = "127.0.0.1",
    port: int = 8080,
    *,
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
    limits: ServerLimits | None = None,
    backlog: int | None = None,
    listeners: list[trio.SocketListener] | None = None,
    run_hooks: bool = True,
    task_status: trio.TaskStatus[Site] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; use with ``await nursery.start(serve, app, host, port)``.

    ``port=0`` picks a free port; ``nursery.start`` returns a :class:`Site`
    with the bound ``port`` (and every bound port in ``ports``). With
    ``ssl_context`` it serves HTTPS/WSS through :class:`trio.SSLStream`.
    Runs ``on_startup`` hooks before reporting started. When cancelled it shuts
    down gracefully (see the module documentation) within
    ``shutdown_timeout`` seconds, then re-raises the cancellation. Raises
    ``OSError`` if the address cannot be bound. ``listeners`` (already
    listening) replace ``host``, ``port`` and ``backlog``; ``serve`` closes them.
    ``run_hooks=False`` leaves the application's hooks to the caller (as
    :class:`~trio_ws.web.AppRunner` does, once for all its sites).
    """
    if listeners is None:
        hosts = host if isinstance(host, list) else [host]
        listeners = []
        for h in hosts:
            listeners.extend(await trio.open_tcp_listeners(port, host=h, backlog=backlog))
    server = _Server(app, limits or ServerLimits(), ssl_context, run_hooks)
    try:
        if run_hooks:
            await app.startup()
        ports = [listener.socket.getsockname()[1] for listener in listeners]
        shield = trio.CancelScope(shield=True)
        async with trio.open_nursery() as outer:

            async def run_connections() -> None:
                with shield:
                    await server.run(listeners)

            outer.start_soon(run_connections)
            task_status.started(
                Site(
                    host=str(listeners[0].socket.getsockname()[0]),
                    port=ports[0],
                    ports=ports,
                    listeners=listeners,
                    secure=ssl_context is not None,
                )
            )
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
                    await server.shutdown(shutdown_timeout)
                    shield.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            try:
                if run_hooks:
                    await app.cleanup()
            except Exception:
                logger.exception("on_cleanup hook failed")
