"""RdsReconciler: makes moto's RDS DB instances real. RDS API calls (seen by an interceptor in front of moto,
see harness/rds/api.py) become PostgreSQL clusters, standbys, promotions and failovers (harness/rds/fleet.py);
moto's records are then edited so DescribeDBInstances tells the truth; events go to SNS. A monitor thread
fails Multi-AZ instances over when their primary dies, and restarts crashed single-AZ ones."""
from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.rds import replication as repl
from harness.rds.fleet import Fleet, Host, Instance
from harness.wait import wait_until

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint
    from harness.rds.events import RdsEvents
    from harness.rds.postgres import PgEngine
    from harness.stack import Stack

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timings:
    """How long things take. ``failover_delay``: from fencing the old primary to promoting the standby (AWS
    detects, decides, promotes: 60-120 s). ``dns_ttl``: of the endpoint names (RDS: 5 s).
    ``crash_restart_delay``: a crashed single-AZ primary is restarted
    after this. ``api_waits``: API calls return only when the real work is done (so the first describe already
    shows the result); otherwise they return at once and the work runs in the background, as on AWS."""

    failover_delay: float
    dns_ttl: int
    reboot_delay: float
    crash_restart_delay: float
    monitor_interval: float
    api_waits: bool


TIMINGS = {
    "fast": Timings(failover_delay=0.0, dns_ttl=1, reboot_delay=0.0, crash_restart_delay=0.2, monitor_interval=0.05,
                    api_waits=True),
    "aws": Timings(failover_delay=60.0, dns_ttl=5, reboot_delay=10.0, crash_restart_delay=30.0, monitor_interval=1.0,
                   api_waits=False),
}
API_WAIT_TIMEOUT = 120.0

# Running reconcilers, newest last (a nested pytest session, as pytester runs, has its own).
_running: list[RdsReconciler] = []


def current_reconciler() -> RdsReconciler:
    """The running reconciler (the default for database faults); HarnessError if none runs."""
    if not _running:
        raise HarnessError("no RDS reconciler is running: use the `rds` fixture (or Stack().rds) first, or pass "
                           "reconciler= explicitly")
    return _running[-1]


# Modules that extend the reconciler (RDS Proxy, Aurora, IAM auth), imported at start when present. Each
# defines ``extension(reconciler) -> RdsExtension``.
EXTENSION_MODULES = ("harness.rds.aurora", "harness.rds.rdsproxy", "harness.rds.iamauth")


class RdsExtension:
    """A part of emulated RDS beyond DB instances. ``handlers(base)`` returns the RDS API operations it
    answers (``base`` holds the instance handlers, so an extension can wrap one, e.g. CreateDBInstance for
    cluster members); the other hooks are called by the reconciler."""

    def handlers(self, base: dict[str, Any]) -> dict[str, Any]:
        return {}

    def primary_changed(self, inst: Instance) -> None:
        """``inst``'s primary moved (failover, promotion): follow it (an RDS Proxy retargets)."""

    def az_down(self, region: str, az: str, reason: str) -> None:
        """Availability Zone ``az`` is lost: cut this extension's hosts there (``reason`` into their net_cuts)
        and react as AWS does."""

    def az_up(self, region: str, az: str, reason: str) -> None:
        """The AZ cut for ``reason`` is back: lift the cut and recover."""

    def reset(self) -> None:
        """Remove what this extension made (between tests)."""

    def stop(self) -> None:
        """Stop what this extension runs."""


def load_extensions(rec: RdsReconciler) -> list[RdsExtension]:
    import importlib

    found: list[RdsExtension] = []
    for name in EXTENSION_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        found.append(mod.extension(rec))
    return found


