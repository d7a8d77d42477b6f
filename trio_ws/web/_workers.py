"""Several worker processes serving one port: ``run_app(app, workers=N)``.

Theory of operation
-------------------
The parent process is a small synchronous supervisor; it never runs trio, so
it can ``fork`` safely. It

1. resolves the address and binds one *reservation* socket per address with
   ``SO_REUSEADDR`` and ``SO_REUSEPORT`` (bound, never listening), which fixes
   the port (``port=0`` picks one) and keeps it for the workers' restarts;
2. forks ``workers`` children from the already built application
   (``multiprocessing`` with the ``fork`` start method: nothing is pickled,
   and the application need not be importable by name);
3. supervises them: a worker that exits while the server runs is logged and
   restarted after a backoff (``restart_backoff`` doubling up to
   ``restart_backoff_max``); more than ``max_restarts`` restarts within
   ``restart_window`` seconds stop the whole server with ``RuntimeError``;
4. on SIGINT or SIGTERM sends SIGTERM to every worker and waits up to
   ``shutdown_timeout`` + 5 seconds for them (a second signal, or the deadline,
   sends SIGKILL).

Each worker runs its own ``trio.run``: it opens its own listening sockets with
``SO_REUSEPORT`` on the same address (the kernel spreads new connections over
the workers' sockets), enters the ``contexts`` it was given (per-process
resources such as a :class:`trio_ws.hub.Hub`), runs :func:`serve` on its
listeners, and on SIGINT/SIGTERM shuts down gracefully: every WebSocket of
that worker gets 1001 GOING_AWAY. A worker also stops when the parent
disappears (it holds the read end of a pipe only the parent can write to).

The modules: ``_reuseport.py`` (the shared port), ``_supervisor.py`` (the
parent's loop), ``_worker.py`` (what each serving process runs, also used by
the single-process ``run_app``); ``_run.py`` chooses between one process and
several (``run_processes``).

Caveats: each worker has its own state (``app[...]``, rooms, caches): share
state through a backend (Redis) instead. When a worker dies, connections that
were waiting in its accept queue are reset by the kernel. Where
``SO_REUSEPORT`` is missing (it is on Linux, the BSDs and macOS), the server
runs in a single process and logs a warning.
"""

from __future__ import annotations

import os
import signal
import ssl as _ssl
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from ._app import Application
from ._limits import ServerLimits
from ._reuseport import reserve, reuseport_available
from ._supervisor import Supervisor
from ._worker import Plan, ServeOptions

__all__ = ["run_workers"]


def run_workers(
    app: Application,
    *,
    workers: int,
    host: str | list[str] | None,
    port: int,
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
    limits: ServerLimits | None = None,
    print: Callable[..., None] | None = print,
    backlog: int | None = None,
    contexts: Sequence[AbstractAsyncContextManager[Any]] = (),
    max_restarts: int = 10,
    restart_window: float = 60.0,
    restart_backoff: float = 0.5,
    restart_backoff_max: float = 10.0,
) -> None:
    """Serve ``app`` from ``workers`` processes sharing one port, until SIGINT/SIGTERM.

    Blocks like :func:`run_app` (see the module documentation for what the
    parent and each worker do). ``contexts`` are async context managers
    entered in every serving process around :func:`serve`. Raises
    ``OSError`` if the address cannot be bound and ``RuntimeError`` when the
    workers keep crashing, or where ``SO_REUSEPORT`` is missing
    (``run_processes`` in ``_run.py`` serves from one process then).
    """
    options = ServeOptions(app, ssl_context, shutdown_timeout, limits, backlog, contexts)
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if not reuseport_available():
        raise RuntimeError("SO_REUSEPORT is not available on this platform")
    reservations = reserve(host, port)
    bound = reservations[0].getsockname()
    addresses = [(sock.family, sock.getsockname()) for sock in reservations]
    ready_r, ready_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    wake_r, wake_w = os.pipe()
    os.set_blocking(ready_r, False)
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    plan = Plan(
        options,
        addresses,
        ready_w,
        lifeline_r,
        [ready_r, lifeline_w, wake_r, wake_w, *(s.fileno() for s in reservations)],
    )
    url = _url(bound[0], bound[1], ssl_context is not None)
    supervisor = Supervisor(
        plan,
        workers,
        max_restarts=max_restarts,
        restart_window=restart_window,
        restart_backoff=restart_backoff,
        restart_backoff_max=restart_backoff_max,
        shutdown_timeout=shutdown_timeout,
        ready_r=ready_r,
        wake_r=wake_r,
    )
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    previous_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    try:
        for sig in signals:
            signal.signal(sig, supervisor.on_signal)
        supervisor.start_all()

        def announce() -> None:
            if print is not None:
                print(f"======== Running on {url} ========")
                print(f"({workers} worker processes; press CTRL+C to quit)")

        supervisor.run(announce)
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        for fd in (ready_r, ready_w, lifeline_r, lifeline_w, wake_r, wake_w):
            os.close(fd)
        for sock in reservations:
            sock.close()
    if supervisor.failure is not None:
        raise RuntimeError(supervisor.failure)


def _url(host: str, port: int, secure: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if secure else 'http'}://{shown}:{port}"
