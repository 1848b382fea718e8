"""The embedded stack: fault proxy, emulated AWS, DNS and real RDS, each started on first use and
stopped together, in reverse order. The pytest plugin and ``dbdrill up`` both run one."""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from harness.clock import Clock
from harness.config import Settings
from harness.runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint
    from harness.dns.server import DnsServer
    from harness.proxy.server import ProxyServer
    from harness.rds.reconciler import RdsReconciler
    from harness.toxiproxy import ToxiproxyClient

logger = logging.getLogger(__name__)


class Stack:
    """Lazily started services sharing one settings object, clock, host allocator and proxy."""

    def __init__(self, settings: Settings | None = None, runtime: Runtime | None = None) -> None:
        self.settings = settings or Settings()
        self.runtime = runtime or get_runtime()
        self.clock = Clock()
        self._lock = threading.RLock()
        self._started: list[tuple[str, Any]] = []
        self._proxy_server: ProxyServer | None = None
        self._toxiproxy: ToxiproxyClient | None = None
        self._aws: AwsEndpoint | None = None
        self._dns: DnsServer | None = None
        self._rds: RdsReconciler | None = None

    @property
    def hosts(self) -> Any:
        return self.runtime.hosts

    @property
    def toxiproxy(self) -> ToxiproxyClient:
        """Client of the fault proxy: the embedded server, or an external Toxiproxy when configured."""
        with self._lock:
            if self._toxiproxy is None:
                from harness.toxiproxy import ToxiproxyClient, push_default_client, worker_prefix

                url = self.settings.toxiproxy_url
                prefix = ""
                if url is None:
                    from harness.proxy.server import ProxyServer

                    self._proxy_server = ProxyServer(host="127.0.0.1", port=0).start()
                    self._started.append(("proxy server", self._proxy_server))
                    url = self._proxy_server.url
                else:
                    # An external server may be shared by several xdist workers: keep their names apart.
                    prefix = worker_prefix()
                self._toxiproxy = ToxiproxyClient(url, prefix=prefix)
                push_default_client(self._toxiproxy)
            return self._toxiproxy

    @property
    def aws(self) -> AwsEndpoint:
        with self._lock:
            if self._aws is None:
                from harness.aws.endpoint import AwsEndpoint

                self._aws = AwsEndpoint(self).start()
                self._started.append(("aws endpoint", self._aws))
            return self._aws

    @property
    def dns(self) -> DnsServer:
        with self._lock:
            if self._dns is None:
                from harness.dns.server import DnsServer

                self._dns = DnsServer(self).start()
                self._started.append(("dns server", self._dns))
            return self._dns

    @property
    def rds(self) -> RdsReconciler:
        with self._lock:
            if self._rds is None:
                from harness.rds.reconciler import RdsReconciler

                self._rds = RdsReconciler(self).start()
                self._started.append(("rds reconciler", self._rds))
            return self._rds

    def started(self, name: str) -> bool:
        return any(n == name for n, _ in self._started)

    def close(self) -> None:
        """Stop everything started, newest first; one failure does not stop the rest."""
        with self._lock:
            while self._started:
                name, svc = self._started.pop()
                try:
                    svc.stop()
                except Exception:
                    logger.exception("stopping %s failed", name)
            if self._toxiproxy is not None:
                from harness.toxiproxy import pop_default_client

                pop_default_client(self._toxiproxy)
            self._proxy_server = self._toxiproxy = None
            self._aws = self._dns = self._rds = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.close()
