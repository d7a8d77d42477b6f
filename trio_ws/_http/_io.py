"""Direct writes on a plain socket, for the handshake's one-shot heads.

Theory of operation: ``trio.SocketStream.send_all`` yields to the scheduler
after every write, even one the kernel took whole at once. A handshake head
is small and the socket's buffer empty, so :func:`write_now` writes it with a
non-blocking ``os.write`` on the socket's descriptor (POSIX) and falls back
to ``send_all`` only for what the kernel did not take. It checks for
cancellation first and reports a failed write as ``send_all`` does, so
callers see no difference but the pass saved.
"""

from __future__ import annotations

import errno
import os

import trio

__all__ = ["socket_fd", "write_now"]

_POSIX = os.name == "posix"
# The errors trio reports as ClosedResourceError rather than BrokenResourceError.
_CLOSED_ERRNOS = frozenset((errno.EBADF, errno.ENOTSOCK))


def socket_fd(stream: trio.abc.Stream) -> int:
    """The descriptor of a plain socket stream on POSIX; -1 for any other stream."""
    if _POSIX and isinstance(stream, trio.SocketStream):
        return stream.socket.fileno()
    return -1


async def write_now(stream: trio.abc.Stream, fd: int, data: bytes) -> None:
    """Write ``data`` on ``stream`` as ``send_all`` does; directly first when ``fd`` >= 0.

    Raises what ``send_all`` raises: ``trio.BrokenResourceError`` when the
    peer is gone, ``trio.ClosedResourceError`` when the socket is closed,
    ``trio.Cancelled``.
    """
    if fd >= 0:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            if exc.errno in _CLOSED_ERRNOS:
                raise trio.ClosedResourceError("this socket was already closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        if sent == len(data):
            return
        data = data[sent:]
    await stream.send_all(data)
