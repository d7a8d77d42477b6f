"""trio_ws.hub: publish to every WebSocket subscribed to a topic, across processes.

``Hub`` (and ``open_hub``) fans messages out to local WebSockets, each through
its own bounded queue and task; ``RedisBackend`` carries them between
processes through Redis or Valkey pub/sub (the ``redis`` extra installs
coredis); ``run_app`` serves an application with its hub running in every
worker process. See ``docs/scaling.md``.
"""

from ._hub import Backend, Hub, HubStatistics, Overflow, Subscriber, open_hub
from ._redis import RedisBackend
from ._run import run_app

__all__ = [
    "Backend",
    "Hub",
    "HubStatistics",
    "Overflow",
    "RedisBackend",
    "Subscriber",
    "open_hub",
    "run_app",
]
