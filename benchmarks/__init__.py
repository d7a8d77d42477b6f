"""Benchmark harness comparing trio_ws with other Python WebSocket libraries.

Run ``python -m benchmarks --help`` from the repository root.  Each implementation is run
as a server (driven by one fixed, fast load client) and as a client (against one fixed, fast
server), each side in its own process pinned to its own core.
"""
