"""The server's WebSocket: the handshake on top of the shared engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import trio

from .._engine._websocket import DEFAULT_MAX_MSG_SIZE, WebSocketEngine
from .._exceptions import ClientConnectionResetError
from .._http._server import HTTPInputError
from .._models import WebSocketReady, WSCloseCode
from .._protocol._deflate import BoundedDeflate
from .._protocol._handshake import RequestRefused, check_request
from ._request import Request, upgrade_of
from ._response import (
    HTTPBadRequest,
    HTTPException,
    HTTPForbidden,
    HTTPMethodNotAllowed,
    HTTPUpgradeRequired,
    StreamResponse,
    _reason,
)

__all__ = ["WebSocketResponse"]


def _refusal(method: str, refused: RequestRefused) -> HTTPException:
    """The HTTP error for a refused upgrade request."""
    if refused.status == 405:
        return HTTPMethodNotAllowed(method, ["GET"])
    kinds: dict[int, type[HTTPException]] = {
        426: HTTPUpgradeRequired,
        403: HTTPForbidden,
    }
    kind = kinds.get(refused.status, HTTPBadRequest)
    return kind(text=refused.message, headers=refused.headers or None)


class WebSocketResponse(StreamResponse, WebSocketEngine):
    """A server-side WebSocket, returned from a handler after :meth:`prepare`.

    Parameters (all keyword-only):

    * ``timeout`` (10.0): seconds to wait for the peer's close frame in
      ``close()``; past it the connection is dropped with ``close_code`` 1006.
    * ``receive_timeout`` (None): default timeout of ``receive()``.
    * ``autoclose`` (True): answer the peer's close frame at once.
    * ``autoping`` (True): answer pings (in the reader task, even while the
      application is not in ``receive()``) and hide pongs.
    * ``heartbeat`` (None): ping after this many idle seconds; no answer
      within half of it closes with 1006.
    * ``protocols`` (()): subprotocols this server speaks; the first of the
      client's offers that is listed here is chosen.
    * ``compress`` (True): accept permessage-deflate when offered.
    * ``max_msg_size`` (4 MiB): largest incoming message, after
      decompression; larger closes with 1009. 0 means no limit.
    * ``origins`` (None): when given, the ``Origin`` header must be in this
      collection (or the callable must return True for it, ``None`` when
      absent); otherwise ``prepare()`` answers 403. This guards against
      cross-site WebSocket hijacking of cookie-authenticated endpoints.
    * ``decode_text`` (True): with False, TEXT messages carry their UTF-8
      ``bytes`` (still validated), ``receive_str()`` returns bytes and
      ``receive_json(loads=)`` hands bytes to ``loads`` (as aiohttp).
    * ``max_queue`` (64): received messages held before the socket stops
      being read. ``write_limit`` (64 KiB): queued outgoing bytes before
      ``send_*`` waits.

    ``status`` is 101 before and after :meth:`prepare` (as aiohttp);
    :meth:`set_status` changes it before ``prepare()``.

    The negotiated subprotocol is :attr:`protocol` (also ``ws_protocol``, as
    aiohttp names it).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        receive_timeout: float | None = None,
        autoclose: bool = True,
        autoping: bool = True,
        heartbeat: float | None = None,
        protocols: Iterable[str] | None = (),
        compress: bool = True,
        max_msg_size: int = DEFAULT_MAX_MSG_SIZE,
        origins: Iterable[str] | Callable[[str | None], bool] | None = None,
        decode_text: bool = True,
        **kwargs: Any,
    ) -> None:
        StreamResponse.__init__(self, status=101)
        WebSocketEngine.__init__(
            self,
            timeout=timeout,
            receive_timeout=receive_timeout,
            autoclose=autoclose,
            autoping=autoping,
            heartbeat=heartbeat,
            max_msg_size=max_msg_size,
            decode_text=decode_text,
            **kwargs,
        )
        self._protocols = tuple(protocols or ())
        self._origins: frozenset[str] | Callable[[str | None], bool] | None = (
            origins if origins is None or callable(origins) else frozenset(origins)
        )
        self._compress_enabled = compress
        self._prepared = False

    @property
    def prepared(self) -> bool:
        """True once :meth:`prepare` has sent the 101 response."""
        return self._prepared

    def set_status(self, status: int, reason: str | None = None) -> None:
        """Set ``status`` and ``reason`` (the standard phrase when None), as aiohttp's.

        ``prepare()`` still answers 101. Raises ``RuntimeError`` once
        prepared (aiohttp asserts) and ``ValueError`` for a reason with CR
        or LF.
        """
        if self._prepared:
            raise RuntimeError(
                "Cannot change the response status code after the headers have been sent"
            )
        if reason is not None and ("\r" in reason or "\n" in reason):
            raise ValueError("Reason cannot contain \\r or \\n")
        self.status = int(status)
        self.reason = reason if reason is not None else _reason(self.status)

    async def close(
        self,
        code: int | None = WSCloseCode.OK,
        message: bytes | str = b"",
        *,
        drain: bool = True,
    ) -> bool:
        """Close the WebSocket; see :meth:`WebSocketEngine.close
        <trio_ws._engine._websocket.WebSocketEngine.close>`.

        ``drain`` is accepted for aiohttp's signature and changes nothing:
        messages queued before ``close()`` always go out before the close
        frame, and the close frame is always flushed. Raises
        ``RuntimeError`` before ``prepare()``.
        """
        return await self._close(code, message)

    @property
    def ws_protocol(self) -> str | None:
        """aiohttp's name for :attr:`protocol`."""
        return self._protocol

    def _handshake(
        self, request: Request
    ) -> tuple[list[tuple[str, str]], str | None, BoundedDeflate | None]:
        origins = self._origins
        origin_allowed: Callable[[str | None], bool] | None
        if origins is None:
            origin_allowed = None
        elif callable(origins):
            origin_allowed = origins
        else:
            allowed = origins

            def origin_allowed(origin: str | None) -> bool:
                return origin is not None and origin in allowed

        try:
            answer = check_request(
                request.method,
                request.headers,
                protocols=self._protocols,
                compress=self._compress_enabled,
                max_size=self._max_msg_size,
                origin_allowed=origin_allowed,
            )
        except RequestRefused as exc:
            raise _refusal(request.method, exc) from None
        response = answer.headers
        protocol = answer.protocol
        deflate = answer.deflate
        response.extend(self.headers.items_all())
        return response, protocol, deflate

    def can_prepare(self, request: Request) -> WebSocketReady:
        """Check whether :meth:`prepare` would succeed, without upgrading.

        Returns ``WebSocketReady(True, protocol)`` or ``WebSocketReady(False,
        None)``. Raises ``RuntimeError("Already started")`` once prepared.
        """
        if self._prepared:
            raise RuntimeError("Already started")
        try:
            _, protocol, _ = self._handshake(request)
        except HTTPException:
            return WebSocketReady(False, None)
        return WebSocketReady(True, protocol)

    async def prepare(self, request: Request) -> WebSocketReady:
        """Validate the upgrade, answer 101 and start the WebSocket.

        Returns ``WebSocketReady(True, protocol)`` (truthy, and ``== "OK"``).
        Calling it again returns the same result. Raises an HTTP exception,
        which the server turns into that response, for a request that is not
        a valid upgrade: 405 for a non-GET, 426 (with ``Upgrade: websocket``)
        for a plain HTTP request or (with ``Sec-WebSocket-Version: 13``) an
        unsupported version, 400 for a bad ``Connection`` header or key or a
        request with a body, 403 for an ``Origin`` outside ``origins``.
        Raises :class:`~trio_ws.ClientConnectionResetError` when the client
        is gone (e.g. it reset the connection while the handler was still
        authenticating it): the server then just closes the connection.
        Raises ``RuntimeError`` while another call is still writing the 101,
        or after a call failed. Other tasks may use the WebSocket (send,
        close) as soon as the 101 is being written: their frames follow it.
        """
        if self._prepared:
            return WebSocketReady(True, self._protocol)
        if self._stream is not None:
            raise RuntimeError("prepare() is already running in another task, or failed")
        upgrade = upgrade_of(request)
        headers, protocol, deflate = self._handshake(request)
        if upgrade.lost:
            raise ClientConnectionResetError("Cannot write to closing transport")
        # The API works before the 101 is written: the client may act as soon
        # as it has the 101, and so may another task of ours (close() from a
        # broadcaster); its frames queue until the tasks start below.
        self.set_up(
            upgrade.stream,
            extensions=[deflate] if deflate is not None else None,
            protocol=protocol,
        )
        try:
            trailing = await upgrade.switch_protocols(headers)
        except BaseException as exc:
            self.abandon(exc)
            if isinstance(exc, HTTPInputError):
                raise HTTPBadRequest(text=f"Handshake error: {exc.reason}") from None
            if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
                raise ClientConnectionResetError("Cannot write to closing transport") from exc
            raise
        self._prepared = True
        self.launch_in(upgrade.adopt(self), trailing)
        return WebSocketReady(True, protocol)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self._prepared else "not prepared")
        return f"<WebSocketResponse {state}>"
