"""``AppRunner`` and ``TCPSite``: start a server from inside ``main()``, as aiohttp code does.

aiohttp programs that do more than serve write::

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 8080)
    await site.start()
    ...
    await runner.cleanup()

In trio every task belongs to a block, so the runner is an ``async with``
block that owns the server's tasks; the rest reads the same::

    async with web.AppRunner(app) as runner:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 8080)
        await site.start()
        ...                       # the server serves while the block runs
    # leaving the block: runner.cleanup() (graceful shutdown) if not done yet

Who runs what: ``setup()`` runs the application's ``on_startup`` hooks (and
``cleanup_ctx``) once; each site is one :func:`~trio_ws.web.serve` in the
runner's nursery, serving without running hooks. ``cleanup()`` runs
``on_shutdown``, stops every site gracefully (WebSockets get 1001, handlers
get ``shutdown_timeout``), then runs ``on_cleanup``.
"""

from __future__ import annotations

import ssl as _ssl
from contextlib import AsyncExitStack
from types import TracebackType

import trio

from ._app import Application
from ._limits import ServerLimits
from ._serve import Site, serve

__all__ = ["AppRunner", "TCPSite"]


class AppRunner:
    """Owns an application's server for the duration of an ``async with`` block.

    ``shutdown_timeout`` and ``limits`` apply to every site. Raises
    ``RuntimeError`` from :meth:`setup` (and so from ``TCPSite.start``) when
    used outside its ``async with`` block, which trio needs to own the
    server's tasks.
    """

    def __init__(
        self,
        app: Application,
        *,
        shutdown_timeout: float = 10.0,
        limits: ServerLimits | None = None,
        handle_signals: bool = False,
    ) -> None:
        del handle_signals  # aiohttp's option; signals are the caller's business here
        self.app = app
        self.shutdown_timeout = shutdown_timeout
        self.limits = limits
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._set_up = False
        self._cleaned = False
        self._sites: list[TCPSite] = []

    @property
    def sites(self) -> list[TCPSite]:
        """The started sites."""
        return list(self._sites)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every started site."""
        return [(site.site.host, site.site.port) for site in self._sites if site.site]

    async def __aenter__(self) -> AppRunner:
        stack = AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        try:
            with trio.CancelScope(shield=True):
                await self.cleanup()
        finally:
            # Every site has stopped: the nursery ends at once. The block's own
            # exception, if any, propagates as it was, never in a group.
            self._nursery = None
            stack, self._stack = self._stack, None
            await stack.aclose()
        return None

    async def setup(self) -> None:
        """Run the application's startup hooks (once). Raises what a hook raises."""
        if self._nursery is None:
            raise RuntimeError(
                "use `async with web.AppRunner(app) as runner:` — in trio the block owns "
                "the server's tasks"
            )
        if not self._set_up:
            self._set_up = True
            await self.app.startup()

    async def shutdown(self) -> None:
        """Run the application's ``on_shutdown`` hooks."""
        await self.app.shutdown()

    async def cleanup(self) -> None:
        """Stop gracefully: ``on_shutdown``, stop every site, then ``on_cleanup`` (once)."""
        if self._cleaned:
            return
        self._cleaned = True
        try:
            if self._set_up:
                await self.app.shutdown()
        finally:
            for site in reversed(self._sites):
                await site.stop()
            self._sites.clear()
            if self._set_up:
                await self.app.cleanup()


class TCPSite:
    """One listening address of an :class:`AppRunner`: ``await site.start()`` serves on it.

    ``host`` defaults to ``"0.0.0.0"`` and ``port`` to 8080 (8443 with
    ``ssl_context``); ``port=0`` picks a free port (see :attr:`port`).
    """

    def __init__(
        self,
        runner: AppRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        ssl_context: _ssl.SSLContext | None = None,
        backlog: int = 128,
        shutdown_timeout: float | None = None,
    ) -> None:
        self._runner = runner
        self._host = host if host is not None else "0.0.0.0"
        self._port = port if port is not None else (8443 if ssl_context is not None else 8080)
        self._ssl_context = ssl_context
        self._backlog = backlog
        self._shutdown_timeout = shutdown_timeout
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        self.site: Site | None = None

    @property
    def name(self) -> str:
        """The site's URL, such as ``http://127.0.0.1:8080``."""
        if self.site is not None:
            return self.site.url
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port once started (the one asked for before)."""
        return self.site.port if self.site is not None else self._port

    async def start(self) -> None:
        """Listen and serve in the runner's block; raises ``OSError`` if the address is taken.

        Runs the runner's :meth:`AppRunner.setup` first if it has not run.
        Raises ``RuntimeError`` if the site was started already.
        """
        if self.site is not None:
            raise RuntimeError("site already started")
        runner = self._runner
        await runner.setup()
        assert runner._nursery is not None
        self.site = await runner._nursery.start(self._serve)
        runner._sites.append(self)

    async def _serve(self, task_status: trio.TaskStatus[Site]) -> None:
        runner = self._runner
        timeout = self._shutdown_timeout
        try:
            with self._scope:
                await serve(
                    runner.app,
                    self._host,
                    self._port,
                    ssl_context=self._ssl_context,
                    shutdown_timeout=runner.shutdown_timeout if timeout is None else timeout,
                    limits=runner.limits,
                    backlog=self._backlog,
                    run_hooks=False,
                    task_status=task_status,
                )
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Stop serving on this site gracefully and wait until it has stopped."""
        if self.site is None:
            return
        self._scope.cancel()
        await self._stopped.wait()
