"""IAM auth at the RDS Proxy (Auth IAMAuth=REQUIRED): a token for the proxy endpoint logs the secret's user in
(PgBouncer checks it through PAM, then logs in to the database with the secret); expired, foreign-host and
other-user tokens and the plain password are refused. The PAM files go when the run stops."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.rds.iamauth import authority
from harness.rds.iamauth_pam import PREFIX, PamServices, reap_stale


def via_proxy(proxy: Any, user: str, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host=proxy.endpoint, port=proxy.port, user=user, password=password, dbname=proxy.dbname,
                           autocommit=True, prepare_threshold=None, connect_timeout=5)


def test_tokens_at_the_proxy(postgres_instance: Any, rds_proxy: Any, rds: Any, clock: Any) -> None:
    db = postgres_instance("pxiam")
    proxy = rds_proxy(db, iam=True)
    assert proxy.describe()["Auth"][0]["IAMAuth"] == "REQUIRED"
    gen = proxy.client.generate_db_auth_token
    token = gen(DBHostname=proxy.endpoint, Port=5432, DBUsername=proxy.user, Region=proxy.region)
    with via_proxy(proxy, proxy.user, token) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (proxy.user,)  # the secret's login, on the DB
    for what, user, password, reason in (
            ("the password", proxy.user, proxy.password, "not an IAM auth token"),
            ("a token for the instance", proxy.user, gen(db.address, db.port, proxy.user, proxy.region), "is for"),
            ("another user's token", "intruder", gen(proxy.endpoint, 5432, "intruder", proxy.region),
             "may not log in")):
        with pytest.raises(psycopg.OperationalError):
            via_proxy(proxy, user, password)
        decision = authority(rds).last(user)
        assert decision is not None and reason in decision.reason, (what, decision)
    clock.advance(901)
    with pytest.raises(psycopg.OperationalError):
        via_proxy(proxy, proxy.user, token)
    decision = authority(rds).last(proxy.user)
    assert decision is not None and "expired" in decision.reason
    shared = Path("/etc/pam.d/pgbouncer")
    assert shared.exists() and "dbdrill" in shared.read_text()


def test_pam_files_are_removed_at_stop_and_dead_runs_reaped(tmp_path: Path) -> None:
    pam_dir = tmp_path / "pam.d"
    pam_dir.mkdir()
    pam = PamServices(tmp_path / "state", tmp_path / "auth.sock", pam_dir=pam_dir)
    name = pam.install()
    pam.install_shared()
    assert (pam_dir / name).exists() and (pam_dir / "pgbouncer").exists()
    text = (pam_dir / name).read_text()
    assert "pam_exec.so expose_authtok" in text and str(tmp_path / "auth.sock") in text
    dead = pam_dir / f"{PREFIX}999999-1"
    dead.write_text(text.replace(pam.owner, "999999-1"))  # a run that was killed: its pid is gone
    foreign = pam_dir / f"{PREFIX}someone-elses"
    foreign.write_text("auth required pam_permit.so\n")  # not ours: never touched
    assert reap_stale(pam_dir, pam.users_dir) == [dead]
    pam.remove()
    assert sorted(p.name for p in pam_dir.iterdir()) == [foreign.name]
