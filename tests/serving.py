"""A real server on a loopback port, run in-process on its own event loop thread."""

import asyncio
import threading
import time

from runtime.config import ServeConfig
from runtime.server import Server


class Running:
    """A Server on its own event loop thread, as `kmcorrect serve` runs it."""

    def __init__(self, config: ServeConfig, wait: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(config)
        self.started = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop)
        if wait:
            self.started.result(60)
        deadline = time.monotonic() + 10
        while self.server.port is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.target = f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=5), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def config(artifact, **overrides) -> ServeConfig:
    settings = dict(artifact=str(artifact.path), port=0, metrics_port=0, variant="fp32")
    return ServeConfig(**{**settings, **overrides})
