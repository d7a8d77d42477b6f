"""Value objects for ``ws_connect``'s options: ``ClientWSTimeout`` and ``Fingerprint``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientWSTimeout", "Fingerprint"]


@dataclass(frozen=True)
class ClientWSTimeout:
    """The WebSocket timeouts of ``ws_connect(timeout=...)``, as ``aiohttp.ClientWSTimeout``.

    ``ws_receive`` bounds each ``receive()`` (``None``: no bound), as
    ``receive_timeout`` does; ``ws_close`` bounds ``close()``'s wait for the
    server's close frame (``None``: no bound, as in aiohttp). Both default to
    ``None``. The connect and upgrade keep their own bound of 10 seconds (aiohttp
    takes it from the session's ``ClientTimeout``, which trio_ws does not
    have): wrap ``ws_connect`` in ``trio.fail_after`` for another one.
    Raises ``ValueError`` for a negative value.
    """

    ws_receive: float | None = None
    ws_close: float | None = None

    def __post_init__(self) -> None:
        for name in ("ws_receive", "ws_close"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value!r}")


class Fingerprint:
    """``ssl=Fingerprint(digest)``: accept exactly the server certificate with this SHA-256 digest.

    The certificate chain and host name are not verified; the connection
    fails with :class:`~trio_ws.ServerFingerprintMismatch` unless the
    certificate's SHA-256 digest (of its DER form) equals ``fingerprint``.
    Raises ``ValueError`` unless ``fingerprint`` is 32 bytes (MD5 and SHA-1
    digests are refused as insecure, as in aiohttp).
    """

    __slots__ = ("_fingerprint",)

    def __init__(self, fingerprint: bytes) -> None:
        size = len(fingerprint)
        if size in (16, 20):
            raise ValueError("MD5 and SHA-1 fingerprints are insecure: use a SHA-256 digest")
        if size != 32:
            raise ValueError(f"fingerprint has invalid length {size}: SHA-256 digests have 32")
        self._fingerprint = bytes(fingerprint)

    @property
    def fingerprint(self) -> bytes:
        """The expected SHA-256 digest."""
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Fingerprint({self._fingerprint!r})"
