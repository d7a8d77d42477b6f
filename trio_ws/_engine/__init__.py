"""One WebSocket over a trio stream: reader, writer, heartbeat and the close handshake."""
