"""Things shared by the harness, the echo servers and the client drivers.

Wire protocol between the harness and its child processes (one line each, on stdout):

* a server prints ``READY <port>`` once it accepts connections;
* a client prints ``PHASE <name>`` and then waits for one line on stdin before going on
  (only the ``idle`` scenario does this, so the harness can read memory use);
* a client prints ``RESULT <json>`` at the end.

The ``wss_*`` scenarios run their plain counterpart over TLS: the harness passes the server
``--certfile``/``--keyfile`` (a certificate for 127.0.0.1 and localhost from a CA made once
per run) and the client ``--cafile`` (that CA); clients keep certificate and hostname checks
on (:func:`client_ssl_context`).

Between the load client and an echo server: binary and text messages are echoed, except a
text message ``bcast N SIZE``, on which the server sends N binary messages of SIZE bytes to
every connected client (the ``fanout`` scenario).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import ssl
import sys
import zlib
from dataclasses import asdict, dataclass
from types import ModuleType

#: Largest message any peer must accept (``big1m`` sends 1 MiB).
MAX_MSG_SIZE = 4 * 2**20

SCENARIOS = (
    "rtt64",
    "pipe64",
    "big1m",
    "fanout",
    "handshake",
    "idle",
    "deflate",
    "idle_deflate",
    "wss_rtt64",
    "wss_pipe64",
    "wss_big1m",
)

#: Prefix of the scenarios that run their plain counterpart over TLS.
TLS_PREFIX = "wss_"

#: Implementations under test, in display order.  ``picows`` is the fixed fast peer.
IMPLS = (
    "trio_ws",
    "trio_ws_pure",
    "trio_websocket",
    "websockets_trio",
    "websockets_asyncio",
    "aiohttp",
)
FIXED_PEER = "picows"

#: Implementations that cannot negotiate permessage-deflate.
NO_DEFLATE = frozenset({"trio_websocket"})
#: Implementations that cannot run over TLS (every one can today).
NO_TLS: frozenset[str] = frozenset()

UNITS = {
    "rtt64": "rt/s",
    "pipe64": "msg/s",
    "big1m": "MB/s",
    "fanout": "deliveries/s",
    "handshake": "conn/s",
    "idle": "KiB/conn",
    "deflate": "msg/s",
    "idle_deflate": "KiB/conn",
    "wss_rtt64": "rt/s",
    "wss_pipe64": "msg/s",
    "wss_big1m": "MB/s",
}

#: For these scenarios a smaller number is better.
LOWER_IS_BETTER = frozenset({"idle", "idle_deflate"})

#: Scenarios whose figure is the RSS growth per open connection (the harness measures it).
IDLE_SCENARIOS = frozenset({"idle", "idle_deflate"})


def base_scenario(scenario: str) -> str:
    """The plain scenario a TLS one runs over TLS (``wss_pipe64`` -> ``pipe64``), else itself."""
    return scenario.removeprefix(TLS_PREFIX)


def is_tls(scenario: str) -> bool:
    """True for the scenarios that run over TLS (``wss://``)."""
    return scenario.startswith(TLS_PREFIX)


def skip_reason(scenario: str, impl: str) -> str | None:
    """Why ``impl`` does not run ``scenario`` (a ``n/a`` cell), or ``None`` if it does."""
    if FULL[scenario].compress and impl in NO_DEFLATE:
        return "no permessage-deflate"
    if is_tls(scenario) and impl in NO_TLS:
        return "no TLS"
    return None


@dataclass(frozen=True)
class Params:
    """How much work one run of a scenario does.

    ``count`` is round trips / messages / connections (per client for ``fanout``),
    ``size`` the payload size in bytes, ``window`` the number of messages in flight for the
    pipelined scenarios, ``conns`` the number of simultaneous connections, and ``max_time``
    the time after which the timed part stops early (the result is then computed from the
    work done so far).
    """

    count: int
    size: int = 64
    window: int = 1
    conns: int = 1
    compress: bool = False
    max_time: float = 10.0


FULL: dict[str, Params] = {
    "rtt64": Params(count=8000, max_time=4.0),
    "pipe64": Params(count=40000, window=100, max_time=4.0),
    "big1m": Params(count=100, size=2**20, max_time=4.0),
    "fanout": Params(count=300, conns=200, max_time=5.0),
    "handshake": Params(count=600, max_time=4.0),
    "idle": Params(count=2000, conns=2000, max_time=30.0),
    "deflate": Params(count=15000, size=1024, window=100, compress=True, max_time=4.0),
    # 500 connections that negotiated permessage-deflate as browsers do, one 1 KiB
    # compressible text message each (so both zlib streams exist), then idle.
    "idle_deflate": Params(count=500, size=1024, conns=500, compress=True, max_time=30.0),
    "wss_rtt64": Params(count=8000, max_time=4.0),
    "wss_pipe64": Params(count=40000, window=100, max_time=4.0),
    "wss_big1m": Params(count=100, size=2**20, max_time=4.0),
}

QUICK: dict[str, Params] = {
    "rtt64": Params(count=200, max_time=1.0),
    "pipe64": Params(count=1000, window=50, max_time=1.0),
    "big1m": Params(count=3, size=2**20, max_time=1.0),
    "fanout": Params(count=10, conns=10, max_time=2.0),
    "handshake": Params(count=20, max_time=1.0),
    "idle": Params(count=50, conns=50, max_time=5.0),
    "deflate": Params(count=300, size=1024, window=50, compress=True, max_time=1.0),
    "idle_deflate": Params(count=50, size=1024, conns=50, compress=True, max_time=5.0),
    "wss_rtt64": Params(count=200, max_time=1.0),
    "wss_pipe64": Params(count=1000, window=50, max_time=1.0),
    "wss_big1m": Params(count=3, size=2**20, max_time=1.0),
}


def raise_fd_limit(wanted: int = 65536) -> None:
    """Allow enough file descriptors for thousands of connections (like ``ulimit -n``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def emit(line: str) -> None:
    """Write one protocol line to the harness."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


#: Prefix of the stderr line in which a child names the file a module was imported from.
IMPORTED = "IMPORTED"


def report_import(module: ModuleType) -> None:
    """Name on stderr (the run's log) the file ``module`` was imported from.

    The harness records it for every run, and ``--compare`` checks that each side ran
    the tree it was meant to run.
    """
    print(f"{IMPORTED} {module.__name__} {module.__file__}", file=sys.stderr, flush=True)


def wait_for_harness() -> None:
    """Block until the harness writes one line on stdin (run this in a thread)."""
    sys.stdin.readline()


def parse_bcast(text: str) -> tuple[int, int] | None:
    """Return ``(count, size)`` if ``text`` is the broadcast trigger, else ``None``."""
    if not text.startswith("bcast "):
        return None
    _, count, size = text.split()
    return int(count), int(size)


def bcast_command(count: int, size: int) -> str:
    return f"bcast {count} {size}"


def text_pool(size: int, n: int = 64, seed: int = 1) -> list[str]:
    """``n`` different JSON-like texts of exactly ``size`` characters (compressible)."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "price", "qty", "side", "buy", "sell", "ok"]
    pool = []
    for i in range(n):
        items: list[str] = []
        length = 2
        while length < size:
            item = json.dumps(
                {
                    "id": i * 1000 + len(items),
                    "sym": rng.choice(words),
                    "px": round(rng.uniform(1, 1000), 2),
                    "tags": [rng.choice(words) for _ in range(3)],
                }
            )
            items.append(item)
            length += len(item) + 1
        text = ("[" + ",".join(items) + "]")[:size]
        pool.append(text.ljust(size))
    return pool


@dataclass
class Outcome:
    """What a client driver reports: ``done`` units of work in ``elapsed`` seconds."""

    scenario: str
    done: int
    elapsed: float
    value: float
    unit: str
    truncated: bool = False

    def emit(self) -> None:
        emit("RESULT " + json.dumps(asdict(self)))


def outcome(scenario: str, params: Params, done: int, elapsed: float) -> Outcome:
    """Turn work done into the scenario's figure of merit."""
    elapsed = max(elapsed, 1e-9)
    value = done / elapsed
    if base_scenario(scenario) == "big1m":
        value *= params.size / 1e6
    expected = params.count * (params.conns if scenario == "fanout" else 1)
    return Outcome(
        scenario=scenario,
        done=done,
        elapsed=elapsed,
        value=value,
        unit=UNITS[scenario],
        truncated=done < expected,
    )


def server_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse an echo server's command line (see :func:`server_ssl_context` for TLS)."""
    parser = argparse.ArgumentParser(description="benchmark echo server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--compress", action="store_true", help="accept permessage-deflate")
    parser.add_argument("--certfile", help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--keyfile", help="private key of --certfile (PEM)")
    return parser.parse_args(argv)


def server_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context if ``--certfile`` was given, else ``None`` (plain ws)."""
    if not args.certfile:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.certfile, args.keyfile)
    return ctx


def client_ssl_context(cafile: str) -> ssl.SSLContext:
    """A client TLS context that trusts ``cafile`` only, with certificate and hostname checks.

    ``ssl.create_default_context`` turns both checks on (``CERT_REQUIRED``,
    ``check_hostname``); the assertions make sure nothing downstream weakened them.
    """
    ctx = ssl.create_default_context(cafile=cafile)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def client_args(
    argv: list[str] | None = None,
) -> tuple[str, str, Params, ssl.SSLContext | None]:
    """Parse a client driver's command line into ``(url, scenario, params, ssl_context)``.

    ``ssl_context`` is built from ``--cafile`` (see :func:`client_ssl_context`); a
    ``wss://`` URL without it is an error.
    """
    parser = argparse.ArgumentParser(description="benchmark client driver")
    parser.add_argument("--url", required=True)
    parser.add_argument("--cafile", help="CA that signed the server's certificate (wss)")
    parser.add_argument("--scenario", required=True, choices=SCENARIOS)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--compress", action="store_true")
    parser.add_argument("--max-time", type=float, default=10.0)
    ns = parser.parse_args(argv)
    params = Params(
        count=ns.count,
        size=ns.size,
        window=ns.window,
        conns=ns.conns,
        compress=ns.compress,
        max_time=ns.max_time,
    )
    if ns.url.startswith("wss://") and not ns.cafile:
        parser.error("a wss:// URL needs --cafile")
    ctx = client_ssl_context(ns.cafile) if ns.cafile else None
    return ns.url, ns.scenario, params, ctx


class NotNegotiated(RuntimeError):
    """A client asked for permessage-deflate and the connection runs without it.

    A scenario that is meant to measure compression must not quietly measure plain
    messages: the client drivers raise this, so the child ends without a result and the
    harness counts the run as failed (the message is in the run's log).
    """

    def __init__(self, impl: str, detail: str = "") -> None:
        super().__init__(
            f"{impl}: permessage-deflate was requested but not negotiated"
            + (f" ({detail})" if detail else "")
        )


def params_to_argv(params: Params) -> list[str]:
    argv = [
        "--count",
        str(params.count),
        "--size",
        str(params.size),
        "--window",
        str(params.window),
        "--conns",
        str(params.conns),
        "--max-time",
        str(params.max_time),
    ]
    if params.compress:
        argv.append("--compress")
    return argv


# --- permessage-deflate for picows, which has no built-in support -------------------------

_TAIL = b"\x00\x00\xff\xff"


class Deflate:
    """Minimal permessage-deflate (RFC 7692) codec for the picows peer."""

    def __init__(
        self,
        *,
        send_wbits: int = 15,
        send_reset: bool = False,
        recv_wbits: int = 15,
        recv_reset: bool = False,
        level: int = 1,
    ) -> None:
        self._send_wbits = max(send_wbits, 9)
        self._send_reset = send_reset
        self._recv_wbits = recv_wbits
        self._recv_reset = recv_reset
        self._level = level
        self._comp = zlib.compressobj(level, zlib.DEFLATED, -self._send_wbits)
        self._decomp = zlib.decompressobj(-self._recv_wbits)

    def compress(self, data: bytes) -> bytes:
        if self._send_reset:
            self._comp = zlib.compressobj(self._level, zlib.DEFLATED, -self._send_wbits)
        out = self._comp.compress(data) + self._comp.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4] if out.endswith(_TAIL) else out

    def decompress(self, data: bytes) -> bytes:
        if self._recv_reset:
            self._decomp = zlib.decompressobj(-self._recv_wbits)
        return self._decomp.decompress(data + _TAIL)


def _ext_params(offer: str) -> tuple[str, dict[str, str | None]]:
    parts = [p.strip() for p in offer.split(";")]
    params: dict[str, str | None] = {}
    for part in parts[1:]:
        if not part:
            continue
        key, sep, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"') if sep else None
    return parts[0].lower(), params


def deflate_accept(header: str | None) -> tuple[str, Deflate] | None:
    """Server side: answer a client's ``Sec-WebSocket-Extensions`` offer."""
    if not header:
        return None
    for offer in header.split(","):
        name, params = _ext_params(offer)
        if name != "permessage-deflate":
            continue
        answer = ["permessage-deflate"]
        send_wbits = 15
        if "server_no_context_takeover" in params:
            answer.append("server_no_context_takeover")
        if "client_no_context_takeover" in params:
            answer.append("client_no_context_takeover")
        if params.get("server_max_window_bits"):
            send_wbits = int(params["server_max_window_bits"] or 15)
            answer.append(f"server_max_window_bits={send_wbits}")
        codec = Deflate(
            send_wbits=send_wbits,
            send_reset="server_no_context_takeover" in params,
            recv_reset="client_no_context_takeover" in params,
        )
        return "; ".join(answer), codec
    return None


DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


def deflate_from_response(header: str | None) -> Deflate | None:
    """Client side: build the codec the server's answer asks for."""
    if not header:
        return None
    name, params = _ext_params(header.split(",")[0])
    if name != "permessage-deflate":
        return None
    return Deflate(
        send_wbits=int(params.get("client_max_window_bits") or 15),
        send_reset="client_no_context_takeover" in params,
        recv_reset="server_no_context_takeover" in params,
    )
