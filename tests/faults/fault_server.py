"""The server under fault injection: ``web.run_app`` with handlers of every kind.

Run by ``test_server_faults.py`` in its own process, so that its file
descriptors and resident memory are the server's alone. Prints
``PORT <n>`` once listening, serves until SIGTERM, and logs the
``trio_ws.server`` logger to stderr (the test counts what it logged).

Handlers, by path:

* ``/echo``: prepare, echo text and binary (the well-behaved clients use it).
* ``/slow``: an auth lookup (50-150 ms) before ``prepare()``, then echo.
* ``/after``: prepare, then raise on the first message (1011).
* ``/before``: raise before ``prepare()`` (500).
* ``/bad-header``: a response with a non-ASCII header value (ValueError, 500).
* ``/bad-status``: a response whose status was spoilt after it was built (500).
* ``/bad-return``: return something that is not a response (500).
* ``/forgot``: return an unprepared ``WebSocketResponse`` (prepared, closed 1000).
* ``/sendloop``: prepare, then send 4 KiB messages until the client goes.
* ``/body``: read the request body (POST), answer its length.
* ``/http``: a plain 200.
* ``/stats``: JSON ``{"objects": n, "tasks": n, "names": [...]}``: live Python
  objects after a full collection, and trio tasks with their names (the
  test's leak check besides fds and RSS).
"""

from __future__ import annotations

import gc
import logging
import random
import sys

import trio

from trio_ws import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(timeout=2.0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def slow(request: web.Request) -> web.WebSocketResponse:
    await trio.sleep(random.uniform(0.05, 0.15))  # e.g. a token lookup
    return await echo(request)


async def after(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(timeout=2.0)
    await ws.prepare(request)
    await ws.receive()
    raise RuntimeError("handler failed after prepare")


async def before(request: web.Request) -> web.Response:
    raise RuntimeError("handler failed before prepare")


async def bad_header(request: web.Request) -> web.Response:
    return web.Response(text="hi", headers={"X-User": "José"})


async def bad_status(request: web.Request) -> web.Response:
    response = web.Response(text="hi")
    response.status = 1234
    return response


async def bad_return(request: web.Request) -> web.Response:
    return 42  # type: ignore[return-value]


async def forgot(request: web.Request) -> web.WebSocketResponse:
    return web.WebSocketResponse(timeout=2.0)


async def sendloop(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(timeout=2.0)
    await ws.prepare(request)
    chunk = b"x" * 4096
    while not ws.closed:
        await ws.send_bytes(chunk)
    return ws


async def body(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


async def http(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _where(task: trio.lowlevel.Task) -> str:
    frames = [f"{f.f_code.co_name}:{lineno}" for f, lineno in task.iter_await_frames()]
    return f"{task.name} at {' < '.join(reversed(frames[-4:]))}"


def _tasks(task: trio.lowlevel.Task) -> list[str]:
    return [_where(task)] + [
        name for n in task.child_nurseries for t in n.child_tasks for name in _tasks(t)
    ]


async def stats(request: web.Request) -> web.Response:
    gc.collect()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    names = _tasks(root)
    return web.json_response(
        {"objects": len(gc.get_objects()), "tasks": len(names), "names": sorted(names)}
    )


def build_app() -> web.Application:
    app = web.Application()
    for path, handler in (
        ("/echo", echo),
        ("/slow", slow),
        ("/after", after),
        ("/before", before),
        ("/bad-header", bad_header),
        ("/bad-status", bad_status),
        ("/bad-return", bad_return),
        ("/forgot", forgot),
        ("/sendloop", sendloop),
        ("/http", http),
        ("/stats", stats),
    ):
        app.router.add_get(path, handler)
    app.router.add_post("/body", body)
    return app


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s %(message)s"
    )

    def announce(*args: object) -> None:
        text = " ".join(map(str, args))
        if text.startswith("======== Running on "):
            port = text.rsplit(":", 1)[1].split()[0]
            sys.stdout.write(f"PORT {port}\n")
            sys.stdout.flush()

    limits = web.ServerLimits(head_timeout=2.0, keepalive_timeout=2.0)
    web.run_app(
        build_app(), host="127.0.0.1", port=0, limits=limits, shutdown_timeout=3.0, print=announce
    )


if __name__ == "__main__":
    main()
