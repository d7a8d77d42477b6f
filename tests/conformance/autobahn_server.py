"""Echo server under test for the Autobahn TestSuite (kosoku's fuzzing client drives it).

Run: ``python tests/conformance/autobahn_server.py [--port 0]``. The server binds 127.0.0.1,
prints ``PORT <n>`` on stdout once it accepts connections, and echoes every TEXT and BINARY
message on ``/`` until it is terminated (SIGINT/SIGTERM).

Options match what the suite needs: permessage-deflate on (sections 12 and 13), no message size
limit (section 9 sends 16 MiB messages), no heartbeat (kosoku does not expect our pings).
"""

from __future__ import annotations

import argparse
import signal
import sys

import trio

from trio_ws import WSMsgType, web


async def echo(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=0, compress=True, heartbeat=None)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/", echo)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            site = await nursery.start(web.serve, app, "127.0.0.1", port)
            print(f"PORT {site.port}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args(sys.argv[1:]).port)
