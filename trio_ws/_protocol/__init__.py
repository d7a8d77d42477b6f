"""Sans-I/O protocol helpers: framing (over wsproto), permessage-deflate, handshakes.

Nothing in this package imports trio or touches a socket.
"""
