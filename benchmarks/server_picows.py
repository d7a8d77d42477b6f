"""Fixed fast echo server (picows, callback based) used to drive the client benchmarks."""

from __future__ import annotations

import asyncio

from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from benchmarks._common import (
    MAX_MSG_SIZE,
    Deflate,
    deflate_accept,
    emit,
    parse_bcast,
    raise_fd_limit,
    server_args,
    server_ssl_context,
)

_BINARY = WSMsgType.BINARY
_TEXT = WSMsgType.TEXT
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


class EchoListener(WSListener):  # type: ignore[misc]
    def __init__(self, clients: set[WSTransport], codec: Deflate | None) -> None:
        self.clients = clients
        self.codec = codec
        self.transport: WSTransport | None = None
        self.parts: list[bytes] | None = None
        self.first_type = _BINARY
        self.first_rsv1 = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.clients.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.clients.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt is _BINARY or mt is _TEXT:
            if not frame.fin:
                self.first_type = mt
                self.first_rsv1 = frame.rsv1
                self.parts = [frame.get_payload_as_bytes()]
            elif mt is _BINARY and not frame.rsv1:
                transport.send(_BINARY, frame.get_payload_as_memoryview())
            else:
                self.message(mt, frame.rsv1, frame.get_payload_as_bytes())
        elif mt is _CONT:
            assert self.parts is not None
            self.parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                payload = b"".join(self.parts)
                self.parts = None
                self.message(self.first_type, self.first_rsv1, payload)
        elif mt is _CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def message(self, mt: WSMsgType, rsv1: bool, payload: bytes) -> None:
        if rsv1:
            assert self.codec is not None
            payload = self.codec.decompress(payload)
        if mt is _TEXT:
            command = parse_bcast(payload.decode())
            if command is not None:
                self.broadcast(*command)
                return
        self.send(mt, payload)

    def send(self, mt: WSMsgType, payload: bytes) -> None:
        assert self.transport is not None
        if self.codec is not None:
            self.transport.send(mt, self.codec.compress(payload), rsv1=True)
        else:
            self.transport.send(mt, payload)

    def broadcast(self, count: int, size: int) -> None:
        payload = b"b" * size
        targets = list(self.clients)
        for _ in range(count):
            for transport in targets:
                if not transport.is_disconnected:
                    transport.send(_BINARY, payload)


async def main() -> None:
    args = server_args()
    raise_fd_limit()
    clients: set[WSTransport] = set()

    def factory(request: WSUpgradeRequest) -> EchoListener | WSUpgradeResponseWithListener:
        if args.compress:
            accepted = deflate_accept(request.headers.get("Sec-WebSocket-Extensions"))
            if accepted is not None:
                header, codec = accepted
                response = WSUpgradeResponse.create_101_response(
                    extra_headers={"Sec-WebSocket-Extensions": header}
                )
                return WSUpgradeResponseWithListener(response, EchoListener(clients, codec))
        return EchoListener(clients, None)

    server = await ws_create_server(
        factory,
        args.host,
        args.port,
        max_frame_size=MAX_MSG_SIZE,
        websocket_handshake_timeout=10,
        ssl=server_ssl_context(args),
    )
    emit(f"READY {server.sockets[0].getsockname()[1]}")
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
