"""The real side of emulated RDS DB instances: hosts (a PostgreSQL cluster behind its own fault proxy, standbys
streaming through a link proxy of their own), DNS names, network cuts, and the operations — create, read
replica, promotion, Multi-AZ failover, reboot, delete. The reconciler drives it from the RDS API."""
from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.rds import replication as repl
from harness.rds.postgres import PgCluster, PgEngine
from harness.wait import WaitTimeout

if TYPE_CHECKING:
    from harness.toxiproxy import ToxiproxyClient

logger = logging.getLogger(__name__)

PORT = 5432
DNS_TTL = 5  # seconds, as RDS instance endpoints; the fast profile uses 1
CUT_TOXIC = "dbdrill-rds-cut"


@dataclass(eq=False)
class Host:
    """One emulated DB host: a PostgreSQL server on an internal address, reached by clients through the proxy
    ``proxy`` (listening on ``address``:``port``). A standby streams through its own ``link_proxy`` to its
    ``upstream`` host, so a host can be cut off the network (both ways) by toxics alone.

    ``role``: "primary", "standby" (a Multi-AZ standby: never reachable by clients, as in AWS) or "replica".
    ``client_cuts``/``net_cuts``: the reasons its client side / all of its traffic is blackholed."""

    name: str
    region: str
    az: str
    cluster: PgCluster
    address: str
    port: int
    proxy: str
    role: str = "primary"
    upstream: Host | None = None
    link_proxy: str | None = None
    link_address: str | None = None
    proxy_upstream: tuple[str, int] | None = None
    frozen: PgCluster | None = None  # the fenced old server, SIGSTOPped: its connections hang, not close
    client_cuts: set[str] = field(default_factory=set)
    net_cuts: set[str] = field(default_factory=set)
    link_paused: bool = False
    expected_down: bool = False

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.address, self.port

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.role} {self.az} {self.address}:{self.port}>"


@dataclass(eq=False)
class Instance:
    """An RDS DB instance as dbdrill runs it: its current primary host, the Multi-AZ standby host, the read
    replica source and replicas."""

    region: str
    identifier: str
    arn: str
    dns_name: str
    port: int
    user: str
    password: str
    db_name: str
    primary: Host
    standby: Host | None = None
    source: Instance | None = None
    replicas: list[Instance] = field(default_factory=list)
    status: str = "creating"
    lost_hosts: list[Host] = field(default_factory=list)  # old hosts to rebuild as standby when their AZ is back
    failovers: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def multi_az(self) -> bool:
        return self.standby is not None or bool(self.lost_hosts)

    @property
    def hosts(self) -> list[Host]:
        return [h for h in (self.primary, self.standby, *self.lost_hosts) if h is not None]

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.dns_name, self.port

    def dsn(self, *, host: str | None = None, dbname: str | None = None, **extra: Any) -> str:
        """libpq connection string to the endpoint name (or ``host``) with the master credentials."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=host or self.dns_name, port=self.port, user=self.user, password=self.password,
                             dbname=dbname or self.db_name, **extra)

    def __repr__(self) -> str:
        return f"<Instance {self.region}/{self.identifier} {self.status} primary={self.primary.name}>"


class Sink:
    """Holds a down server's address while its host is cut off: connections the blackholed proxy makes upstream
    are accepted by the kernel (never read, never answered), so clients of a fenced host hang instead of being
    turned away because the server behind it is gone. Listening without accepting needs no thread."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)

    def close(self) -> None:
        self.sock.close()


