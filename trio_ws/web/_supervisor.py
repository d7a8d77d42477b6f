"""The supervisor of worker processes: start, watch, restart, stop.

Theory of operation: :class:`Supervisor` runs in the parent process, which
never runs trio, so it can ``fork`` safely. It keeps one :class:`Slot` per
worker position and loops in :meth:`Supervisor.run`, waiting (with
``multiprocessing.connection.wait``) on the ready pipe, the signal wakeup fd
and every worker's sentinel:

* a worker that reports ready on the ready pipe is marked so; once all are,
  the server is announced (once);
* a worker that exits while the server runs is logged and restarted after a
  backoff (``restart_backoff`` doubling up to ``restart_backoff_max``); more
  than ``max_restarts`` restarts within ``restart_window`` seconds record a
  :attr:`Supervisor.failure` and stop the loop;
* a signal (SIGINT or SIGTERM, counted by :meth:`Supervisor.on_signal`) stops
  the loop.

Then :meth:`Supervisor.stop_all` sends SIGTERM to every worker and waits up
to ``shutdown_timeout`` + 5 seconds for them; a second signal, or the
deadline, sends SIGKILL.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from ._worker import Plan, worker_main

__all__ = ["Slot", "Supervisor"]

logger = logging.getLogger("trio_ws.server")

_KILL_GRACE = 5.0  # seconds past shutdown_timeout before stragglers get SIGKILL


@dataclass
class Slot:
    """One worker position: the process in it now, and when it may restart."""

    index: int
    process: BaseProcess | None = None
    restart_at: float | None = None
    ready: bool = False


class Supervisor:
    """Starts, watches, restarts and stops the worker processes (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
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
        self.slots = [Slot(i) for i in range(workers)]
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
        """The SIGINT/SIGTERM handler: count the signal (the wakeup fd ends the wait)."""
        # Runs between two bytecodes of the main loop: record it; the wakeup fd
        # interrupts the wait.
        self.signals += 1

    def start(self, slot: Slot) -> None:
        """Fork a worker process into ``slot``."""
        process = self.context.Process(
            target=worker_main,
            args=(slot.index, self.plan),
            name=f"trio_ws-worker-{slot.index}",
        )
        process.start()
        slot.process = process
        slot.restart_at = None
        slot.ready = False
        logger.info("Worker %d started (pid %s)", slot.index, process.pid)

    def start_all(self) -> None:
        """Fork every worker."""
        for slot in self.slots:
            self.start(slot)

    def run(self, announce: Callable[[], None]) -> None:
        """Supervise until a signal or a :attr:`failure`, then :meth:`stop_all`.

        Calls ``announce()`` once, when every worker has reported ready.
        """
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
        """Collect workers that exited and start those whose backoff has passed."""
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and not process.is_alive():
                process.join()
                slot.process = None
                self.schedule_restart(slot, process, now)
            elif process is None and slot.restart_at is not None and slot.restart_at <= now:
                self.start(slot)

    def schedule_restart(self, slot: Slot, process: BaseProcess, now: float) -> None:
        """Plan ``slot``'s restart after a backoff, or record a failure past the limit."""
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


def _pid(slot: Slot) -> int | None:
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
