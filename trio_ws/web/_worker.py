"""One serving process: ``serve`` inside the per-process contexts, until a signal.

Theory of operation: every process that serves (the only one with
``workers=1``, or each forked worker) runs :func:`serve_until_signalled` in
its own ``trio.run``. It catches SIGINT and SIGTERM from the start, opens the
listeners (a worker's own ``SO_REUSEPORT`` sockets, or ``serve``'s usual
ones), enters the :class:`ServeOptions` ``contexts`` (per-process resources
such as a :class:`trio_ws.hub.Hub`), and runs :func:`~trio_ws.web.serve`
until the first signal, which shuts the server down gracefully (every
WebSocket of that process gets 1001) before the contexts are left. A worker
also stops when its supervisor disappears: it holds the read end of a pipe
(``lifeline_fd``) that only the supervisor can write to, so EOF on it means
the supervisor is gone.

:func:`worker_main` is the body of a forked worker process: it undoes what
the supervisor set up for itself (signal handlers, the wakeup fd, the
descriptors it keeps), then serves, and reports its slot number on the ready
pipe once it accepts connections.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import ssl as _ssl
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio

from ._app import Application
from ._limits import ServerLimits
from ._reuseport import open_listeners
from ._serve import Site, serve

__all__ = ["Plan", "ServeOptions", "serve_until_signalled", "worker_main"]

logger = logging.getLogger("trio_ws.server")


@dataclass
class ServeOptions:
    """What every serving process needs: the application and how to serve it.

    ``contexts`` are async context managers entered in each serving process
    around :func:`~trio_ws.web.serve` (and left after its graceful shutdown).
    """

    app: Application
    ssl_context: _ssl.SSLContext | None = None
    shutdown_timeout: float = 10.0
    limits: ServerLimits | None = None
    backlog: int | None = None
    contexts: Sequence[AbstractAsyncContextManager[Any]] = ()


@dataclass
class Plan:
    """What a forked worker inherits from its supervisor."""

    options: ServeOptions
    addresses: list[tuple[socket.AddressFamily, Any]]  # (family, sockaddr) per socket
    ready_fd: int  # write end: a worker writes its slot number once it serves
    lifeline_fd: int  # read end: EOF when the parent is gone
    parent_fds: list[int] = field(default_factory=list)  # closed in each worker


async def serve_until_signalled(
    options: ServeOptions,
    started: Callable[[Site], None],
    *,
    host: str | list[str] | None = None,
    port: int = 0,
    addresses: list[tuple[socket.AddressFamily, Any]] | None = None,
    lifeline_fd: int | None = None,
) -> None:
    """Serve ``options.app`` inside ``options.contexts`` until SIGINT or SIGTERM.

    Listens on ``addresses`` with ``SO_REUSEPORT`` (a worker) or else on
    ``host`` and ``port``; calls ``started(site)`` once it accepts
    connections. Stops as well at EOF on ``lifeline_fd``. Raises ``OSError``
    when it cannot listen, and what a context or a startup hook raises.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        listeners = None
        if addresses is not None:
            listeners = await open_listeners(addresses, options.backlog)
        async with AsyncExitStack() as stack:
            for context in options.contexts:
                await stack.enter_async_context(context)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_signal, signals, nursery.cancel_scope)
                if lifeline_fd is not None:
                    nursery.start_soon(_until_orphaned, lifeline_fd, nursery.cancel_scope)
                site = await nursery.start(
                    functools.partial(
                        serve,
                        options.app,
                        host,
                        port,
                        ssl_context=options.ssl_context,
                        shutdown_timeout=options.shutdown_timeout,
                        limits=options.limits,
                        backlog=options.backlog,
                        listeners=listeners,
                    )
                )
                started(site)


def worker_main(index: int, plan: Plan) -> None:
    """The body of forked worker ``index``: serve until signalled (see the module docstring)."""
    # Undo what the parent set up for itself.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in plan.parent_fds:
        with contextlib.suppress(OSError):
            os.close(fd)

    def ready(site: Site) -> None:
        os.write(plan.ready_fd, index.to_bytes(2, "big"))

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(
            functools.partial(
                serve_until_signalled,
                plan.options,
                ready,
                addresses=plan.addresses,
                lifeline_fd=plan.lifeline_fd,
            )
        )
    sys.stdout.flush()


async def _until_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        break
    scope.cancel()


async def _until_orphaned(fd: int, scope: trio.CancelScope) -> None:
    await trio.lowlevel.wait_readable(fd)  # only EOF can come: the parent never writes
    logger.warning("The supervisor process is gone: worker %d shutting down", os.getpid())
    scope.cancel()