class Fleet:
    """Hosts, proxies, DNS records and the replication topology of every emulated DB instance."""

    def __init__(self, engine: PgEngine, proxies: ToxiproxyClient, dns: Any, allocate: Callable[[str], str]) -> None:
        self.engine = engine
        self.proxies = proxies
        self.dns = dns
        self.allocate = allocate
        self._ids = itertools.count(1)
        self._cut_lock = threading.Lock()
        self._cut_state: dict[str, bool] = {}
        self.hosts: list[Host] = []
        self._hosts_lock = threading.Lock()
        self.sleep: Callable[[float], object] = time.sleep  # the reconciler makes it end early on stop
        self.dns_ttl = DNS_TTL
        self._sinks: dict[str, Sink] = {}

    # -- hosts ---------------------------------------------------------------------------------------------
    def _name(self, identifier: str) -> str:
        return f"{identifier}-{next(self._ids)}"

    def _proxy(self, host: Host) -> None:
        host.proxy_upstream = (host.cluster.host, host.cluster.port)
        self.proxies.create_proxy(host.proxy, listen=f"{host.address}:{host.port}",
                                  upstream=f"{host.cluster.host}:{host.cluster.port}")
        self._cut_state[host.proxy] = False

    def new_primary(self, region: str, az: str, identifier: str, *, port: int = PORT, auth: str = "scram-sha-256",
                    user: str, password: str, db_name: str, settings: dict[str, str] | None = None) -> Host:
        """A fresh primary from the template, with the master user, behind its proxy. ``settings``: server
        settings beyond the base ones (from a parameter group, such as max_connections); standbys inherit them."""
        name = self._name(identifier)
        cluster = self.engine.create_cluster(name, host=self.allocate(f"pg-{region}-{name}"), auth=auth,
                                             settings=settings)
        host = Host(name, region, az, cluster, self.allocate(f"rds-{region}-{name}"), port, f"rds-{region}-{name}")
        try:
            cluster.create_master(user, password, db_name)
            self._proxy(host)
        except BaseException:
            self.remove_host(host)
            raise
        self._add(host)
        return host

    def new_standby(self, source: Host, region: str, az: str, identifier: str, *, role: str, sync: bool = False,
                    port: int = PORT) -> Host:
        """A standby of ``source`` (role "standby": a Multi-AZ synchronous standby; "replica": an async read
        replica), streaming through its link proxy."""
        name = self._name(identifier)
        _, root = self.engine.new_root(name)
        cluster = PgCluster(self.engine, name, root, self.allocate(f"pg-{region}-{name}"))
        self.engine.register(cluster)
        host = Host(name, region, az, cluster, self.allocate(f"rds-{region}-{name}"), port, f"rds-{region}-{name}",
                    role=role)
        try:
            self._link(host, source)
            repl.clone_into(cluster, source.cluster, upstream=(str(host.link_address), PORT))
            if sync:
                repl.set_sync_standbys(source.cluster, [cluster.name])
            repl.wait_streaming(source.cluster, cluster, timeout=30, sync=sync)
            self._proxy(host)
        except BaseException:
            self.remove_host(host)
            raise
        self._add(host)
        self.sync_cuts()
        return host

    def _add(self, host: Host) -> None:
        with self._hosts_lock:
            self.hosts.append(host)

    def _link(self, host: Host, upstream: Host) -> None:
        """(Re)point ``host``'s replication link proxy at ``upstream``'s server; open connections are dropped so
        the WAL receiver reconnects to the new upstream."""
        host.upstream = upstream
        target = f"{upstream.cluster.host}:{upstream.cluster.port}"
        if host.link_proxy is None:
            host.link_proxy = f"rds-{host.region}-{host.name}-link"
            host.link_address = self.allocate(f"rds-link-{host.region}-{host.name}")
            self.proxies.create_proxy(host.link_proxy, listen=f"{host.link_address}:{PORT}", upstream=target)
            self._cut_state[host.link_proxy] = False
        else:
            self.proxies.update_proxy(host.link_proxy, upstream=target)
            self.proxies.update_proxy(host.link_proxy, enabled=False)
            self.proxies.update_proxy(host.link_proxy, enabled=True)

    def unlink(self, host: Host) -> None:
        """Replication to ``host`` stops for good: its link proxy goes away."""
        if host.link_proxy is not None:
            with contextlib.suppress(Exception):
                self.proxies.delete_proxy(host.link_proxy)
            self._cut_state.pop(host.link_proxy, None)
        host.link_proxy = host.link_address = None
        host.upstream = None

    def remove_host(self, host: Host) -> None:
        self.thaw(host)
        self.unpark(host)
        self.unlink(host)
        with contextlib.suppress(Exception):
            self.proxies.delete_proxy(host.proxy)
        self._cut_state.pop(host.proxy, None)
        self.engine.drop(host.cluster)
        with self._hosts_lock:
            if host in self.hosts:
                self.hosts.remove(host)

    def park(self, host: Host) -> None:
        """The host's server is down while its proxy is cut: hold the address the proxy points at (see Sink).
        A server started again later gets a new address (``move``), so the sink can stay until ``serve``."""
        addr = host.proxy_upstream
        if addr is None or host.name in self._sinks or host.cluster.running():
            return
        try:
            self._sinks[host.name] = Sink(*addr)
        except OSError:
            logger.exception("cannot hold the address of %s while it is down", host.name)

    def fresh_server(self, host: Host) -> None:
        """A host whose old server is frozen or whose address is held by a sink gets a new server (own
        directory and address) for its rebuild; the proxy keeps pointing at the old one until ``serve``."""
        if host.frozen is None and host.name not in self._sinks:
            return
        if host.frozen is None:
            self.engine.drop(host.cluster)
        name = f"{host.name}-{next(self._ids)}"
        _, root = self.engine.new_root(name)
        host.cluster = self.engine.register(
            PgCluster(self.engine, name, root, self.allocate(f"pg-{host.region}-{name}")))

    def serve(self, host: Host) -> None:
        """The host's proxy reaches its current server: repointed if the server changed (which drops the
        connections hanging on the proxy, as a host coming back does), the frozen old server and the sink go."""
        addr = (host.cluster.host, host.cluster.port)
        if host.proxy_upstream != addr:
            self.proxies.update_proxy(host.proxy, upstream=f"{addr[0]}:{addr[1]}")
            host.proxy_upstream = addr
        self.thaw(host)
        self.unpark(host)

    def thaw(self, host: Host) -> None:
        """End the frozen old server (SIGKILL reaches stopped processes) and delete it."""
        frozen, host.frozen = host.frozen, None
        if frozen is not None:
            frozen.kill()
            self.engine.drop(frozen)

    def unpark(self, host: Host) -> None:
        sink = self._sinks.pop(host.name, None)
        if sink is not None:
            sink.close()

    # -- network cuts --------------------------------------------------------------------------------------
    def sync_cuts(self) -> None:
        """Blackhole exactly the proxies that should be: a host's client proxy when it is cut or a Multi-AZ
        standby; a link when either end is cut off the network or replication is paused."""
        with self._hosts_lock:
            hosts = list(self.hosts)
        want: dict[str, bool] = {}
        for h in hosts:
            want[h.proxy] = bool(h.client_cuts or h.net_cuts) or h.role == "standby"
            if h.link_proxy is not None:
                up = h.upstream
                want[h.link_proxy] = bool(h.net_cuts) or h.link_paused or (up is not None and bool(up.net_cuts))
        with self._cut_lock:
            for proxy, cut in want.items():
                if self._cut_state.get(proxy) == cut:
                    continue
                try:
                    if cut:
                        for stream in ("upstream", "downstream"):
                            self.proxies.add_toxic(proxy, "timeout", {"timeout": 0}, stream=stream,
                                                   name=f"{CUT_TOXIC}-{stream}")
                    else:
                        for stream in ("upstream", "downstream"):
                            with contextlib.suppress(Exception):
                                self.proxies.remove_toxic(proxy, f"{CUT_TOXIC}-{stream}")
                except Exception:
                    logger.exception("could not %s proxy %s", "cut" if cut else "restore", proxy)
                    continue
                self._cut_state[proxy] = cut
                logger.info("proxy %s %s", proxy, "blackholed" if cut else "restored")

    def is_cut(self, proxy: str) -> bool:
        return self._cut_state.get(proxy, False)

    # -- DNS -----------------------------------------------------------------------------------------------
    def publish(self, inst: Instance) -> None:
        """The endpoint name answers the current primary host's address."""
        self.dns.set_record(inst.dns_name, "A", [inst.primary.address], ttl=self.dns_ttl)

    def unpublish(self, inst: Instance) -> None:
        with contextlib.suppress(Exception):
            self.dns.delete_record(inst.dns_name)

    # -- operations ----------------------------------------------------------------------------------------
    def promote_replica(self, inst: Instance) -> float:
        """A read replica becomes a standalone writable primary; replication from its source stops for good."""
        host = inst.primary
        took = repl.promote(host.cluster)
        self.unlink(host)
        host.role = "primary"
        if inst.source is not None:
            with contextlib.suppress(ValueError):
                inst.source.replicas.remove(inst)
        inst.source = None
        self.sync_cuts()
        return took

    def failover(self, inst: Instance, *, crash: bool, delay: float = 0.0) -> float:
        """Multi-AZ failover: fence the old primary (clients blackholed), stop it (cleanly, so every standby
        has all its WAL; or kill it when ``crash``), wait ``delay`` (the AWS-profile detection time), promote
        the synchronous standby, flip DNS, point the replicas at it. Returns seconds from fence to DNS flip.
        The old host is rebuilt as the new standby later (``rebuild_standby``)."""
        old, new = inst.primary, inst.standby
        if new is None:
            raise HarnessError(f"{inst.identifier} has no standby to fail over to", obj=inst)
        t0 = time.perf_counter()
        old.client_cuts.add("failover")
        self.sync_cuts()
        old.expected_down = True
        if crash or old.net_cuts:
            old.cluster.kill()
            self.park(old)
        else:
            # Fenced, not shut down: a shutdown would close its connections, and a fenced AWS host's clients
            # see nothing at all. Acknowledged commits are on the synchronous standby already.
            old.cluster.freeze()
            old.frozen = old.cluster
        if delay > 0:
            self.sleep(delay)
        repl.promote(new.cluster)
        self.serve(new)
        repl.set_sync_standbys(new.cluster, [])
        self.unlink(new)
        new.role = "primary"
        old.role = "standby"
        inst.primary, inst.standby = new, None
        inst.lost_hosts.append(old)
        self.publish(inst)
        took = time.perf_counter() - t0
        inst.failovers += 1
        self.sync_cuts()
        for replica in list(inst.replicas):
            self.follow(replica.primary, new)
        return took

    def follow(self, host: Host, upstream: Host, timeout: float = 5.0) -> None:
        """Stream from ``upstream`` now (a new primary after failover). A standby that went past the point
        where the new primary's timeline branched cannot follow: it is cloned again."""
        self._link(host, upstream)
        self.sync_cuts()
        if upstream.net_cuts or host.net_cuts:
            return  # cut off: it catches up when the network is back
        try:
            repl.wait_streaming(upstream.cluster, host.cluster, timeout=timeout)
        except WaitTimeout:
            logger.warning("%s cannot follow %s (diverged timeline?): cloning it again", host.name, upstream.name)
            repl.clone_into(host.cluster, upstream.cluster, upstream=(str(host.link_address), PORT))
            repl.wait_streaming(upstream.cluster, host.cluster, timeout=30)

    def rebuild_standby(self, inst: Instance, old: Host) -> None:
        """Make ``old`` (a former primary) the instance's synchronous standby again: cloned from the current
        primary, streaming through its link, still hidden from clients."""
        primary = inst.primary
        old.role = "standby"
        old.expected_down = True
        self.fresh_server(old)
        self._link(old, primary)
        repl.clone_into(old.cluster, primary.cluster, upstream=(str(old.link_address), PORT))
        repl.set_sync_standbys(primary.cluster, [old.cluster.name])
        repl.wait_streaming(primary.cluster, old.cluster, timeout=30, sync=True)
        old.expected_down = False
        old.client_cuts.discard("failover")
        with contextlib.suppress(ValueError):
            inst.lost_hosts.remove(old)
        inst.standby = old
        self.sync_cuts()

    def drop_standby(self, inst: Instance) -> None:
        """Back to Single-AZ: the standby goes away and commits stop waiting for it."""
        standby = inst.standby
        inst.standby = None
        repl.set_sync_standbys(inst.primary.cluster, [])
        for host in [h for h in (standby, *inst.lost_hosts) if h is not None]:
            self.remove_host(host)
        inst.lost_hosts.clear()

    def restart(self, host: Host) -> None:
        """Reboot: a fast shutdown (or nothing, if it crashed) and a start with crash recovery."""
        host.expected_down = True
        try:
            host.cluster.stop("fast", timeout=10)
            host.cluster.start()
        finally:
            host.expected_down = False

    def delete(self, inst: Instance) -> None:
        self.unpublish(inst)
        if inst.source is not None:
            with contextlib.suppress(ValueError):
                inst.source.replicas.remove(inst)
        for host in inst.hosts:
            self.remove_host(host)

    def close(self) -> None:
        with self._hosts_lock:
            hosts = list(self.hosts)
        for host in hosts:
            try:
                self.remove_host(host)
            except Exception:
                logger.exception("removing %s failed", host)
