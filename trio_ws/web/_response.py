"""HTTP responses and the HTTP exceptions that become responses."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from .._http._headers import OutgoingHeaders

__all__ = [
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
    "Response",
    "StreamResponse",
    "json_response",
]


class StreamResponse:
    """Base of every response a handler returns: a status and headers.

    ``WebSocketResponse`` derives from it so a handler can return either.
    ``headers`` checks each header as it is set (``add()``, ``headers[name] =
    value``, or the ``headers`` argument): a name that is not an HTTP token,
    or a value with CR, LF, another control character or a non-ASCII
    character raises ``ValueError`` naming the header; a non-``str`` raises
    ``TypeError``.
    """

    def __init__(
        self,
        *,
        status: int = 200,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason or _reason(status)
        self.headers = OutgoingHeaders(headers)

    @property
    def prepared(self) -> bool:
        """True once the response was sent (only WebSocketResponse is ever prepared)."""
        return False


class Response(StreamResponse):
    """A complete HTTP response.

    Give ``text`` (encoded with ``charset``, default utf-8, content type
    ``text/plain`` unless ``content_type`` says otherwise) or ``body`` (bytes,
    content type ``application/octet-stream`` unless given). Raises
    ``ValueError`` when both are given, or for a header that cannot be
    written (see :class:`StreamResponse`).
    """

    def __init__(
        self,
        *,
        body: bytes | None = None,
        status: int = 200,
        reason: str | None = None,
        text: str | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        charset: str | None = None,
    ) -> None:
        super().__init__(status=status, reason=reason, headers=headers)
        if body is not None and text is not None:
            raise ValueError("body and text are not allowed together")
        if text is not None:
            charset = charset or "utf-8"
            self.body = text.encode(charset)
            self.content_type = content_type or "text/plain"
        else:
            self.body = body or b""
            self.content_type = content_type or (
                "application/octet-stream" if body is not None else "text/plain"
            )
        self.charset = charset
        if "Content-Type" not in self.headers:
            ctype = self.content_type
            if charset:
                ctype += f"; charset={charset}"
            self.headers.add("Content-Type", ctype)

    @property
    def text(self) -> str:
        """The body decoded with the response charset (utf-8 by default)."""
        return self.body.decode(self.charset or "utf-8")


def body_of(response: StreamResponse) -> bytes:
    """The bytes the server sends as ``response``'s body: ``body`` of a :class:`Response`
    (an ``HTTPException`` included), nothing for any other response.

    The server's one way to read a response's body (``web/_server.py``).
    """
    return response.body if isinstance(response, Response) else b""


def json_response(
    data: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
    dumps: Callable[[Any], str] = json.dumps,
) -> Response:
    """A :class:`Response` whose body is ``dumps(data)`` as ``application/json``."""
    return Response(text=dumps(data), status=status, headers=headers, content_type=content_type)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class HTTPException(Response, Exception):
    """An HTTP response that can be raised (or returned) from a handler.

    The body defaults to ``"<status>: <reason>"`` as plain text.
    """

    status_code = 500

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
        text: str | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> None:
        if body is None and text is None:
            text = f"{self.status_code}: {reason or _reason(self.status_code)}"
        Response.__init__(
            self,
            status=self.status_code,
            headers=headers,
            reason=reason,
            text=text,
            body=body,
            content_type=content_type,
        )
        Exception.__init__(self, self.reason)

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.reason}>"


class HTTPError(HTTPException):
    """Base of 4xx and 5xx exceptions."""


class HTTPSuccessful(HTTPException):
    """Base of 2xx exceptions."""


class HTTPOk(HTTPSuccessful):
    """200 OK."""

    status_code = 200


# Printable ASCII stays as it is in a Location header; anything else (spaces,
# controls, non-ASCII) is percent-encoded, as browsers do.
_LOCATION_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


class HTTPRedirection(HTTPException):
    """Base of 3xx exceptions; ``location`` becomes the Location header.

    Spaces, control characters and non-ASCII characters in ``location`` are
    percent-encoded (UTF-8) in the header; ``location`` keeps the text given.
    """

    def __init__(self, location: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.headers.add("Location", quote(location, safe=_LOCATION_SAFE))
        self.location = location


class HTTPMovedPermanently(HTTPRedirection):
    """301 Moved Permanently."""

    status_code = 301


class HTTPFound(HTTPRedirection):
    """302 Found."""

    status_code = 302


class HTTPClientError(HTTPError):
    """Base of 4xx exceptions."""

    status_code = 400


class HTTPBadRequest(HTTPClientError):
    """400 Bad Request."""

    status_code = 400


class HTTPUnauthorized(HTTPClientError):
    """401 Unauthorized."""

    status_code = 401


class HTTPForbidden(HTTPClientError):
    """403 Forbidden."""

    status_code = 403


class HTTPNotFound(HTTPClientError):
    """404 Not Found."""

    status_code = 404


class HTTPMethodNotAllowed(HTTPClientError):
    """405 Method Not Allowed; ``allowed_methods`` become the Allow header."""

    status_code = 405

    def __init__(self, method: str, allowed_methods: set[str] | list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.method = method
        self.allowed_methods = set(allowed_methods)
        self.headers.add("Allow", ",".join(sorted(self.allowed_methods)))


class HTTPRequestEntityTooLarge(HTTPClientError):
    """413 Request Entity Too Large."""

    status_code = 413


class HTTPUpgradeRequired(HTTPClientError):
    """426 Upgrade Required."""

    status_code = 426


class HTTPTooManyRequests(HTTPClientError):
    """429 Too Many Requests."""

    status_code = 429


class HTTPRequestHeaderFieldsTooLarge(HTTPClientError):
    """431 Request Header Fields Too Large."""

    status_code = 431


class HTTPServerError(HTTPError):
    """Base of 5xx exceptions."""

    status_code = 500


class HTTPInternalServerError(HTTPServerError):
    """500 Internal Server Error."""

    status_code = 500


class HTTPServiceUnavailable(HTTPServerError):
    """503 Service Unavailable."""

    status_code = 503
