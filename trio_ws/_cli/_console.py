"""The terminal for the interactive client: standard input as lines, output and error as text.

Theory of operation: on POSIX the three standard streams are wrapped in
:class:`trio.lowlevel.FdStream` (duplicated descriptors, restored to blocking
mode on exit), so no thread waits on input and a large message cannot make a
write to a non-blocking terminal fail. On Windows a worker thread reads
standard input, abandoned when the client exits, and output is a plain
blocking write. A closed standard output raises ``trio.BrokenResourceError``
(the client then closes with 1001); a closed standard error is ignored.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Final, TextIO

import trio

__all__ = ["Console"]

_READ_SIZE: Final = 64 * 1024


class Console:
    """Standard input as lines, standard output and error as text, all awaited in trio."""

    def __init__(self) -> None:
        self._posix = sys.platform != "win32"  # FdStream exists on POSIX only
        self._stdin: trio.lowlevel.FdStream | None = None
        self._stdout: trio.lowlevel.FdStream | None = None
        self._stderr: trio.lowlevel.FdStream | None = None
        self._out_lock = trio.Lock()
        self._err_lock = trio.Lock()

    async def __aenter__(self) -> Console:
        if sys.platform != "win32":  # (spelled out for type checkers)
            self._stdin = _fd_stream(0)
            self._stdout = _fd_stream(1)
            self._stderr = _fd_stream(2)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Closing an FdStream restores the blocking mode it found. On a terminal
        # the three share one open file, so the one opened first (and found it
        # blocking) must be closed last.
        for stream in (self._stderr, self._stdout, self._stdin):
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def lines(self) -> AsyncIterator[str]:
        """Each line of standard input (without ``\\n`` or ``\\r\\n``), until end of input.

        A last line without a newline is yielded too. A read error counts as
        end of input.
        """
        buffer = b""
        while True:
            data = await self._read()
            if not data:
                break
            buffer += data
            if b"\n" not in data:
                continue
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                yield _decode_line(line)
        if buffer:
            yield _decode_line(buffer)

    async def _read(self) -> bytes:
        if self._posix:
            if self._stdin is None:
                await trio.lowlevel.checkpoint()
                return b""
            try:
                return bytes(await self._stdin.receive_some(_READ_SIZE))
            except trio.BrokenResourceError:
                return b""
        # Windows: one blocking read in a worker thread, abandoned if we exit first.
        try:
            return await trio.to_thread.run_sync(os.read, 0, _READ_SIZE, abandon_on_cancel=True)
        except OSError:
            return b""

    async def out(self, text: str) -> None:
        """Write ``text`` and a newline to standard output.

        Raises ``trio.BrokenResourceError`` when standard output is closed.
        """
        async with self._out_lock:
            await _write(self._stdout, sys.stdout, text)

    async def err(self, text: str) -> None:
        """Write ``text`` and a newline to standard error (ignored if it is closed)."""
        async with self._err_lock:
            with contextlib.suppress(trio.BrokenResourceError):
                await _write(self._stderr, sys.stderr, text)


def _fd_stream(fd: int) -> trio.lowlevel.FdStream | None:
    try:
        return trio.lowlevel.FdStream(os.dup(fd))
    except OSError:  # this standard stream is not open
        return None


async def _write(stream: trio.abc.SendStream | None, file: TextIO | None, text: str) -> None:
    data = (text + "\n").encode("utf-8", "backslashreplace")
    if stream is not None:
        await stream.send_all(data)
        return
    # Windows, or a descriptor that could not be duplicated: a plain blocking write.
    await trio.lowlevel.checkpoint()
    if file is None:
        raise trio.BrokenResourceError("no such standard stream")
    try:
        file.buffer.write(data)
        file.flush()
    except (OSError, ValueError) as exc:
        raise trio.BrokenResourceError(str(exc)) from exc


def _decode_line(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", "replace")
