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

Caveats: each worker has its own state (``app[...]``, rooms, caches): share
state through a backend (Redis) instead. When a worker dies, connections that
were waiting in its accept queue are reset by the kernel. Where
``SO_REUSEPORT`` is missing (it is on Linux, the BSDs and macOS), the server
runs in a single process and logs a warning.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import ssl as _ssl
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    pass

from ._app import Application
from ._serve import ServerLimits, run_unwrapped, serve

__all__ = ["reuseport_available", "run_single", "run_workers"]

logger = logging.getLogger("trio_ws.server")

_KILL_GRACE = 5.0  # seconds past shutdown_timeout before stragglers get SIGKILL


def reuseport_available() -> bool:
    """True when this platform lets several sockets listen on one port (``SO_REUSEPORT``)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        return False
    return True


@dataclass
class _Options:
    app: Application
    ssl_context: _ssl.SSLContext | None
    shutdown_timeout: float
    limits: ServerLimits | None
    backlog: int | None
    contexts: Sequence[AbstractAsyncContextManager[Any]]


@dataclass
class _Slot:
    """One worker position: the process in it now, and when it may restart."""

    index: int
    process: BaseProcess | None = None
    restart_at: float | None = None
    ready: bool = False


@dataclass
class _Plan:
    options: _Options
    addresses: list[tuple[socket.AddressFamily, Any]]  # (family, sockaddr) per socket
    ready_fd: int  # write end: a worker writes its slot number once it serves
    lifeline_fd: int  # read end: EOF when the parent is gone
    parent_fds: list[int] = field(default_factory=list)  # closed in each worker


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
    workers keep crashing.
    """
    options = _Options(app, ssl_context, shutdown_timeout, limits, backlog, contexts)
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if not reuseport_available():
        logger.warning(
            "SO_REUSEPORT is not available on this platform: serving from one process, not %d",
            workers,
        )
        run_single(options, host=host, port=port, print=print)
        return
    reservations = _reserve(host, port)
    bound = reservations[0].getsockname()
    addresses = [(sock.family, sock.getsockname()) for sock in reservations]
    ready_r, ready_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    wake_r, wake_w = os.pipe()
    os.set_blocking(ready_r, False)
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    plan = _Plan(
        options,
        addresses,
        ready_w,
        lifeline_r,
        [ready_r, lifeline_w, wake_r, wake_w, *(s.fileno() for s in reservations)],
    )
    url = _url(bound[0], bound[1], ssl_context is not None)
    supervisor = _Supervisor(
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


class _Supervisor:
    def __init__(
        self,
        plan: _Plan,
        workers: int,
        *,
        max_restarts: int,
        restart_window: float,
        restart_backoff: float,
        restart_backoff_max: float,
        shutdown_timeout: float,
        ready_r: int,
        wake_r: int,
    ) -> None:
        self.plan = plan
        self.slots = [_Slot(i) for i in range(workers)]
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.restart_backoff = restart_backoff
        self.restart_backoff_max = restart_backoff_max
        self.shutdown_timeout = shutdown_timeout
        self.ready_r = ready_r
        self.wake_r = wake_r
        self.restarts: collections.deque[float] = collections.deque()
        self.signals = 0
        self.failure: str | None = None
        self.context = multiprocessing.get_context("fork")

    def on_signal(self, signum: int, frame: Any) -> None:
        # Runs between two bytecodes of the main loop: record it; the wakeup fd
        # interrupts the wait.
        self.signals += 1

    def start(self, slot: _Slot) -> None:
        process = self.context.Process(
            target=_worker_main,
            args=(slot.index, self.plan),
            name=f"trio_ws-worker-{slot.index}",
        )
        process.start()
        slot.process = process
        slot.restart_at = None
        slot.ready = False
        logger.info("Worker %d started (pid %s)", slot.index, process.pid)

    def start_all(self) -> None:
        for slot in self.slots:
            self.start(slot)

    def run(self, announce: Callable[[], None]) -> None:
        announced = False
        while not self.signals and self.failure is None:
            now = time.monotonic()
            waits = [s.restart_at - now for s in self.slots if s.restart_at is not None]
            timeout = max(0.0, min(waits)) if waits else None
            handles: list[Any] = [self.ready_r, self.wake_r]
            handles += [s.process.sentinel for s in self.slots if s.process is not None]
            multiprocessing.connection.wait(handles, timeout)
            _drain(self.wake_r)
            for index in _read_ready(self.ready_r):
                slot = self.slots[index]
                slot.ready = True
                logger.info("Worker %d serving (pid %s)", index, _pid(slot))
            if not announced and all(s.ready for s in self.slots):
                announced = True
                announce()
            if self.signals:
                break
            self.reap_and_restart()
        self.stop_all()

    def reap_and_restart(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and not process.is_alive():
                process.join()
                slot.process = None
                self.schedule_restart(slot, process, now)
            elif process is None and slot.restart_at is not None and slot.restart_at <= now:
                self.start(slot)

    def schedule_restart(self, slot: _Slot, process: BaseProcess, now: float) -> None:
        while self.restarts and self.restarts[0] < now - self.restart_window:
            self.restarts.popleft()
        status = _exit_status(process.exitcode)
        if len(self.restarts) >= self.max_restarts:
            self.failure = (
                f"worker {slot.index} (pid {process.pid}) {status}; more than "
                f"{self.max_restarts} restarts within {self.restart_window:g} s: giving up"
            )
            logger.error("%s", self.failure)
            return
        delay = min(self.restart_backoff * 2 ** len(self.restarts), self.restart_backoff_max)
        self.restarts.append(now)
        slot.restart_at = now + delay
        logger.warning(
            "Worker %d (pid %s) %s; restarting it in %.1f s",
            slot.index,
            process.pid,
            status,
            delay,
        )

    def stop_all(self) -> None:
        """SIGTERM every worker, wait for them; SIGKILL on a second signal or the deadline."""
        live = [s.process for s in self.slots if s.process is not None]
        signals_seen = self.signals
        for process in live:
            _signal(process, signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + _KILL_GRACE
        killed = False
        while True:
            live = [p for p in live if p.is_alive()]
            if not live:
                break
            remaining = deadline - time.monotonic()
            if not killed and (remaining <= 0 or self.signals > signals_seen):
                logger.warning("Killing %d worker(s) that did not stop in time", len(live))
                for process in live:
                    _signal(process, signal.SIGKILL)
                killed = True
            timeout = max(0.05, remaining) if not killed else 1.0
            multiprocessing.connection.wait([p.sentinel for p in live] + [self.wake_r], timeout)
            _drain(self.wake_r)
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join()
                slot.process = None


def _signal(process: BaseProcess, signum: int) -> None:
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def _pid(slot: _Slot) -> int | None:
    return slot.process.pid if slot.process is not None else None


def _exit_status(code: int | None) -> str:
    if code is None:
        return "vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by {name}"
    return f"exited with code {code}"


def _drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _read_ready(fd: int) -> list[int]:
    data = _drain(fd)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)]


def _url(host: str, port: int, secure: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if secure else 'http'}://{shown}:{port}"


def _reuse(sock: Any) -> None:
    """Set the options every socket of the group needs (plain or trio socket)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def _reserve(host: str | list[str] | None, port: int) -> list[socket.socket]:
    """Bind (never listen) one socket per address, all on one port.

    A fixed port is first bound without ``SO_REUSEPORT``: if another server
    (say a second copy of this one) already holds it, that fails with
    ``EADDRINUSE`` instead of silently sharing the port with it.
    """
    hosts = host if isinstance(host, list) else [host]
    infos = []
    for h in hosts:
        infos += socket.getaddrinfo(h, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, type_, proto, _, sockaddr in infos:
            if (family, sockaddr[:2]) in seen:
                continue
            seen.add((family, sockaddr[:2]))
            if sockets:  # port 0: every address on the port the first one got
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            if sockaddr[1] != 0:
                with socket.socket(family, type_, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    probe.bind(sockaddr)
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            _reuse(sock)
            sock.bind(sockaddr)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def _open_listeners(
    addresses: list[tuple[socket.AddressFamily, Any]], backlog: int | None
) -> list[trio.SocketListener]:
    """The worker's own listening sockets: ``SO_REUSEPORT`` on the reserved addresses."""
    listeners: list[trio.SocketListener] = []
    try:
        for family, sockaddr in addresses:
            sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
            try:
                _reuse(sock)
                await sock.bind(sockaddr)
                sock.listen(backlog if backlog is not None else socket.SOMAXCONN)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def _worker_main(index: int, plan: _Plan) -> None:
    """The body of a forked worker process."""
    # Undo what the parent set up for itself.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in plan.parent_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_worker, index, plan)
    sys.stdout.flush()


async def _worker(index: int, plan: _Plan) -> None:
    options = plan.options
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        listeners = await _open_listeners(plan.addresses, options.backlog)
        async with AsyncExitStack() as stack:
            for context in options.contexts:
                await stack.enter_async_context(context)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_signal, signals, nursery.cancel_scope)
                nursery.start_soon(_until_orphaned, plan.lifeline_fd, nursery.cancel_scope)
                await nursery.start(
                    functools.partial(
                        serve,
                        options.app,
                        listeners=listeners,
                        ssl_context=options.ssl_context,
                        shutdown_timeout=options.shutdown_timeout,
                        limits=options.limits,
                    )
                )
                os.write(plan.ready_fd, index.to_bytes(2, "big"))


