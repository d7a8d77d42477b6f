"""``ServerLimits``: what one client may send before its WebSocket opens."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServerLimits"]


@dataclass(frozen=True)
class ServerLimits:
    """Limits on what one client may send before its WebSocket opens.

    * ``max_head_size`` (16 KiB): request line plus headers; past it 431.
    * ``max_headers`` (100): header count; past it 431.
    * ``head_timeout`` (10 s): time for a started request head to arrive
      (slowloris); past it 408 and the connection is closed.
    * ``keepalive_timeout`` (75 s): idle time between requests before an idle
      keep-alive connection is closed.
    * ``max_connections`` (None): open connections; past it new ones get 503.
    * ``tls_handshake_timeout`` (10 s): a TLS handshake must finish by then.
    """

    max_head_size: int = 16 * 1024
    max_headers: int = 100
    head_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_connections: int | None = None
    tls_handshake_timeout: float = 10.0
