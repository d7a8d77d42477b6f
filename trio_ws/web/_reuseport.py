"""Sockets that share one port (``SO_REUSEPORT``), for worker processes.

Theory of operation: the supervisor binds one *reservation* socket per
address (:func:`reserve`), bound but never listening, which fixes the port
(``port=0`` picks one) and keeps it through the workers' restarts. Each
worker then binds its own listening socket on the same address with the same
options (:func:`open_listeners`), and the kernel spreads new connections over
the listening ones. Every socket of the group gets the options of
:func:`reuse`: a socket without ``SO_REUSEPORT`` could not join.
"""

from __future__ import annotations

import socket
from typing import Any

import trio

__all__ = ["open_listeners", "reserve", "reuse", "reuseport_available"]


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


def reuse(sock: Any) -> None:
    """Set the options every socket of the group needs (plain or trio socket)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def reserve(host: str | list[str] | None, port: int) -> list[socket.socket]:
    """Bind (never listen) one socket per address, all on one port.

    A fixed port is first bound without ``SO_REUSEPORT``: if another server
    (say a second copy of this one) already holds it, that fails with
    ``EADDRINUSE`` instead of silently sharing the port with it. Raises
    ``OSError`` when an address cannot be resolved or bound.
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
            reuse(sock)
            sock.bind(sockaddr)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def open_listeners(
    addresses: list[tuple[socket.AddressFamily, Any]], backlog: int | None
) -> list[trio.SocketListener]:
    """A worker's own listening sockets: ``SO_REUSEPORT`` on the reserved addresses.

    Raises ``OSError`` when one cannot be bound (none is left open then).
    """
    listeners: list[trio.SocketListener] = []
    try:
        for family, sockaddr in addresses:
            sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
            try:
                reuse(sock)
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
