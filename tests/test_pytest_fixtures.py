"""The opt-in pytest plugin: pytest-aiohttp-shaped fixtures, run in a separate pytest process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PORTED_TESTS = '''
from trio_ws import WSMsgType, web


async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def health(request):
    return web.json_response({"ok": True})


def build_app():
    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/health", health)
    return app


async def test_client_fixture(aiohttp_client):
    client = await aiohttp_client(build_app())
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("hi")
        assert await ws.receive_str() == "hi"
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}
    assert "ok" in await resp.text()


async def test_server_then_client(aiohttp_server, aiohttp_client):
    server = await aiohttp_server(build_app())
    client = await aiohttp_client(server)
    ws = await client.ws_connect("/ws")
    await ws.send_str("awaited")
    assert await ws.receive_str() == "awaited"
    await ws.close()
    assert client.port == server.port
'''


def run_pytest(tmp_path: Path, ini: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text(textwrap.dedent(ini))
    (tmp_path / "test_ported.py").write_text(PORTED_TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fixtures_work_when_the_project_opts_in(tmp_path: Path) -> None:
    result = run_pytest(
        tmp_path,
        """
        [pytest]
        trio_mode = true
        trio_ws_fixtures = true
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_fixtures_are_absent_without_opting_in(tmp_path: Path) -> None:
    result = run_pytest(
        tmp_path,
        """
        [pytest]
        trio_mode = true
        """,
    )
    assert result.returncode == 1
    assert "fixture 'aiohttp_client' not found" in result.stdout
