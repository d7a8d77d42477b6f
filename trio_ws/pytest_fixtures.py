"""``aiohttp_server`` and ``aiohttp_client`` fixtures for pytest-trio, shaped like pytest-aiohttp's.

An aiohttp project's WebSocket tests port with their code::

    async def test_echo(aiohttp_client):
        client = await aiohttp_client(build_app())
        async with client.ws_connect("/ws") as ws:
            await ws.send_str("hi")
            assert await ws.receive_str() == "hi"
        resp = await client.get("/health")
        assert resp.status == 200 and await resp.text() == "ok"

Enable them with ``trio_ws_fixtures = true`` (pytest ini) or
``pytest_plugins = ["trio_ws.pytest_fixtures"]``; they need pytest-trio, and
the tests using them must be trio tests (``trio_mode = true`` or
``@pytest.mark.trio``).

Who owns what: each fixture holds a nursery for the whole test. A server
made by ``await aiohttp_server(app)`` runs in it (as
:func:`trio_ws.testing.open_test_server` does) until the test ends; then it
stops gracefully (open WebSockets get 1001) and the application's cleanup
hooks run. A client's session is closed at the same time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest
import trio

from ._client._session import ClientSession
from .testing import TestClient, TestResponse, TestServer, open_test_client, open_test_server
from .web import Application

__all__ = ["AiohttpStyleClient", "AiohttpStyleResponse", "aiohttp_client", "aiohttp_server"]


class AiohttpStyleResponse:
    """A response with aiohttp's awaitable accessors: ``await resp.text()``, ``json()``, ``read()``.

    ``status``, ``reason`` and ``headers`` are attributes, as in aiohttp.
    """

    def __init__(self, response: TestResponse) -> None:
        self._response = response
        self.status = response.status
        self.reason = response.reason
        self.headers = response.headers
        self.content_type = response.content_type

    async def read(self) -> bytes:
        """The raw body."""
        return self._response.body

    async def text(self) -> str:
        """The body decoded with its charset (utf-8 by default); raises ``UnicodeDecodeError``."""
        return self._response.text

    async def json(self, *, loads: Callable[[str], Any] = json.loads) -> Any:
        """The body parsed with ``loads``; raises what ``loads`` raises."""
        return loads(self._response.text)

    def release(self) -> None:
        """Nothing to release: the body is already read (aiohttp compatibility)."""

    def __repr__(self) -> str:
        return f"<AiohttpStyleResponse {self.status} {self.reason}>"


class AiohttpStyleClient:
    """A :class:`~trio_ws.testing.TestClient` with aiohttp's ``TestClient`` method names.

    ``ws_connect(path)`` works as ``await`` or ``async with``; ``get``,
    ``post``, ``put``, ``patch``, ``delete``, ``head`` and ``request``
    return an :class:`AiohttpStyleResponse`. ``server``, ``host``, ``port``
    and ``session`` are as in aiohttp.
    """

    __test__ = False

    def __init__(self, client: TestClient) -> None:
        self._client = client
        self.server: TestServer = client.server
        self.session: ClientSession = client.session

    @property
    def host(self) -> str:
        """The server's address."""
        return self.server.host

    @property
    def port(self) -> int:
        """The server's port."""
        return self.server.port

    def make_url(self, path: str) -> str:
        """The server's URL for ``path``."""
        return self.server.url(path)

    def ws_connect(self, path: str, **kwargs: Any) -> Any:
        """``ClientSession.ws_connect`` for ``path`` on the server (await or ``async with`` it)."""
        return self._client.ws_connect(path, **kwargs)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        data: bytes | str = b"",
        json: Any = None,
    ) -> AiohttpStyleResponse:
        """Send one request; ``json=`` sends a JSON body. Raises as ``TestClient.request``."""
        if json is not None:
            data = _json_dumps(json)
            extra = [("Content-Type", "application/json")]
            if headers is not None:
                extra.extend(headers.items() if isinstance(headers, Mapping) else headers)
            headers = extra
        response = await self._client.request(method, path, headers=headers, data=data)
        return AiohttpStyleResponse(response)

    async def get(self, path: str, **kwargs: Any) -> AiohttpStyleResponse:
        """``request("GET", path, ...)``."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> AiohttpStyleResponse:
        """``request("POST", path, ...)``."""
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> AiohttpStyleResponse:
        """``request("PUT", path, ...)``."""
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> AiohttpStyleResponse:
        """``request("PATCH", path, ...)``."""
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> AiohttpStyleResponse:
        """``request("DELETE", path, ...)``."""
        return await self.request("DELETE", path, **kwargs)

    async def head(self, path: str, **kwargs: Any) -> AiohttpStyleResponse:
        """``request("HEAD", path, ...)``."""
        return await self.request("HEAD", path, **kwargs)


def _json_dumps(value: Any) -> str:
    return json.dumps(value)


async def _hold_server(
    app: Application, kwargs: dict[str, Any], task_status: trio.TaskStatus[TestServer]
) -> None:
    async with open_test_server(app, **kwargs) as server:
        task_status.started(server)
        await trio.sleep_forever()


async def _hold_client(
    target: Application | TestServer,
    server_kwargs: dict[str, Any],
    kwargs: dict[str, Any],
    task_status: trio.TaskStatus[AiohttpStyleClient],
) -> None:
    if isinstance(target, TestServer):
        async with open_test_client(target, **kwargs) as client:
            task_status.started(AiohttpStyleClient(client))
            await trio.sleep_forever()
    async with (
        open_test_server(target, **server_kwargs) as server,
        open_test_client(server, **kwargs) as client,
    ):
        task_status.started(AiohttpStyleClient(client))
        await trio.sleep_forever()


@pytest.fixture
async def aiohttp_server() -> AsyncIterator[Callable[..., Awaitable[TestServer]]]:
    """Factory fixture: ``server = await aiohttp_server(app)`` serves ``app`` for the test.

    ``port`` must be None or 0 (a free port is always picked); other keywords
    go to :func:`trio_ws.testing.open_test_server`. Raises what that raises.
    """
    async with trio.open_nursery() as nursery:

        async def factory(
            app: Application, *, port: int | None = None, **kwargs: Any
        ) -> TestServer:
            if port:
                raise ValueError("aiohttp_server picks a free port; pass port=None")
            server: TestServer = await nursery.start(_hold_server, app, kwargs)
            return server

        yield factory
        nursery.cancel_scope.cancel()


@pytest.fixture
async def aiohttp_client() -> AsyncIterator[Callable[..., Awaitable[AiohttpStyleClient]]]:
    """Factory fixture: ``client = await aiohttp_client(app_or_server)`` for the test.

    Given an :class:`~trio_ws.web.Application`, it also serves it (with
    ``server_kwargs``); other keywords go to
    :func:`trio_ws.testing.open_test_client`. Raises what that raises.
    """
    async with trio.open_nursery() as nursery:

        async def factory(
            target: Application | TestServer,
            *,
            server_kwargs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> AiohttpStyleClient:
            client: AiohttpStyleClient = await nursery.start(
                _hold_client, target, server_kwargs or {}, kwargs
            )
            return client

        yield factory
        nursery.cancel_scope.cancel()
