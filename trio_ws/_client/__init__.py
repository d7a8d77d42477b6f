"""The client: ClientSession, ws_connect and ClientWebSocketResponse."""
