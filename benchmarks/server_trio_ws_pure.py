"""Echo server: trio_ws without its optional speedups (numpy masking off)."""

from __future__ import annotations

import os

os.environ["TRIO_WS_NO_SPEEDUPS"] = "1"

import trio

from benchmarks._common import raise_fd_limit
from benchmarks.server_trio_ws import main

if __name__ == "__main__":
    raise_fd_limit()
    trio.run(main)
