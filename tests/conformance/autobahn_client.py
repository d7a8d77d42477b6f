"""Echo client under test for the Autobahn TestSuite (it drives kosoku's fuzzing server).

Run: ``python tests/conformance/autobahn_client.py PORT [--agent trio_ws] [--parallel 2]``.

The protocol is Autobahn's: ``/getCaseCount`` sends the number of selected cases as a text
message; ``/runCase?case=N&agent=A`` runs case N (1-based), and the client echoes every TEXT and
BINARY message until the server closes; ``/updateReports?agent=A`` ends the run and makes the
server write its reports. Each case runs under a time limit so a stuck case cannot hang the run;
errors are printed on stderr and the run goes on (the server's report holds the verdict).
Exit status: 0 when every case was driven, 1 when the case count could not be read.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import quote

import trio

import trio_ws
from trio_ws import WSMsgType

# Autobahn allows a case up to 480 s (the 131072-byte runs of section 12); a case that runs past
# this is reported by the server anyway, we only need the run to end.
CASE_TIMEOUT = 600.0


async def case_count(session: trio_ws.ClientSession, base: str) -> int:
    async with session.ws_connect(f"{base}/getCaseCount") as ws:
        msg = await ws.receive()
        if msg.type != WSMsgType.TEXT:
            raise RuntimeError(f"getCaseCount answered {msg!r}")
        return int(msg.data)


async def run_case(session: trio_ws.ClientSession, base: str, case: int, agent: str) -> None:
    url = f"{base}/runCase?case={case}&agent={quote(agent)}"
    async with session.ws_connect(
        url, compress=15, notakeover=True, max_msg_size=0, heartbeat=None
    ) as ws:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)


async def worker(
    session: trio_ws.ClientSession,
    base: str,
    agent: str,
    cases: trio.MemoryReceiveChannel[int],
) -> None:
    async for case in cases:
        with trio.move_on_after(CASE_TIMEOUT) as scope:
            try:
                await run_case(session, base, case, agent)
            except Exception as exc:  # the server's report holds the verdict; keep going
                print(f"case {case}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if scope.cancelled_caught:
            print(f"case {case}: gave up after {CASE_TIMEOUT:.0f} s", file=sys.stderr, flush=True)


async def main(port: int, agent: str, parallel: int) -> int:
    base = f"ws://127.0.0.1:{port}"
    async with trio_ws.ClientSession() as session:
        try:
            count = await case_count(session, base)
        except Exception as exc:
            print(f"getCaseCount failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"running {count} cases", flush=True)
        send, receive = trio.open_memory_channel[int](0)
        async with trio.open_nursery() as nursery:
            async with receive:
                for _ in range(parallel):
                    nursery.start_soon(worker, session, base, agent, receive.clone())
            async with send:
                for case in range(1, count + 1):
                    await send.send(case)
        async with session.ws_connect(f"{base}/updateReports?agent={quote(agent)}") as ws:
            await ws.receive()
    print("reports updated", flush=True)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, help="port of kosoku's fuzzing server on 127.0.0.1")
    parser.add_argument("--agent", default="trio_ws", help="agent name in the reports")
    parser.add_argument("--parallel", type=int, default=2, help="cases run at the same time")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    sys.exit(trio.run(main, args.port, args.agent, args.parallel))
