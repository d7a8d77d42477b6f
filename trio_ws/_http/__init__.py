"""HTTP/1.1 over trio with h11: the server's request loop and the client's upgrade.

Nothing here knows about WebSocket frames.
"""
