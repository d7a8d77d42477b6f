"""Sans-I/O protocol helpers: our own framing (checked against wsproto), deflate, handshakes.

Nothing in this package imports trio or touches a socket.
"""
