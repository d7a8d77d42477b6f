"""Application, router, middlewares and lifecycle hooks, with aiohttp's names.

An :class:`Application` is a mapping of shared state (``app["db"]`` or, typed,
``app[DB_KEY]`` with a :class:`AppKey`), a :class:`Router`, a list of
middlewares and the lifecycle hooks ``on_startup``, ``cleanup_ctx``,
``on_shutdown`` and ``on_cleanup``. The server (``serve``/``run_app``/
``AppRunner``) runs the hooks; :meth:`Router.resolve` returns the handler
already wrapped in the application's middlewares.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from ._response import HTTPMethodNotAllowed, HTTPNotFound, StreamResponse
from ._routedef import AbstractRouteDef, RouteDef
from ._static import static_handler

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["AppKey", "Application", "Handler", "Middleware", "Route", "Router", "middleware"]

Handler = Callable[["Request"], Awaitable[StreamResponse]]
Hook = Callable[["Application"], Awaitable[None]]
Middleware = Callable[["Request", Handler], Awaitable[StreamResponse]]
CleanupContext = Callable[["Application"], AsyncIterator[None]]
_T = TypeVar("_T")
_M = TypeVar("_M", bound=Callable[..., Any])


def middleware(fn: _M) -> _M:
    """Mark ``async def fn(request, handler)`` as a (new-style) middleware, as aiohttp's.

    Middlewares given to :class:`Application` run outermost first; each calls
    ``await handler(request)`` to go on, or returns (or raises) a response
    itself, e.g. an auth check that raises ``HTTPUnauthorized`` before the
    WebSocket upgrade.
    """
    fn.__middleware_version__ = 1  # type: ignore[attr-defined]
    return fn


class AppKey(Generic[_T]):
    """A typed key for application state: ``DB = web.AppKey("DB", Database)``; ``app[DB]``."""

    __slots__ = ("_name", "_t")

    def __init__(self, name: str, t: type[_T] | None = None) -> None:
        self._name = name
        self._t = t

    @property
    def name(self) -> str:
        """The key's name."""
        return self._name

    def __repr__(self) -> str:
        t = getattr(self._t, "__qualname__", None) if self._t is not None else None
        return f"<AppKey({self._name}, type={t})>"


