"""trio_ws: WebSocket client and server for trio, with aiohttp's WebSocket API."""

from ._client._session import BasicAuth, ClientSession
from ._client._ws import ClientWebSocketResponse
from ._exceptions import (
    ClientConnectionError,
    ClientConnectionResetError,
    ClientConnectorCertificateError,
    ClientConnectorDNSError,
    ClientConnectorError,
    ClientError,
    ClientHttpProxyError,
    ClientOSError,
    ClientResponseError,
    InvalidURL,
    ServerConnectionError,
    ServerTimeoutError,
    WebSocketError,
    WSHandshakeTimeout,
    WSMessageTypeError,
    WSServerHandshakeError,
    WSTimeoutError,
)
from ._models import WebSocketReady, WSCloseCode, WSMessage, WSMsgType

__version__ = "0.1.0"

__all__ = [
    "BasicAuth",
    "ClientSession",
    "ClientWebSocketResponse",
    "ClientConnectionError",
    "ClientConnectionResetError",
    "ClientConnectorCertificateError",
    "ClientConnectorDNSError",
    "ClientConnectorError",
    "ClientError",
    "ClientHttpProxyError",
    "ClientOSError",
    "ClientResponseError",
    "InvalidURL",
    "ServerConnectionError",
    "ServerTimeoutError",
    "WSCloseCode",
    "WSHandshakeTimeout",
    "WSMessage",
    "WSMessageTypeError",
    "WSMsgType",
    "WSServerHandshakeError",
    "WSTimeoutError",
    "WebSocketError",
    "WebSocketReady",
]
