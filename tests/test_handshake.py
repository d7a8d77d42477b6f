"""The opening handshake's rules (``trio_ws._protocol._handshake``), sans I/O, both roles."""

from __future__ import annotations

import pytest

from trio_ws._http._headers import Headers
from trio_ws._protocol._deflate import client_offer
from trio_ws._protocol._handshake import (
    RequestRefused,
    ResponseRejected,
    accept_token,
    check_request,
    check_response,
    new_key,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(**extra: str) -> Headers:
    base = {
        "Host": "x",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": KEY,
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return Headers([(k, v) for k, v in base.items() if v != "-"])


def check(headers: Headers, method: str = "GET", **kwargs: object) -> object:
    options: dict[str, object] = {"protocols": (), "compress": True, "max_size": 1 << 20}
    options.update(kwargs)
    return check_request(method, headers, **options)  # type: ignore[arg-type]


def test_accept_token_is_rfc_6455s_example() -> None:
    assert accept_token(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_token(KEY.encode()) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_new_keys_are_16_random_bytes() -> None:
    import base64

    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(base64.b64decode(k)) == 16 for k in keys)


@pytest.mark.parametrize("version", ["13", "8", "7"])
def test_server_accepts_the_versions_aiohttp_accepts(version: str) -> None:
    answer = check(request(Sec_WebSocket_Version=version))
    assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in answer.headers  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("headers", "method", "status"),
    [
        (request(), "POST", 405),
        (request(Upgrade="-"), "GET", 426),
        (request(Upgrade="h2c"), "GET", 426),
        (request(Connection="keep-alive"), "GET", 400),
        (request(Sec_WebSocket_Version="12"), "GET", 426),
        (request(Sec_WebSocket_Version="-"), "GET", 426),
        (request(Sec_WebSocket_Key="short"), "GET", 400),
        (request(Sec_WebSocket_Key="-"), "GET", 400),
    ],
)
def test_server_refusals_carry_their_status(headers: Headers, method: str, status: int) -> None:
    with pytest.raises(RequestRefused) as info:
        check(headers, method)
    assert info.value.status == status


def test_a_refused_version_names_the_versions_understood() -> None:
    with pytest.raises(RequestRefused) as info:
        check(request(Sec_WebSocket_Version="9"))
    assert info.value.headers == {"Sec-WebSocket-Version": "13, 8, 7"}


def test_origin_policy_and_subprotocol_choice() -> None:
    headers = request(Origin="https://good.example", Sec_WebSocket_Protocol="v2, chat, Chat")
    answer = check(headers, protocols=("chat", "v3"), origin_allowed=lambda o: o is not None)
    assert answer.protocol == "chat"  # type: ignore[attr-defined]
    with pytest.raises(RequestRefused) as info:
        check(headers, origin_allowed=lambda o: o == "https://other.example")
    assert info.value.status == 403


def test_server_answers_a_deflate_offer_only_when_compress_is_on() -> None:
    headers = request(Sec_WebSocket_Extensions=client_offer(15))
    assert check(headers).deflate is not None  # type: ignore[attr-defined]
    assert check(headers, compress=False).deflate is None  # type: ignore[attr-defined]


def response(key: bytes, **extra: str) -> Headers:
    base = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": accept_token(key),
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return Headers([(k, v) for k, v in base.items() if v != "-"])


def client_check(status: int, headers: Headers, key: bytes, **kwargs: object) -> object:
    options: dict[str, object] = {
        "protocols": ("chat",),
        "compress": 0,
        "notakeover": False,
        "max_size": 1 << 20,
    }
    options.update(kwargs)
    return check_response(status, headers, key=key, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "extra", "message"),
    [
        (200, {}, "Invalid response status"),
        (101, {"Upgrade": "-"}, "Invalid upgrade header"),
        (101, {"Connection": "close"}, "Invalid connection header"),
        (101, {"Sec_WebSocket_Accept": "wrong"}, "Invalid challenge response"),
        (101, {"Sec_WebSocket_Protocol": "other"}, "not offered"),
        (101, {"Sec_WebSocket_Extensions": "permessage-deflate"}, "not offered"),
    ],
)
def test_client_rejects_a_bad_answer_with_aiohttps_words(
    status: int, extra: dict[str, str], message: str
) -> None:
    key = new_key()
    with pytest.raises(ResponseRejected, match=message):
        client_check(status, response(key, **extra), key)


def test_client_accepts_a_good_answer_with_subprotocol_and_deflate() -> None:
    key = new_key()
    headers = response(
        key, Sec_WebSocket_Protocol="chat", Sec_WebSocket_Extensions="permessage-deflate"
    )
    protocol, deflate = client_check(101, headers, key, compress=15)  # type: ignore[misc]
    assert protocol == "chat" and deflate is not None


def test_a_deflate_answer_that_cannot_be_used_keeps_its_cause() -> None:
    key = new_key()
    headers = response(
        key, Sec_WebSocket_Extensions="permessage-deflate; server_max_window_bits=20"
    )
    with pytest.raises(ResponseRejected) as info:
        client_check(101, headers, key, compress=15)
    assert info.value.__cause__ is not None