_VAR = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<re>[^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")


@dataclass(frozen=True)
class Route:
    """One registered route: ``method`` (``"*"`` for any), ``path`` pattern, ``handler``."""

    method: str
    path: str
    handler: Handler
    pattern: re.Pattern[str]
    name: str | None = None


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


def _wrap(mw: Middleware, handler: Handler) -> Handler:
    async def call(request: Request) -> StreamResponse:
        return await mw(request, handler)

    return call


class Router:
    """Maps ``(method, path)`` to handlers; paths may hold ``{name}`` or ``{name:regex}``."""

    def __init__(self, middlewares: list[Middleware] | None = None) -> None:
        self._routes: list[Route] = []
        self._middlewares = middlewares if middlewares is not None else []

    def add_route(
        self, method: str, path: str, handler: Handler, *, name: str | None = None
    ) -> Route:
        """Register ``handler`` for ``method`` (``"*"`` for any) at ``path``.

        Raises ``ValueError`` for a path that does not start with ``/``.
        """
        route = Route(method.upper(), path, handler, _compile(path), name)
        self._routes.append(route)
        return route

    def add_get(
        self, path: str, handler: Handler, *, name: str | None = None, allow_head: bool = True
    ) -> Route:
        """Register a GET handler (and HEAD, unless ``allow_head`` is false)."""
        if allow_head:
            self.add_route("HEAD", path, handler)
        return self.add_route("GET", path, handler, name=name)

    def add_head(self, path: str, handler: Handler, *, name: str | None = None) -> Route:
        """Register a HEAD handler."""
        return self.add_route("HEAD", path, handler, name=name)

    def add_post(self, path: str, handler: Handler, *, name: str | None = None) -> Route:
        """Register a POST handler."""
        return self.add_route("POST", path, handler, name=name)

    def add_put(self, path: str, handler: Handler, *, name: str | None = None) -> Route:
        """Register a PUT handler."""
        return self.add_route("PUT", path, handler, name=name)

    def add_patch(self, path: str, handler: Handler, *, name: str | None = None) -> Route:
        """Register a PATCH handler."""
        return self.add_route("PATCH", path, handler, name=name)

    def add_delete(self, path: str, handler: Handler, *, name: str | None = None) -> Route:
        """Register a DELETE handler."""
        return self.add_route("DELETE", path, handler, name=name)

    def add_static(
        self,
        prefix: str,
        path: str | PathLike[str],
        *,
        name: str | None = None,
        show_index: bool = False,
        follow_symlinks: bool = False,
        append_version: bool = False,
    ) -> Route:
        """Serve the files under directory ``path`` at URL ``prefix`` (GET and HEAD).

        A name that leaves the directory (``..``, a symbolic link unless
        ``follow_symlinks``) or does not exist is 404; a directory is 403
        unless ``show_index``. ``append_version`` is accepted for aiohttp
        compatibility and has no effect (no URL building here). Raises
        ``ValueError`` when ``path`` is not a directory or ``prefix`` does not
        start with ``/``.
        """
        del append_version
        handler = static_handler(
            prefix, path, show_index=show_index, follow_symlinks=follow_symlinks
        )
        pattern = prefix.rstrip("/") + "/{filename:.*}"
        return self.add_get(pattern, handler, name=name)

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
                handler = route.handler
                for mw in reversed(self._middlewares):
                    handler = _wrap(mw, handler)
                return handler, m.groupdict()
            allowed.add(route.method)
        if allowed:
            raise HTTPMethodNotAllowed(method, allowed)
        raise HTTPNotFound()


class Application(MutableMapping["str | AppKey[Any]", Any]):
    """A web application: a router, shared state (``app["db"] = ...``) and hooks.

    ``on_startup``, ``on_shutdown`` and ``on_cleanup`` are lists of
    ``async def hook(app)`` run by ``serve``/``run_app``/``AppRunner``:
    startup before the first connection is accepted; shutdown when the server
    begins to stop (before WebSockets get 1001); cleanup after every
    connection has ended. ``cleanup_ctx`` holds ``async def ctx(app)``
    generators: the part before ``yield`` runs at startup (before the
    ``on_startup`` hooks added after the application was made), the part after
    it at cleanup, in reverse order. ``middlewares`` wrap every handler (see
    :func:`middleware`).
    """

    def __init__(
        self,
        *,
        middlewares: Iterable[Middleware] = (),
        client_max_size: int = 1024**2,
    ) -> None:
        self.middlewares: list[Middleware] = list(middlewares)
        self.router = Router(self.middlewares)
        self.client_max_size = client_max_size
        self.cleanup_ctx: list[CleanupContext] = []
        self._ctx_running: list[AsyncIterator[None]] = []
        self.on_startup: list[Hook] = [self._enter_cleanup_ctx]
        self.on_shutdown: list[Hook] = []
        self.on_cleanup: list[Hook] = [self._exit_cleanup_ctx]
        self._state: dict[str | AppKey[Any], Any] = {}

    def add_routes(
        self, routes: Iterable[AbstractRouteDef | tuple[str, str, Handler]]
    ) -> list[Route]:
        """Register route definitions (``web.get(...)``, a ``RouteTableDef``) or triples.

        A ``(method, path, handler)`` triple for GET also answers HEAD, as
        aiohttp's route definitions do. Returns the routes added.
        """
        before = len(self.router.routes())
        for item in routes:
            if not isinstance(item, AbstractRouteDef):
                item = RouteDef(*item)  # a triple registers as web.route(...) does
            item.register(self.router)
        return self.router.routes()[before:]

    async def startup(self) -> None:
        """Run the ``on_startup`` hooks (and the first half of ``cleanup_ctx``)."""
        await self._run_hooks(self.on_startup)

    async def shutdown(self) -> None:
        """Run the ``on_shutdown`` hooks."""
        await self._run_hooks(self.on_shutdown)

    async def cleanup(self) -> None:
        """Run the ``on_cleanup`` hooks (and the second half of ``cleanup_ctx``)."""
        await self._run_hooks(self.on_cleanup)

    async def _enter_cleanup_ctx(self, app: Application) -> None:
        for ctx in self.cleanup_ctx:
            gen = ctx(app)
            await gen.__anext__()
            self._ctx_running.append(gen)

    async def _exit_cleanup_ctx(self, app: Application) -> None:
        errors: list[Exception] = []
        while self._ctx_running:
            gen = self._ctx_running.pop()
            try:
                await gen.__anext__()
            except StopAsyncIteration:
                continue
            except Exception as exc:
                errors.append(exc)
                continue
            errors.append(RuntimeError(f"cleanup context {gen!r} has more than one yield"))
        if errors:
            first = errors[0]
            for other in errors[1:]:
                if hasattr(first, "add_note"):  # Python 3.11+
                    first.add_note(f"another cleanup context failed too: {other!r}")
            raise first

    @overload
    def __getitem__(self, key: AppKey[_T]) -> _T: ...

    @overload
    def __getitem__(self, key: str) -> Any: ...

    def __getitem__(self, key: str | AppKey[Any]) -> Any:
        return self._state[key]

    def __setitem__(self, key: str | AppKey[Any], value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: str | AppKey[Any]) -> None:
        del self._state[key]

    def __iter__(self) -> Iterator[str | AppKey[Any]]:
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
