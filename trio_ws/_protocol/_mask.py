"""RFC 6455 masking: XOR a payload with a 4-byte key repeated.

What this module owns: the fastest masking available. Payloads under 1 KiB
are XORed as one big integer (C speed, no per-byte Python). Larger ones use
numpy when it is installed (``pip install trio_ws[speedups]``, about 25 GB/s
here) and otherwise one ``bytes.translate`` per key byte over a stride-4
slice (about 0.9 GB/s), pure Python either way. Setting the environment
variable ``TRIO_WS_NO_SPEEDUPS`` to a non-empty value ignores numpy.

Never: touch sockets, trio or clocks.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["SPEEDUPS", "mask", "masked_frame"]

_np: Any
if os.environ.get("TRIO_WS_NO_SPEEDUPS"):
    _np = None
else:
    try:
        import numpy as _np
    except ImportError:  # pragma: no cover - depends on the environment
        _np = None

#: True when numpy does the masking of payloads of 1 KiB and more.
SPEEDUPS = _np is not None

_SMALL = 1024
_XOR_TABLES = [bytes(i ^ k for i in range(256)) for k in range(256)]

Buffer = bytes | bytearray | memoryview


def mask(key: bytes, payload: Buffer) -> bytes:
    """``payload`` XOR ``key`` repeated, as bytes (masking and unmasking are the same)."""
    n = len(payload)
    if n < _SMALL:
        if not n:
            return b""
        keys = (key * ((n >> 2) + 1))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
            n, "little"
        )
    out = bytearray(n)
    _xor_into(out, 0, key, payload)
    return bytes(out)


def masked_frame(header: bytes, key: bytes, payload: Buffer) -> bytes | bytearray:
    """``header + key + mask(key, payload)`` with one copy of the payload."""
    n = len(payload)
    if n < _SMALL:
        return header + key + mask(key, payload)
    start = len(header) + 4
    out = bytearray(start + n)
    out[: start - 4] = header
    out[start - 4 : start] = key
    _xor_into(out, start, key, payload)
    return out


def _xor_into(out: bytearray, start: int, key: bytes, payload: Buffer) -> None:
    """Write ``payload`` XOR ``key`` into ``out[start:]`` (sized to fit)."""
    n = len(payload)
    if _np is not None:
        words = n >> 2
        np = _np
        np.bitwise_xor(
            np.frombuffer(payload, np.uint32, words),
            np.frombuffer(key, np.uint32)[0],
            out=np.frombuffer(out, np.uint32, words, start),
        )
        for i in range(words << 2, n):
            out[start + i] = payload[i] ^ key[i & 3]
        return
    out[start:] = payload
    for i in range(4):
        lane = slice(start + i, None, 4)
        out[lane] = out[lane].translate(_XOR_TABLES[key[i]])
