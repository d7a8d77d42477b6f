"""``run_app``: serve an Application in a new ``trio.run`` until Ctrl-C or SIGTERM.

Theory of operation: :func:`run_app` is the blocking entry point, as
aiohttp's. It builds the application (awaiting a factory inside the trio run),
catches SIGINT and SIGTERM from the start (so Ctrl-C during startup also
shuts down cleanly), runs :func:`~trio_ws.web.serve` in a nursery, and on the
first signal cancels it, which shuts the server down gracefully. With
``workers > 1`` it hands over to :func:`run_processes`, which serves from
several processes (``web/_workers.py``) or, where ``SO_REUSEPORT`` is
missing, from this one. :func:`run_unwrapped` is the ``trio.run`` they all
use: a lone startup error (the port is taken) comes out as itself, never in
an exception group, and Ctrl-C ends the run quietly.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import ssl as _ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from ._app import Application
from ._limits import ServerLimits
from ._reuseport import reuseport_available
from ._serve import Site, serve
from ._worker import ServeOptions, serve_until_signalled
from ._workers import run_workers

__all__ = ["run_app", "run_processes", "run_unwrapped"]

logger = logging.getLogger("trio_ws.server")


def run_app(
    app: Application | Awaitable[Application],
    *,
    host: str | list[str] | None = "0.0.0.0",
    port: int | None = None,
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
    limits: ServerLimits | None = None,
    print: Callable[..., None] | None = print,
    handle_signals: bool = True,
    workers: int = 1,
) -> None:
    """Serve ``app`` in a new ``trio.run`` until Ctrl-C or SIGTERM, as aiohttp's ``run_app``.

    ``port`` defaults to 8080 (8443 with ``ssl_context``). On SIGINT/SIGTERM
    the server shuts down gracefully (WebSockets get 1001) and the call
    returns. ``print`` (or None to stay silent) shows where it listens.
    ``app`` may be an awaitable (``run_app(init_app())``, an async
    application factory), awaited inside the new trio run.
    ``workers > 1`` serves from that many processes sharing the port (see
    ``trio_ws/web/_workers.py``; signals are then always handled). Raises
    ``OSError`` if the address cannot be bound, ``TypeError`` for an
    application factory with ``workers > 1``, and what a startup hook raises.
    """
    if port is None:
        port = 8443 if ssl_context is not None else 8080
    if workers > 1:
        if not isinstance(app, Application):
            raise TypeError("workers > 1 needs an Application, not an application factory")
        run_processes(
            app,
            workers=workers,
            host=host,
            port=port,
            ssl_context=ssl_context,
            shutdown_timeout=shutdown_timeout,
            limits=limits,
            print=print,
        )
        return

    async def main() -> None:
        application = app if isinstance(app, Application) else await app
        # Signals are caught from the start, so Ctrl-C during startup also
        # shuts down cleanly instead of raising KeyboardInterrupt.
        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
            if handle_signals
            else (contextlib.nullcontext(None)) as signals
        ):
            async with trio.open_nursery() as nursery:
                site = await nursery.start(
                    functools.partial(
                        serve,
                        application,
                        host,
                        port,
                        ssl_context=ssl_context,
                        shutdown_timeout=shutdown_timeout,
                        limits=limits,
                    )
                )
                if print is not None:
                    print(f"======== Running on {site.url} ========")
                    print("(Press CTRL+C to quit)")
                if signals is None:
                    await trio.sleep_forever()
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    run_unwrapped(main)


def run_processes(
    app: Application,
    *,
    workers: int,
    host: str | list[str] | None,
    port: int,
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
    limits: ServerLimits | None = None,
    print: Callable[..., None] | None = print,
    contexts: Sequence[AbstractAsyncContextManager[Any]] = (),
) -> None:
    """Serve ``app`` from ``workers`` processes (this one when 1) until SIGINT/SIGTERM.

    ``contexts`` are async context managers entered in every serving process
    around :func:`~trio_ws.web.serve` (how :func:`trio_ws.hub.run_app` runs
    a hub in each worker). Where ``SO_REUSEPORT`` is missing it logs a
    warning and serves from this process. Raises ``OSError`` if the address
    cannot be bound and ``RuntimeError`` when workers keep crashing.
    """
    if workers > 1 and reuseport_available():
        run_workers(
            app,
            workers=workers,
            host=host,
            port=port,
            ssl_context=ssl_context,
            shutdown_timeout=shutdown_timeout,
            limits=limits,
            print=print,
            contexts=contexts,
        )
        return
    if workers > 1:
        logger.warning(
            "SO_REUSEPORT is not available on this platform: serving from one process, not %d",
            workers,
        )
    options = ServeOptions(
        app,
        ssl_context=ssl_context,
        shutdown_timeout=shutdown_timeout,
        limits=limits,
        contexts=contexts,
    )

    def started(site: Site) -> None:
        if print is not None:
            print(f"======== Running on {site.url} ========")
            print("(Press CTRL+C to quit)")

    run_unwrapped(functools.partial(serve_until_signalled, options, started, host=host, port=port))


def run_unwrapped(main: Callable[[], Awaitable[object]]) -> None:
    """``trio.run(main)``, with Ctrl-C ending it quietly and a lone error raised unwrapped.

    Startup failures (e.g. the port is taken) come out of a nursery in an
    exception group; like aiohttp's ``run_app``, raise the one error itself.
    """
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            if isinstance(leaves[0], KeyboardInterrupt):
                return
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
