"""IAM database authentication on emulated RDS: ``EnableIAMDatabaseAuthentication`` (create or modify) makes the
instance's servers send logins of ``rds_iam`` members to PAM, whose checker (harness/rds/iamauth_check.py) asks
this run's authority over a Unix socket; the authority accepts a ``generate_db_auth_token`` token signed with
the emulator's credentials for that endpoint, user and region, until 15 minutes after its date on the stack's
clock. RDS Proxy logins with ``IAMAuth=REQUIRED`` go through the same authority (harness/rds/rdsproxy.py)."""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.rds.iamauth_pam import IamAuthUnavailable, PamServices
from harness.rds.iamauth_token import TokenRejected, verify_token
from harness.rds.reconciler import RdsExtension

if TYPE_CHECKING:
    from harness.aws.middleware import Call
    from harness.aws.server import HttpResponse
    from harness.rds.fleet import Host, Instance
    from harness.rds.reconciler import RdsReconciler

logger = logging.getLogger(__name__)

IAM_ROLE = "rds_iam"
HBA_MARK = "# dbdrill: IAM database auth"
_ids = itertools.count(1)


@dataclass
class Realm:
    """Where a login arrives: an endpoint tokens must be signed for, and (PgBouncer's admin) plain passwords."""

    name: str
    host: str
    port: int
    region: str
    users: Callable[[str], bool] = field(default=lambda user: True)
    passwords: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()  # other endpoint names that reach the same server (Aurora: cluster, reader...)


@dataclass(frozen=True)
class Decision:
    at: float
    realm: str
    user: str
    ok: bool
    reason: str


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        authority: IamAuthority = self.server.authority  # type: ignore[attr-defined]
        try:
            request = json.loads(self.rfile.readline(65536) or b"{}")
            answer = authority.check(request)
        except Exception as exc:
            logger.exception("IAM auth check failed")
            answer = f"no: {type(exc).__name__}"
        self.wfile.write(answer.encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class IamAuthority:
    """Answers the PAM checker of every server of this run. ``resolvers`` map a server's working directory to
    its Realm; ``decisions`` keeps the last answers (tests and logs read why a login was refused)."""

    def __init__(self, rec: RdsReconciler) -> None:
        self.rec = rec
        self.resolvers: list[Callable[[Path], Realm | None]] = []
        self.decisions: deque[Decision] = deque(maxlen=2000)
        self._server: _Server | None = None
        self._lock = threading.Lock()
        self.socket_path: Path | None = None
        self.pam: PamServices | None = None

    def start(self) -> IamAuthority:
        """The socket and the run's PAM service (IamAuthUnavailable when that cannot be, e.g. not root)."""
        with self._lock:
            if self._server is None:
                runtime = self.rec.stack.runtime
                sock_dir = runtime.run.subdir("iam")
                sock_dir.chmod(0o755)
                path = sock_dir / f"auth-{next(_ids)}.sock"
                pam = PamServices(runtime.root, path)
                pam.check()
                server = _Server(str(path), _Handler)
                server.authority = self  # type: ignore[attr-defined]
                path.chmod(0o666)  # the servers' checker runs as the postgres user
                threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                 name="dbdrill-iam-auth", daemon=True).start()
                self._server, self.socket_path, self.pam = server, path, pam
        return self

    def check_available(self) -> None:
        """IamAuthUnavailable (with the fix) when IAM auth cannot run in this process."""
        PamServices(self.rec.stack.runtime.root, Path("/nonexistent")).check()

    def service(self) -> str:
        """The PAM service name for PostgreSQL's pg_hba ``pamservice=``."""
        self.start()
        assert self.pam is not None
        return self.pam.install()

    def shared_service(self) -> None:
        """The PAM service PgBouncer uses (its name is fixed: ``pgbouncer``)."""
        self.start()
        assert self.pam is not None
        self.pam.install_shared()

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
        if self.pam is not None:
            self.pam.remove()

    # -- checks -----------------------------------------------------------------------------------------
    def credentials(self) -> dict[str, str]:
        """Access key id -> secret key that may sign tokens: the emulator's dummy key and moto IAM users' keys."""
        from harness.aws.endpoint import DUMMY_KEY

        creds = {DUMMY_KEY: DUMMY_KEY}
        aws = self.rec.aws
        with contextlib.suppress(Exception), aws.lock:
            for key_id, key in aws.backend("iam").access_keys.items():
                if getattr(key, "status", "Active") == "Active":
                    creds[key_id] = key.secret_access_key
        return creds

    def resolve(self, cwd: Path) -> Realm | None:
        for resolver in list(self.resolvers):
            realm = resolver(cwd)
            if realm is not None:
                return realm
        return None

    def check(self, request: dict[str, Any]) -> str:
        user, token = str(request.get("user", "")), str(request.get("token", ""))
        realm = self.resolve(Path(str(request.get("cwd", ""))))
        if realm is None:
            return self._decide("?", user, f"no IAM-enabled server of this run at {request.get('cwd')!r}")
        if user in realm.passwords:
            ok = realm.passwords[user] == token
            return self._decide(realm.name, user, None if ok else "wrong password")
        if not realm.users(user):
            return self._decide(realm.name, user, f"user {user!r} may not log in here with IAM")
        try:
            verify_token(token, host=realm.host, port=realm.port, user=user, region=realm.region,
                         credentials=self.credentials(), now=self.rec.stack.clock.time(), aliases=realm.aliases)
        except TokenRejected as exc:
            return self._decide(realm.name, user, exc.reason)
        return self._decide(realm.name, user, None)

    def _decide(self, realm: str, user: str, refusal: str | None) -> str:
        self.decisions.append(Decision(time.time(), realm, user, refusal is None, refusal or "ok"))
        if refusal is not None:
            logger.info("IAM login of %s at %s refused: %s", user, realm, refusal)
            return f"no: {refusal}"
        return "ok"

    def last(self, user: str | None = None) -> Decision | None:
        """The latest decision (for ``user``)."""
        return next((d for d in reversed(self.decisions) if user in (None, d.user)), None)


