"""trio_ws.web: an HTTP/1.1 server on h11 with aiohttp's ``web`` names for WebSockets.

``Application`` and its router, ``Request``, ``Response``/``json_response``, the
``HTTP*`` exceptions, :class:`WebSocketResponse`, :func:`serve` (for
``nursery.start``) and :func:`run_app`.
"""

from .._models import WebSocketReady, WSCloseCode, WSMessage, WSMsgType
from ._app import Application, Route, Router
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
from ._serve import ServerLimits, Site, run_app, serve
from ._ws import WebSocketResponse

__all__ = [
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
    "Request",
    "Response",
    "Route",
    "Router",
    "ServerLimits",
    "Site",
    "StreamResponse",
    "WSCloseCode",
    "WSMessage",
    "WSMsgType",
    "WebSocketReady",
    "WebSocketResponse",
    "json_response",
    "run_app",
    "serve",
]
