"""ProxyServer: the Toxiproxy-compatible server, run in a daemon thread (in-process) or in the foreground
(``dbdrill proxy serve``), optionally populated from a Toxiproxy config file."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import ServiceError
from harness.proxy.api import Api, HttpServer, proxy_input
from harness.proxy.listener import ProxyCollection, join_address
from harness.proxy.toxics import ApiError

logger = logging.getLogger(__name__)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def load_config(path: Path) -> list[dict[str, object]]:
    """A toxiproxy-server ``-config`` file: a JSON array of {name, listen, upstream[, enabled]}."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ServiceError(f"cannot read proxy config {path}: {exc.strerror or exc}", obj=path) from exc
    except ValueError as exc:
        raise ServiceError(f"proxy config {path} is not valid JSON: {exc}", obj=path) from exc
    if not isinstance(data, list):
        raise ServiceError(f"proxy config {path} must be a JSON array of proxies "
                           '([{"name": ..., "listen": "127.0.0.1:PORT", "upstream": "HOST:PORT"}])', obj=path)
    return data


class ProxyServer:
    """A Toxiproxy-compatible server. ``start()`` runs it in a daemon thread and returns once the API
    answers; ``stop()`` closes listeners, connections and the API. ``serve()`` runs it in the calling
    thread until SIGTERM/SIGINT or ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, config: Path | str | None = None) -> None:
        self.host = host
        self.port = port
        self.config = Path(config) if config is not None else None
        self.started_in: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.started_in is None:
            raise ServiceError("the proxy server is not running: call start() first", obj=self)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- in a thread ---------------------------------------------------------------------------------
    def start(self) -> ProxyServer:
        if self._thread is not None and self._thread.is_alive():
            return self
        t0 = time.perf_counter()
        ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._thread_main, args=(ready.set,), name="dbdrill-proxy",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            self.stop()
            raise ServiceError(f"proxy server on {self.host}:{self.port} not ready after {START_TIMEOUT:g}s", obj=self)
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT)
            self._thread = None
            raise ServiceError(f"proxy server could not start: {self._error}", obj=self) from self._error
        self.started_in = time.perf_counter() - t0
        logger.info("proxy server on %s, started in %.1f ms", self.url, self.started_in * 1000)
        return self

    def _thread_main(self, ready: Callable[[], None]) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(ready, signals=False))
        except BaseException as exc:
            self._error = exc
        finally:
            _close_loop(loop)
            ready()

    def stop(self) -> None:
        """Close every listener and connection, then the API. Idempotent."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                logger.warning("proxy server thread did not stop within %gs", STOP_TIMEOUT)
        self._thread = None
        self.started_in = None

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- in the foreground ---------------------------------------------------------------------------
    def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Run in this thread until SIGTERM, SIGINT or stop(). ``ready`` is called once the API answers."""
        t0 = time.perf_counter()

        def on_ready() -> None:
            self.started_in = time.perf_counter() - t0
            if ready is not None:
                ready()

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(on_ready, signals=True))
        finally:
            _close_loop(loop)
            self.started_in = None

    # -- the loop --------------------------------------------------------------------------------------
    async def _main(self, ready: Callable[[], None], *, signals: bool) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        proxies = ProxyCollection(loop)
        http = HttpServer(Api(proxies))
        try:
            self.host, self.port = await http.start(self.host, self.port)
        except OSError as exc:
            raise ServiceError(f"cannot listen on {join_address(self.host, self.port)}: {exc.strerror or exc}. "
                               "Pick another --port (0 picks a free one).", obj=self) from exc
        try:
            if self.config is not None:
                await self._populate(proxies, self.config)
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stopping.set)
            self._loop, self._stopping = loop, stopping
            ready()
            await stopping.wait()
        finally:
            self._loop = self._stopping = None
            proxies.close()
            await http.close()
            logger.info("proxy server on %s stopped", join_address(self.host, self.port))

    @staticmethod
    async def _populate(proxies: ProxyCollection, path: Path) -> None:
        try:
            inputs = [proxy_input(item, f" at proxy {i + 1}") for i, item in enumerate(load_config(path))]
            async with proxies.lock:
                done, err = await proxies.populate(inputs)
        except ApiError as exc:
            raise ServiceError(f"proxy config {path}: {exc.message}", obj=path) from exc
        if err is not None:
            raise ServiceError(f"proxy config {path}: {err.message}", obj=path)
        logger.info("populated %d proxies from %s", len(done), path)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left (connect attempts, toxics, API connections) and close the loop."""
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