def authority(rec: RdsReconciler) -> IamAuthority:
    """The reconciler's IAM authority (HarnessError-free: the extension is always loaded with the reconciler)."""
    for ext in rec.extensions:
        if isinstance(ext, IamAuthExtension):
            return ext.authority
    raise IamAuthUnavailable("the IAM auth extension is not loaded (harness.rds.iamauth): start the reconciler")


# -- DB instances ----------------------------------------------------------------------------------------------
def _hba_line(service: str) -> str:
    return f"host all +{IAM_ROLE} 127.0.0.0/8 pam pamservice={service} {HBA_MARK}\n"


def write_hba(host: Host, service: str | None) -> None:
    """Put (or, ``service`` None, take out) the IAM line at the top of the host's pg_hba.conf and reload."""
    path = host.cluster.data_dir / "pg_hba.conf"
    lines = [line for line in path.read_text().splitlines(keepends=True) if HBA_MARK not in line]
    text = (_hba_line(service) if service else "") + "".join(lines)
    tmp = path.with_suffix(".dbdrill")
    tmp.write_text(text)
    from harness.rds.pgbin import chown_to_service

    chown_to_service(tmp)
    tmp.replace(path)
    if host.cluster.running() and host.frozen is None:
        host.cluster.reload()


class IamAuthExtension(RdsExtension):
    """``EnableIAMDatabaseAuthentication`` on CreateDBInstance / ModifyDBInstance."""

    def __init__(self, rec: RdsReconciler) -> None:
        self.rec = rec
        self.authority = IamAuthority(rec)
        self.enabled: dict[tuple[str, str], Instance] = {}
        self.authority.resolvers.append(self._instance_realm)
        reap_pam_files(rec)

    def handlers(self, base: dict[str, Any]) -> dict[str, Any]:
        create, modify = base["CreateDBInstance"], base["ModifyDBInstance"]

        def on_create(call: Call, p: dict[str, str], region: str) -> HttpResponse:
            return self._wrap(create, call, p, region, creating=True)

        def on_modify(call: Call, p: dict[str, str], region: str) -> HttpResponse:
            return self._wrap(modify, call, p, region, creating=False)

        return {"CreateDBInstance": on_create, "ModifyDBInstance": on_modify}

    def _wrap(self, handler: Callable[..., HttpResponse], call: Call, p: dict[str, str], region: str, *,
              creating: bool) -> HttpResponse:
        from harness.rds.api import ApiError

        raw = p.get("EnableIAMDatabaseAuthentication")
        wanted = None if raw is None else raw.lower() == "true"
        if wanted is None or p.get("DBClusterIdentifier"):
            return handler(call, p, region)
        ident = p.get("DBInstanceIdentifier", "").lower()
        if not creating and self.rec.find(region, ident) is None:
            return handler(call, p, region)
        if wanted:
            try:
                self.authority.check_available()
            except IamAuthUnavailable as exc:
                raise ApiError("InvalidParameterCombination", f"dbdrill: {exc}") from None
        response = handler(call, p, region)
        if response.status != 200:
            return response
        db = self.rec.moto_db(region, ident)
        if db is not None:
            with self.rec.aws.lock:
                db.enable_iam_database_authentication = wanted
        future = self.rec.spawn(lambda: self._apply(region, ident, wanted), what=f"IAM auth setup of {ident}",
                                on_error=lambda: None)
        if self.rec.timings.api_waits:
            with contextlib.suppress(Exception):
                future.result(120)
        return response

    def _apply(self, region: str, ident: str, wanted: bool) -> None:
        inst = self.rec.wait_available(ident, region, timeout=600)
        self.rec.submit(inst, lambda: self.enable(inst) if wanted else self.disable(inst),
                        what="IAM auth setup").result(120)

    def enable(self, inst: Instance) -> None:
        """IAM logins for the instance's ``rds_iam`` members (the role is made if missing)."""
        inst.primary.cluster.sql(f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{IAM_ROLE}') "
                                 f"THEN CREATE ROLE {IAM_ROLE} NOLOGIN; END IF; END$$")
        self.enabled[(inst.region, inst.identifier)] = inst
        self._sync(inst)
        logger.info("IAM database auth enabled on %s/%s", inst.region, inst.identifier)

    def disable(self, inst: Instance) -> None:
        self.enabled.pop((inst.region, inst.identifier), None)
        for host in (inst.primary, inst.standby):
            if host is not None:
                write_hba(host, None)

    def _sync(self, inst: Instance) -> None:
        service = self.authority.service()
        for host in (inst.primary, inst.standby):
            if host is not None:
                write_hba(host, service)

    def is_enabled(self, inst: Instance) -> bool:
        return self.enabled.get((inst.region, inst.identifier)) is inst

    def _instance_realm(self, cwd: Path) -> Realm | None:
        for inst in list(self.enabled.values()):
            if self.rec.find(inst.region, inst.identifier) is not inst:
                continue
            for host in inst.hosts:
                if _same(host.cluster.data_dir, cwd):
                    return Realm(f"db:{inst.region}/{inst.identifier}", inst.dns_name, inst.port, inst.region)
        return None

    # -- hooks -------------------------------------------------------------------------------------------
    def primary_changed(self, inst: Instance) -> None:
        if self.is_enabled(inst):
            self._sync(inst)  # a promoted standby was cloned with a plain pg_hba.conf

    def reset(self) -> None:
        self.enabled.clear()
        self.authority.decisions.clear()

    def stop(self) -> None:
        self.enabled.clear()
        self.authority.stop()


def reap_pam_files(rec: RdsReconciler) -> None:
    """PAM service files left by killed runs go when a reconciler starts (root only: nobody else has any)."""
    import os

    from harness.rds.iamauth_pam import PAM_DIR, reap_stale, shared_lock

    if os.geteuid() == 0 and PAM_DIR.is_dir():
        base = rec.stack.runtime.root / "iam"
        try:
            with shared_lock(base):
                reap_stale(PAM_DIR, base / "pgbouncer-users")
        except Exception:
            logger.exception("reaping stale PAM service files failed")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def extension(rec: RdsReconciler) -> IamAuthExtension:
    return IamAuthExtension(rec)
