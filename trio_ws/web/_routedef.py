"""Route definitions as values: ``web.get(...)``, ``web.RouteTableDef`` and ``web.static``.

aiohttp services are often written with a route table filled by decorators
(``@routes.get("/ws")``) or with a list of definitions
(``app.add_routes([web.get("/ws", handler)])``). A definition is a small
immutable value that knows how to register itself on a
:class:`~trio_ws.web.Router`; :meth:`Application.add_routes` calls
:meth:`RouteDef.register` for each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from ._app import Handler, Router

__all__ = [
    "AbstractRouteDef",
    "RouteDef",
    "RouteTableDef",
    "StaticDef",
    "delete",
    "get",
    "head",
    "patch",
    "post",
    "put",
    "route",
    "static",
]


class AbstractRouteDef:
    """Something :meth:`Application.add_routes` can register."""

    def register(self, router: Router) -> None:
        """Add this definition's routes to ``router``."""
        raise NotImplementedError


@dataclass(frozen=True)
class RouteDef(AbstractRouteDef):
    """One route: ``method`` (``"*"`` for any), ``path`` and ``handler``.

    ``kwargs`` are passed to the router (``allow_head`` for GET).
    """

    method: str
    path: str
    handler: Handler
    kwargs: dict[str, Any] = field(default_factory=dict)

    def register(self, router: Router) -> None:
        """Add this route to ``router``; a GET also answers HEAD unless ``allow_head=False``."""
        if self.method.upper() == "GET":
            router.add_get(self.path, self.handler, **self.kwargs)
        else:
            router.add_route(self.method, self.path, self.handler)


@dataclass(frozen=True)
class StaticDef(AbstractRouteDef):
    """Files under ``path`` served at URL ``prefix`` (see :meth:`Router.add_static`)."""

    prefix: str
    path: str | PathLike[str]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def register(self, router: Router) -> None:
        """Add the static route to ``router``."""
        router.add_static(self.prefix, self.path, **self.kwargs)


def route(method: str, path: str, handler: Handler, **kwargs: Any) -> RouteDef:
    """A route for ``method`` (``"*"`` for any) at ``path``."""
    return RouteDef(method, path, handler, kwargs)


def get(path: str, handler: Handler, *, allow_head: bool = True) -> RouteDef:
    """A GET route (answering HEAD too unless ``allow_head`` is false)."""
    return RouteDef("GET", path, handler, {"allow_head": allow_head})


def head(path: str, handler: Handler) -> RouteDef:
    """A HEAD route."""
    return RouteDef("HEAD", path, handler)


def post(path: str, handler: Handler) -> RouteDef:
    """A POST route."""
    return RouteDef("POST", path, handler)


def put(path: str, handler: Handler) -> RouteDef:
    """A PUT route."""
    return RouteDef("PUT", path, handler)


def patch(path: str, handler: Handler) -> RouteDef:
    """A PATCH route."""
    return RouteDef("PATCH", path, handler)


def delete(path: str, handler: Handler) -> RouteDef:
    """A DELETE route."""
    return RouteDef("DELETE", path, handler)


def static(prefix: str, path: str | PathLike[str], **kwargs: Any) -> StaticDef:
    """Files under directory ``path`` served at URL ``prefix``.

    ``kwargs`` are those of :meth:`Router.add_static` (``show_index``,
    ``follow_symlinks``).
    """
    return StaticDef(prefix, path, kwargs)


class RouteTableDef(Sequence[AbstractRouteDef]):
    """A list of route definitions filled with decorators.

    ::

        routes = web.RouteTableDef()

        @routes.get("/ws")
        async def websocket(request): ...

        app.add_routes(routes)
    """

    def __init__(self) -> None:
        self._items: list[AbstractRouteDef] = []

    def __repr__(self) -> str:
        return f"<RouteTableDef count={len(self._items)}>"

    @overload
    def __getitem__(self, index: int) -> AbstractRouteDef: ...

    @overload
    def __getitem__(self, index: slice) -> list[AbstractRouteDef]: ...

    def __getitem__(self, index: int | slice) -> AbstractRouteDef | list[AbstractRouteDef]:
        return self._items[index]

    def __iter__(self) -> Iterator[AbstractRouteDef]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def route(self, method: str, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Decorator: register the decorated handler for ``method`` at ``path``."""

        def add(handler: Handler) -> Handler:
            self._items.append(RouteDef(method, path, handler, kwargs))
            return handler

        return add

    def get(self, path: str, *, allow_head: bool = True) -> Callable[[Handler], Handler]:
        """Decorator for a GET handler (HEAD too unless ``allow_head`` is false)."""
        return self.route("GET", path, allow_head=allow_head)

    def head(self, path: str) -> Callable[[Handler], Handler]:
        """Decorator for a HEAD handler."""
        return self.route("HEAD", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        """Decorator for a POST handler."""
        return self.route("POST", path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        """Decorator for a PUT handler."""
        return self.route("PUT", path)

    def patch(self, path: str) -> Callable[[Handler], Handler]:
        """Decorator for a PATCH handler."""
        return self.route("PATCH", path)

    def delete(self, path: str) -> Callable[[Handler], Handler]:
        """Decorator for a DELETE handler."""
        return self.route("DELETE", path)

    def static(self, prefix: str, path: str | PathLike[str], **kwargs: Any) -> None:
        """Add a static directory (see :func:`static`)."""
        self._items.append(StaticDef(prefix, path, kwargs))
