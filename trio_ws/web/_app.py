"""Application, router and lifecycle hooks."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._response import HTTPMethodNotAllowed, HTTPNotFound, StreamResponse

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["Application", "Handler", "Route", "Router"]

Handler = Callable[["Request"], Awaitable[StreamResponse]]
Hook = Callable[["Application"], Awaitable[None]]

_VAR = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<re>[^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")


@dataclass(frozen=True)
class Route:
    """One registered route: ``method`` (``"*"`` for any), ``path`` pattern, ``handler``."""

    method: str
    path: str
    handler: Handler
    pattern: re.Pattern[str]


def _compile(path: str) -> re.Pattern[str]:
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    out = []
    pos = 0
    for m in _VAR.finditer(path):
        out.append(re.escape(path[pos : m.start()]))
        out.append(f"(?P<{m['name']}>{m['re'] or '[^/]+'})")
        pos = m.end()
    out.append(re.escape(path[pos:]))
    return re.compile("".join(out) + r"\Z")


class Router:
    """Maps ``(method, path)`` to handlers; paths may hold ``{name}`` or ``{name:regex}``."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add_route(self, method: str, path: str, handler: Handler) -> Route:
        """Register ``handler`` for ``method`` (``"*"`` for any) at ``path``.

        Raises ``ValueError`` for a path that does not start with ``/``.
        """
        route = Route(method.upper(), path, handler, _compile(path))
        self._routes.append(route)
        return route

    def add_get(self, path: str, handler: Handler, *, allow_head: bool = True) -> Route:
        """Register a GET handler (and HEAD, unless ``allow_head`` is false)."""
        if allow_head:
            self.add_route("HEAD", path, handler)
        return self.add_route("GET", path, handler)

    def add_post(self, path: str, handler: Handler) -> Route:
        """Register a POST handler."""
        return self.add_route("POST", path, handler)

    def add_put(self, path: str, handler: Handler) -> Route:
        """Register a PUT handler."""
        return self.add_route("PUT", path, handler)

    def add_delete(self, path: str, handler: Handler) -> Route:
        """Register a DELETE handler."""
        return self.add_route("DELETE", path, handler)

    def routes(self) -> list[Route]:
        """Every registered route, in order."""
        return list(self._routes)

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """Find the handler for a request.

        Returns ``(handler, match_info)``; raises :class:`HTTPNotFound` when no
        path matches and :class:`HTTPMethodNotAllowed` when a path matches but
        not for ``method``.
        """
        allowed: set[str] = set()
        for route in self._routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            if route.method in ("*", method):
                return route.handler, m.groupdict()
            allowed.add(route.method)
        if allowed:
            raise HTTPMethodNotAllowed(method, allowed)
        raise HTTPNotFound()


class Application(MutableMapping[str, Any]):
    """A web application: a router, shared state (``app["db"] = ...``) and hooks.

    ``on_startup``, ``on_shutdown`` and ``on_cleanup`` are lists of
    ``async def hook(app)`` run by ``serve``/``run_app``: startup before the
    first connection is accepted; shutdown when the server begins to stop
    (before WebSockets get 1001); cleanup after every connection has ended.
    """

    def __init__(self, *, client_max_size: int = 1024**2) -> None:
        self.router = Router()
        self.client_max_size = client_max_size
        self.on_startup: list[Hook] = []
        self.on_shutdown: list[Hook] = []
        self.on_cleanup: list[Hook] = []
        self._state: dict[str, Any] = {}

    def add_routes(self, routes: list[tuple[str, str, Handler]]) -> None:
        """Register ``(method, path, handler)`` triples."""
        for method, path, handler in routes:
            self.router.add_route(method, path, handler)

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    async def _run_hooks(self, hooks: list[Hook]) -> None:
        for hook in hooks:
            await hook(self)