class RdsReconciler:
    """Constructed by ``Stack.rds``; ``start()`` needs PostgreSQL (NotInstalledError otherwise) and starts the
    AWS endpoint, the DNS server and the fault proxy it builds on."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.settings = stack.settings
        self.timings = TIMINGS[stack.settings.time_profile]
        self.instances: dict[tuple[str, str], Instance] = {}
        self.lock = threading.RLock()
        self.engine: PgEngine | None = None
        self._data_dir: Path | None = None
        self.aws: AwsEndpoint = None  # type: ignore[assignment]  # set by start()
        self._fleet: Fleet | None = None
        self._events: RdsEvents | None = None
        self._interceptor: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._busy: dict[int, int] = {}
        self._tokens = itertools.count(1)
        self._az_down: dict[int, tuple[str, str]] = {}
        self._fences: dict[int, tuple[Host, str]] = {}
        self.extensions: list[RdsExtension] = []

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> RdsReconciler:
        from harness.rds.api import RdsInterceptor
        from harness.rds.events import RdsEvents
        from harness.rds.pgbin import find_pg_bin
        from harness.rds.postgres import PgEngine
        from harness.rds.storage import data_base_dir, reap_stray_postgres
        from harness.toxiproxy import ToxiproxyClient

        bins = find_pg_bin(self.settings.pg_bin)
        root = self.stack.runtime.root
        reap_stray_postgres(root)
        self._data_dir = data_base_dir(root, self.stack.runtime.run.path)
        self.engine = PgEngine(bins, self._data_dir, self.stack.hosts.allocate, template_root=root / "pg-templates")
        # Kept, not looked up through the stack again: its lock is held while it stops us.
        self.aws = aws = self.stack.aws
        dns, shared = self.stack.dns, self.stack.toxiproxy
        # A client of our own: per-test resets of the stack's client must not lift the fences and hidden
        # standbys this reconciler keeps on its proxies.
        proxies = ToxiproxyClient(shared.url, shared.timeout, prefix=shared.prefix)
        self._fleet = Fleet(self.engine, proxies, dns, self.stack.hosts.allocate)
        self._fleet.sleep = self.pause
        self._fleet.dns_ttl = self.timings.dns_ttl
        self._events = RdsEvents(aws)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dbdrill-rds")
        self.extensions = load_extensions(self)
        self._interceptor = RdsInterceptor(self)
        aws._app().interceptors.append(self._interceptor)
        self._stop.clear()
        self._monitor = threading.Thread(target=self._watch, name="dbdrill-rds-monitor", daemon=True)
        self._monitor.start()
        _running.append(self)
        logger.info("RDS reconciler started (PostgreSQL %s, profile %s)", bins.version, self.settings.time_profile)
        return self

    def stop(self) -> None:
        if self in _running:
            _running.remove(self)
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(10)
            self._monitor = None
        if self._interceptor is not None and self.aws is not None and self.aws.app is not None:
            with contextlib.suppress(ValueError):
                self.aws.app.interceptors.remove(self._interceptor)
        self._interceptor = None
        for ext in reversed(self.extensions):
            try:
                ext.stop()
            except Exception:
                logger.exception("stopping %s failed", ext)
        self.extensions = []
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._fleet is not None:
            self._fleet.close()
        if self.engine is not None:
            self.engine.stop_all()
        if self._data_dir is not None and not self._data_dir.is_relative_to(self.stack.runtime.run.path):
            shutil.rmtree(self._data_dir.parent, ignore_errors=True)  # this run's RAM dir (the run dir goes anyway)
        with self.lock:
            self.instances.clear()

    def reset(self) -> None:
        """Remove every DB instance (the real ones and moto's records), lift AZ outages and fences."""
        for ext in reversed(self.extensions):
            try:
                ext.reset()
            except Exception:
                logger.exception("resetting %s failed", ext)
        with self.lock:
            instances = list(self.instances.values())
            self._az_down.clear()
            self._fences.clear()
        for inst in instances:
            try:
                self._drop(inst)
            except Exception:
                logger.exception("removing %s failed", inst)
        if self._events is not None:
            self._events.reset()

    def republish(self) -> None:
        """Serve every instance's endpoint name again (a DNS cleanup of another test may have removed it)."""
        with self.lock:
            instances = list(self.instances.values())
        for inst in instances:
            self.fleet.publish(inst)

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (a profile delay); True if the reconciler is stopping meanwhile."""
        return self._stop.wait(seconds)

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            raise HarnessError("the RDS reconciler is not running: start() it (or use stack.rds)", obj=self)
        return self._fleet

    @property
    def events(self) -> RdsEvents:
        if self._events is None:
            raise HarnessError("the RDS reconciler is not running: start() it (or use stack.rds)", obj=self)
        return self._events

    # -- lookup --------------------------------------------------------------------------------------------
    def instance(self, identifier: str, region: str | None = None) -> Instance:
        """The running DB instance ``identifier`` (in ``region``, or the only region that has it)."""
        ident = identifier.lower()
        with self.lock:
            found = [i for (r, name), i in self.instances.items() if name == ident and region in (None, r)]
        if len(found) == 1:
            return found[0]
        where = f" in {region}" if region else ""
        if not found:
            raise HarnessError(f"no DB instance {identifier!r}{where}: create it with the RDS API first "
                               "(create_db_instance), or check the identifier / region", obj=self)
        raise HarnessError(f"DB instance {identifier!r} exists in several regions: pass region=", obj=self)

    def find(self, region: str, identifier: str) -> Instance | None:
        with self.lock:
            return self.instances.get((region, identifier.lower()))

    def find_arn(self, arn_or_id: str, region: str) -> Instance | None:
        if arn_or_id.startswith("arn:"):
            parts = arn_or_id.split(":")
            return self.find(parts[3], parts[-1]) if len(parts) >= 7 else None
        return self.find(region, arn_or_id)

    def register(self, inst: Instance) -> None:
        with self.lock:
            self.instances[(inst.region, inst.identifier)] = inst

    def forget(self, inst: Instance) -> None:
        with self.lock:
            if self.instances.get((inst.region, inst.identifier)) is inst:
                del self.instances[(inst.region, inst.identifier)]

    # -- moto's records ------------------------------------------------------------------------------------
    def moto_db(self, region: str, identifier: str) -> Any:
        """moto's DBInstance record (hold ``stack.aws.lock`` when changing it), or None."""
        with self.aws.lock:
            return self.aws.backend("rds", region).databases.get(identifier)

    def set_moto(self, inst: Instance, **attrs: Any) -> None:
        """Write attributes on moto's record of ``inst`` (status, availability_zone, ...)."""
        if "status" in attrs:
            inst.status = attrs["status"]
        with self.aws.lock:
            db = self.aws.backend("rds", inst.region).databases.get(inst.identifier)
            if db is None:
                return
            for key, value in attrs.items():
                setattr(db, key, value)

    def sync_azs(self, inst: Instance) -> None:
        secondary = inst.standby.az if inst.standby is not None else (
            inst.lost_hosts[0].az if inst.lost_hosts else None)
        self.set_moto(inst, availability_zone=inst.primary.az, secondary_availability_zone=secondary,
                      multi_az=inst.multi_az)

    def primary_changed(self, inst: Instance) -> None:
        """Tell the extensions that ``inst``'s primary moved (after the DNS flip)."""
        for ext in self.extensions:
            try:
                ext.primary_changed(inst)
            except Exception:
                logger.exception("%s could not follow %s's new primary", ext, inst.identifier)

    def emit(self, inst: Instance, kind: str, message: str | None = None) -> None:
        try:
            self.events.emit(inst.region, inst.identifier, inst.arn, kind, message)
        except Exception:
            logger.exception("emitting RDS event %s for %s failed", kind, inst.identifier)

    # -- running work ---------------------------------------------------------------------------------------
    def submit(self, inst: Instance, fn: Callable[[], Any], *, what: str) -> Future[Any]:
        """Run ``fn`` for ``inst`` on the worker pool, one operation per instance at a time. If it fails the
        instance goes to status "failed" (and the error is logged and raised from the future)."""
        if self._pool is None:
            raise HarnessError("the RDS reconciler is not running", obj=self)
        key = id(inst)
        with self.lock:
            self._busy[key] = self._busy.get(key, 0) + 1

        def run() -> Any:
            try:
                with inst.lock:
                    return fn()
            except Exception:
                logger.exception("RDS %s of %s/%s failed", what, inst.region, inst.identifier)
                with contextlib.suppress(Exception):
                    self.set_moto(inst, status="failed")
                    self.emit(inst, "failed")
                raise
            finally:
                with self.lock:
                    self._busy[key] -= 1
                    if not self._busy[key]:
                        del self._busy[key]

        return self._pool.submit(run)

    def spawn(self, fn: Callable[[], Any], *, what: str, on_error: Callable[[], None]) -> Future[Any]:
        """Run ``fn`` on the worker pool (for work not tied to a registered instance yet); ``on_error`` runs
        if it fails (the error is logged and raised from the future)."""
        if self._pool is None:
            raise HarnessError("the RDS reconciler is not running", obj=self)

        def run() -> Any:
            try:
                return fn()
            except Exception:
                logger.exception("RDS %s failed", what)
                with contextlib.suppress(Exception):
                    on_error()
                raise

        return self._pool.submit(run)

    def busy(self, inst: Instance) -> bool:
        with self.lock:
            return id(inst) in self._busy

    def wait_available(self, identifier: str, region: str | None = None, timeout: float = 60.0) -> Instance:
        """Until the instance's real state and moto's record say "available"."""
        inst = self.instance(identifier, region)
        wait_until(lambda: inst.status == "available" and not self.busy(inst), timeout, interval=0.01,
                   what=f"DB instance {identifier} to be available")
        return inst

    # -- operations (also used by faults) ------------------------------------------------------------------
    def force_failover(self, identifier: str, region: str | None = None, *, crash: bool = False,
                       timeout: float = API_WAIT_TIMEOUT) -> float:
        """Multi-AZ failover now, as reboot_db_instance(ForceFailover=True) does; seconds from fence to DNS flip."""
        inst = self.instance(identifier, region)
        if inst.standby is None:
            raise HarnessError(f"{identifier} has no Multi-AZ standby ready: cannot fail over", obj=inst)
        took: float = self.submit(inst, lambda: self.do_failover(inst, crash=crash), what="failover").result(timeout)
        return took

    def do_failover(self, inst: Instance, *, crash: bool) -> float:
        """Failover steps with the instance lock held: status, events, fleet work, moto's AZs, rebuild."""
        if inst.standby is None:
            raise HarnessError(f"{inst.identifier}: no standby to fail over to", obj=inst)
        self.set_moto(inst, status="rebooting")
        self.emit(inst, "failover_started")
        took = self.fleet.failover(inst, crash=crash, delay=self.timings.failover_delay)
        self.sync_azs(inst)
        self.primary_changed(inst)
        self.set_moto(inst, status="available")
        self.emit(inst, "failover_dns")
        self.emit(inst, "failover_completed")
        logger.info("%s failed over to %s in %.3fs", inst.identifier, inst.primary.name, took)
        self.schedule_rebuilds(inst)
        return took

    def schedule_rebuilds(self, inst: Instance) -> None:
        """Old primaries whose AZ is up become the new standby (in the background)."""
        for host in list(inst.lost_hosts):
            if not self.az_is_down(host.region, host.az) and inst.standby is None:
                self.submit(inst, lambda h=host: self._rebuild(inst, h), what="standby rebuild")  # type: ignore[misc]

    def _rebuild(self, inst: Instance, host: Host) -> None:
        if host not in inst.lost_hosts or inst.standby is not None or self.az_is_down(host.region, host.az):
            return
        self.emit(inst, "recovery_started")
        self.fleet.rebuild_standby(inst, host)
        self.sync_azs(inst)
        self.emit(inst, "recovery_completed")

    def kill_primary(self, identifier: str, region: str | None = None) -> Host:
        """Crash the instance's primary (SIGKILL). The monitor reacts as RDS would: a Multi-AZ instance fails
        over, a single-AZ one is restarted (crash recovery) after ``timings.crash_restart_delay``."""
        inst = self.instance(identifier, region)
        host = inst.primary
        host.cluster.kill()
        logger.info("killed the primary %s of %s", host.name, identifier)
        return host

    def fence(self, identifier: str, region: str | None = None) -> int:
        """Blackhole the primary at its proxy (clients hang, as at a fenced AWS host); a token for unfence."""
        inst = self.instance(identifier, region)
        token = next(self._tokens)
        host = inst.primary
        host.client_cuts.add(f"fence-{token}")
        with self.lock:
            self._fences[token] = (host, f"fence-{token}")
        self.fleet.sync_cuts()
        return token

    def unfence(self, token: int) -> None:
        with self.lock:
            entry = self._fences.pop(token, None)
        if entry is not None:
            entry[0].client_cuts.discard(entry[1])
            self.fleet.sync_cuts()

    def az_is_down(self, region: str, az: str) -> bool:
        with self.lock:
            return (region, az) in self._az_down.values()

    def az_outage(self, region: str, az: str) -> int:
        """Every host in ``az`` is cut off the network; Multi-AZ instances whose primary is there fail over, those
        whose standby is there lose it (commits stop waiting for it). Returns a token for ``restore_az``."""
        token = next(self._tokens)
        reason = f"az-{token}"
        with self.lock:
            self._az_down[token] = (region, az)
            instances = [i for i in self.instances.values() if i.region == region]
        futures = []
        for inst in instances:
            for host in inst.hosts:
                if host.az == az:
                    host.net_cuts.add(reason)
        self.fleet.sync_cuts()
        for inst in instances:
            if inst.primary.az == az and inst.standby is not None and inst.standby.az != az:
                futures.append(self.submit(inst, lambda i=inst: self.do_failover(i, crash=True),  # type: ignore[misc]
                                           what="failover"))
            elif inst.standby is not None and inst.standby.az == az:
                futures.append(self.submit(inst, lambda i=inst: self._lose_standby(i), what="standby loss"))  # type: ignore[misc]
        for fut in futures:
            fut.result(API_WAIT_TIMEOUT)
        for ext in self.extensions:
            ext.az_down(region, az, reason)
        logger.info("AZ %s/%s down (token %d)", region, az, token)
        return token

    def _lose_standby(self, inst: Instance) -> None:
        standby = inst.standby
        if standby is None:
            return
        repl.set_sync_standbys(inst.primary.cluster, [])
        standby.expected_down = True
        standby.cluster.kill()
        self.fleet.park(standby)
        inst.standby = None
        inst.lost_hosts.append(standby)

    def restore_az(self, token: int) -> None:
        """The AZ is back: its hosts are reachable again and lost standbys are rebuilt."""
        with self.lock:
            down = self._az_down.pop(token, None)
            instances = list(self.instances.values())
        if down is None:
            return
        for inst in instances:
            for host in inst.hosts:
                host.net_cuts.discard(f"az-{token}")
        self.fleet.sync_cuts()
        for inst in instances:
            if inst.lost_hosts:
                self.schedule_rebuilds(inst)
        for ext in self.extensions:
            ext.az_up(down[0], down[1], f"az-{token}")

    def set_replica_lag(self, identifier: str, seconds: float | None, region: str | None = None) -> None:
        """Real replica lag: the replica applies each commit ``seconds`` after the source made it."""
        inst = self.instance(identifier, region)
        if inst.source is None:
            raise HarnessError(f"{identifier} is not a read replica: replica lag needs one", obj=inst)
        repl.set_apply_delay(inst.primary.cluster, seconds)

    def pause_replication(self, identifier: str, paused: bool = True, region: str | None = None) -> None:
        """Cut (or restore) the replica's replication link: no WAL arrives, the replica goes stale."""
        inst = self.instance(identifier, region)
        if inst.source is None and paused:
            raise HarnessError(f"{identifier} is not a read replica: nothing to pause", obj=inst)
        # Resuming a replica promoted meanwhile is a no-op: its replication is gone for good.
        inst.primary.link_paused = paused
        self.fleet.sync_cuts()

    def _drop(self, inst: Instance) -> None:
        """Remove an instance entirely (the real hosts and moto's record)."""
        self.forget(inst)
        with inst.lock:
            self.fleet.delete(inst)
        with self.aws.lock, contextlib.suppress(Exception):
            backend = self.aws.backend("rds", inst.region)
            backend.databases.pop(inst.identifier, None)

    # -- the monitor ---------------------------------------------------------------------------------------
    def _watch(self) -> None:
        crashed_at: dict[int, float] = {}
        for _ in itertools.count():
            if self._stop.wait(self.timings.monitor_interval):
                return
            with self.lock:
                instances = list(self.instances.values())
            for inst in instances:
                try:
                    self._check(inst, crashed_at)
                except Exception:
                    logger.exception("monitoring %s failed", inst)

    def _check(self, inst: Instance, crashed_at: dict[int, float]) -> None:
        if self.moto_db(inst.region, inst.identifier) is None and not self.busy(inst):
            # moto's state was reset (the aws fixture, /moto-api/reset): the real instance goes too.
            logger.info("moto forgot %s/%s: removing it", inst.region, inst.identifier)
            self._drop(inst)
            return
        host = inst.primary
        if inst.status != "available" or self.busy(inst) or host.expected_down or host.cluster.running():
            crashed_at.pop(id(inst), None)
            return
        if host.net_cuts:
            return  # unreachable, not crashed: its AZ outage decides
        standby = inst.standby
        if standby is not None and standby.cluster.running() and not standby.net_cuts:
            logger.warning("primary %s of %s died: failing over", host.name, inst.identifier)
            self.submit(inst, lambda: self.do_failover(inst, crash=True), what="failover")
            return
        first = crashed_at.setdefault(id(inst), time.monotonic())
        if time.monotonic() - first >= self.timings.crash_restart_delay:
            crashed_at.pop(id(inst), None)
            logger.warning("primary %s of %s died: restarting it", host.name, inst.identifier)
            self.submit(inst, lambda: self._recover(inst), what="crash recovery")

    def _recover(self, inst: Instance) -> None:
        self.set_moto(inst, status="rebooting")
        self.emit(inst, "shutdown")
        self.fleet.restart(inst.primary)
        self.set_moto(inst, status="available")
        self.emit(inst, "restarted")
