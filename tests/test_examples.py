"""The specification's examples, run as real programs and driven over sockets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

import trio_ws
from trio_ws import WSMsgType

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextmanager
def example_server(name: str) -> Iterator[int]:
    """Start ``examples/<name>`` on a free port; yield the port it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-u", str(EXAMPLES / name), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for _ in range(50):
            line = proc.stdout.readline()
            match = re.search(r"Running on http://[^:]+:(\d+)", line)
            if match:
                break
        else:
            pytest.fail(f"{name} did not print its address")
        yield int(match.group(1))
    finally:
        proc.terminate()
        assert proc.stdout is not None
        proc.stdout.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{name} did not stop on SIGTERM")
        assert proc.returncode == 0, f"{name} exited with {proc.returncode}"


async def test_echo_and_broadcast_server() -> None:
    with example_server("echo_server.py") as port:
        url = f"ws://127.0.0.1:{port}/ws"
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(url) as a, session.ws_connect(url) as b:
                await a.send_json({"type": "echo", "message": "hi"})
                assert await a.receive_json() == {"type": "echo_response", "message": "hi"}
                await a.send_str("not json")
                assert (await a.receive_json())["type"] == "error"
                # b proves it is registered before the broadcast
                await b.send_json({"type": "echo", "message": "ready"})
                assert (await b.receive_json())["message"] == "ready"
                await a.send_json({"type": "broadcast", "message": "all"})
                expected = {"type": "broadcast", "message": "all"}
                assert await a.receive_json() == expected
                assert await b.receive_json() == expected


async def test_jwt_server() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import jwt_server
    finally:
        sys.path.remove(str(EXAMPLES))
    token = jwt_server.create_token("alice")
    with example_server("jwt_server.py") as port:
        url = f"ws://127.0.0.1:{port}/ws"
        async with trio_ws.ClientSession() as session:
            async with session.ws_connect(url) as ws:
                await ws.send_json({"type": "message", "message": "early"})
                assert (await ws.receive_json())["message"] == "Authentication required"
                await ws.send_json({"type": "auth", "token": token})
                assert await ws.receive_json() == {
                    "type": "auth_success",
                    "message": "Welcome alice!",
                }
                await ws.send_json({"type": "ping"})
                assert await ws.receive_json() == {"type": "pong"}
                await ws.send_json({"type": "message", "message": "hello"})
                assert await ws.receive_json() == {
                    "type": "echo",
                    "username": "alice",
                    "message": "hello",
                }
            async with session.ws_connect(url) as ws:
                await ws.send_json({"type": "auth", "token": "forged.token.value"})
                assert (await ws.receive_json())["type"] == "auth_error"
                assert (await ws.receive()).type == WSMsgType.CLOSE


async def test_client_example_against_echo_server() -> None:
    with example_server("echo_server.py") as port:
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / "client.py"), f"ws://127.0.0.1:{port}/ws"],
            capture_stdout=True,
            capture_stderr=True,
        )
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2, lines
    assert json.loads(lines[0].removeprefix("Received text: "))["type"] == "error"
    assert json.loads(lines[1].removeprefix("Received text: ")) == {
        "type": "echo_response",
        "message": "Hello",
    }
