"""trio_ws.web: an HTTP/1.1 server on h11 with aiohttp's ``web`` names for WebSockets.

``Application`` and its router, ``Request``, ``Response``/``json_response``, the
``HTTP*`` exceptions, :class:`WebSocketResponse`, :func:`serve` (for
``nursery.start``) and :func:`run_app`; route definitions (``get``, ``post``,
``RouteTableDef``, ``static``), ``middleware`` and ``AppKey``.
"""

from .._models import WebSocketReady, WSCloseCode, WSMessage, WSMsgType
from ._app import AppKey, Application, Middleware, Route, Router, middleware
from ._limits import ServerLimits
from ._request import Request
from ._response import (
    HTTPBadRequest,
    HTTPClientError,
    HTTPError,
    HTTPException,
    HTTPForbidden,
    HTTPFound,
    HTTPInternalServerError,
    HTTPMethodNotAllowed,
    HTTPMovedPermanently,
    HTTPNotFound,
    HTTPOk,
    HTTPRedirection,
    HTTPRequestEntityTooLarge,
    HTTPRequestHeaderFieldsTooLarge,
    HTTPServerError,
    HTTPServiceUnavailable,
    HTTPSuccessful,
    HTTPTooManyRequests,
    HTTPUnauthorized,
    HTTPUpgradeRequired,
    Response,
    StreamResponse,
    json_response,
)
from ._routedef import (
    AbstractRouteDef,
    RouteDef,
    RouteTableDef,
    StaticDef,
    delete,
    get,
    head,
    patch,
    post,
    put,
    route,
    static,
)
from ._run import run_app
from ._runner import AppRunner, TCPSite
from ._serve import Site, serve
from ._ws import WebSocketResponse

__all__ = [
    "AbstractRouteDef",
    "AppKey",
    "AppRunner",
    "Application",
    "HTTPBadRequest",
    "HTTPClientError",
    "HTTPError",
    "HTTPException",
    "HTTPForbidden",
    "HTTPFound",
    "HTTPInternalServerError",
    "HTTPMethodNotAllowed",
    "HTTPMovedPermanently",
    "HTTPNotFound",
    "HTTPOk",
    "HTTPRedirection",
    "HTTPRequestEntityTooLarge",
    "HTTPRequestHeaderFieldsTooLarge",
    "HTTPServerError",
    "HTTPServiceUnavailable",
    "HTTPSuccessful",
    "HTTPTooManyRequests",
    "HTTPUnauthorized",
    "HTTPUpgradeRequired",
    "Middleware",
    "Request",
    "Response",
    "Route",
    "RouteDef",
    "RouteTableDef",
    "Router",
    "ServerLimits",
    "Site",
    "StaticDef",
    "StreamResponse",
    "TCPSite",
    "WSCloseCode",
    "WSMessage",
    "WSMsgType",
    "WebSocketReady",
    "WebSocketResponse",
    "delete",
    "get",
    "head",
    "json_response",
    "middleware",
    "patch",
    "post",
    "put",
    "route",
    "run_app",
    "serve",
    "static",
]