async def _until_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        break
    scope.cancel()


async def _until_orphaned(fd: int, scope: trio.CancelScope) -> None:
    await trio.lowlevel.wait_readable(fd)  # only EOF can come: the parent never writes
    logger.warning("The supervisor process is gone: worker %d shutting down", os.getpid())
    scope.cancel()


def run_single(
    options: _Options,
    *,
    host: str | list[str] | None,
    port: int,
    print: Callable[..., None] | None = print,
) -> None:
    """One process: ``serve`` inside ``options.contexts`` until SIGINT/SIGTERM."""

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with AsyncExitStack() as stack:
                for context in options.contexts:
                    await stack.enter_async_context(context)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_until_signal, signals, nursery.cancel_scope)
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
                        )
                    )
                    if print is not None:
                        print(f"======== Running on {site.url} ========")
                        print("(Press CTRL+C to quit)")

    run_unwrapped(main)


def make_options(
    app: Application,
    *,
    ssl_context: _ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
    limits: ServerLimits | None = None,
    backlog: int | None = None,
    contexts: Sequence[AbstractAsyncContextManager[Any]] = (),
) -> _Options:
    """Bundle what every serving process needs (for :func:`run_single`)."""
    return _Options(app, ssl_context, shutdown_timeout, limits, backlog, contexts)
