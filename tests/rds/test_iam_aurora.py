"""IAM database auth on Aurora clusters: with EnableIAMDatabaseAuthentication a token for the cluster, reader or a
member's own endpoint logs an rds_iam member in on real PostgreSQL; expired (15 min on the clock), wrong-user and
other clusters' tokens are refused; it holds on a reader added later and across a failover; off again by modify."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from harness.clock import Clock
from harness.dns.resolver import ResolverHook
from harness.plugin.aurora import AuroraHandle
from harness.rds.iamauth import authority
from harness.wait import wait_until

Make = Callable[..., AuroraHandle]
REFUSED = "PAM authentication failed"


def iam_user(db: AuroraHandle, name: str = "iam_app") -> str:
    """A database user allowed to log in with IAM (GRANT rds_iam), as the RDS docs set one up."""
    with db.connect() as conn:
        conn.execute(f"CREATE USER {name}")
        conn.execute(f"GRANT rds_iam TO {name}")
    return name


def token(db: AuroraHandle, endpoint: str, user: str) -> str:
    return str(db.client.generate_db_auth_token(DBHostname=endpoint, Port=db.port, DBUsername=user,
                                                Region=db.region))


def expires_at(signed: str) -> float:
    """Epoch seconds when ``signed`` runs out: its X-Amz-Date plus X-Amz-Expires (900)."""
    import calendar
    import time
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit("https://" + signed).query)
    issued = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    return float(issued + int(query["X-Amz-Expires"][0]))


def login(endpoint: str, port: int, user: str, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host=endpoint, port=port, user=user, password=password, dbname="app", autocommit=True,
                           connect_timeout=5)


def replicated(db: AuroraHandle, member: str, user: str) -> None:
    with db.connect(member) as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
                   == (1,), 10, what=f"{user} on {member}")


def test_tokens_for_the_cluster_endpoints_log_in_and_expire(aurora_cluster: Make, rds: Any, clock: Clock,
                                                            dns_resolver: ResolverHook) -> None:
    db = aurora_cluster("iamc", readers=1, iam=True)
    assert db.describe()["IAMDatabaseAuthenticationEnabled"] is True
    user = iam_user(db)
    replicated(db, "iamc-2", user)
    writer_token = token(db, db.writer_endpoint, user)
    with login(db.writer_endpoint, db.port, user, writer_token) as conn:
        assert conn.execute("SELECT current_user, pg_is_in_recovery()").fetchone() == (user, False)
    with login(db.reader_endpoint, db.port, user, token(db, db.reader_endpoint, user)) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    member = db.endpoint("iamc-2")
    with login(member, db.port, user, token(db, member, user)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)
    # Another user's token and a password are refused.
    with pytest.raises(psycopg.OperationalError, match=REFUSED):
        login(db.writer_endpoint, db.port, user, token(db, db.writer_endpoint, "someone_else"))
    with pytest.raises(psycopg.OperationalError, match=REFUSED):
        login(db.writer_endpoint, db.port, user, db.password)
    # Frozen, so no real time slips in: one second before the token's 15 minutes are up it still works.
    clock.freeze()
    clock.advance(expires_at(writer_token) - clock.time() - 1)
    login(db.writer_endpoint, db.port, user, writer_token).close()
    clock.advance(2)
    with pytest.raises(psycopg.OperationalError, match=REFUSED):
        login(db.writer_endpoint, db.port, user, writer_token)
    decision = authority(rds).last(user)
    assert decision is not None and not decision.ok and "expired" in decision.reason
    with db.connect() as conn:  # the master user keeps its password login
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_another_clusters_token_is_refused(aurora_cluster: Make, dns_resolver: ResolverHook) -> None:
    mine = aurora_cluster("mine", readers=0, iam=True)
    theirs = aurora_cluster("theirs", readers=0, iam=True)
    user = iam_user(mine)
    iam_user(theirs)
    with pytest.raises(psycopg.OperationalError, match=REFUSED):
        login(mine.writer_endpoint, mine.port, user, token(theirs, theirs.writer_endpoint, user))


def test_iam_holds_on_new_readers_and_across_failover_and_can_be_turned_off(aurora_cluster: Make,
                                                                           dns_resolver: ResolverHook,
                                                                           clock: Clock) -> None:
    db = aurora_cluster("turn", readers=0)
    user = iam_user(db)
    with pytest.raises(psycopg.OperationalError):  # IAM off: the user has no password to log in with
        login(db.writer_endpoint, db.port, user, token(db, db.writer_endpoint, user))
    db.client.modify_db_cluster(DBClusterIdentifier="turn", EnableIAMDatabaseAuthentication=True,
                                ApplyImmediately=True)
    assert db.describe()["IAMDatabaseAuthenticationEnabled"] is True
    reader = db.add_reader("turn-2")
    replicated(db, reader, user)
    with login(db.endpoint(reader), db.port, user, token(db, db.endpoint(reader), user)):
        pass
    db.client.failover_db_cluster(DBClusterIdentifier="turn", TargetDBInstanceIdentifier=reader)
    db.wait_available(30)
    clock.advance(6)
    with login(db.writer_endpoint, db.port, user, token(db, db.writer_endpoint, user)) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    with login(db.endpoint("turn-1"), db.port, user, token(db, db.endpoint("turn-1"), user)) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)  # the old writer, rejoined
    db.client.modify_db_cluster(DBClusterIdentifier="turn", EnableIAMDatabaseAuthentication=False,
                                ApplyImmediately=True)
    with pytest.raises(psycopg.OperationalError):
        login(db.writer_endpoint, db.port, user, token(db, db.writer_endpoint, user))
