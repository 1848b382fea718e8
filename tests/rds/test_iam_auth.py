"""IAM database auth on DB instances: tokens from generate_db_auth_token log rds_iam members in (real PostgreSQL,
PAM, the run's authority); expired, foreign, tampered tokens and passwords are refused; failover keeps it on."""
from __future__ import annotations

from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from harness.rds.iamauth import authority

REFUSED = "PAM authentication failed"


def iam_user(db: Any, name: str = "iam_app", password: str | None = None) -> str:
    """A database user allowed to log in with IAM (GRANT rds_iam), as the RDS docs set one up."""
    with db.connect() as conn:
        extra = f" PASSWORD '{password}'" if password else ""
        conn.execute(f"CREATE USER {name}{extra}")
        conn.execute(f"GRANT rds_iam TO {name}")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {name}")
    return name


def login(host: str, port: int, user: str, password: str, dbname: str = "app") -> psycopg.Connection[Any]:
    return psycopg.connect(host=host, port=port, user=user, password=password, dbname=dbname, autocommit=True,
                           connect_timeout=5)


def enable_iam(db: Any) -> None:
    db.client.modify_db_instance(DBInstanceIdentifier=db.identifier, EnableIAMDatabaseAuthentication=True,
                                 ApplyImmediately=True)


def test_a_fresh_token_logs_in_and_expires_after_15_minutes(postgres_instance: Any, rds: Any, clock: Any) -> None:
    db = postgres_instance("iamdb")
    enable_iam(db)
    assert db.describe()["IAMDatabaseAuthenticationEnabled"] is True
    user = iam_user(db)
    clock.freeze()  # emulated time stands still from just before the token is signed: no real second slips in
    token = db.client.generate_db_auth_token(DBHostname=db.address, Port=db.port, DBUsername=user,
                                             Region=db.region)
    with login(db.address, db.port, user, token) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)
        conn.execute("CREATE TABLE mine (id int)")
    with login(db.address, db.port, user, token):
        pass  # a token may be used for any number of logins within its 15 minutes
    clock.advance(899)
    login(db.address, db.port, user, token).close()
    clock.advance(2)
    with pytest.raises(psycopg.OperationalError, match=REFUSED):
        login(db.address, db.port, user, token)
    decision = authority(rds).last(user)
    assert decision is not None and not decision.ok and "expired" in decision.reason
    with db.connect() as conn:  # the master user keeps its password login
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_foreign_tampered_tokens_and_passwords_are_refused(postgres_instance: Any, rds: Any) -> None:
    db = postgres_instance("iamdb")
    other = postgres_instance("otherdb")
    enable_iam(db)
    user = iam_user(db, password="a-real-password-1")
    iam_user(db, "someone_else")
    gen = db.client.generate_db_auth_token
    cases = {
        "another user's token": ("someone_else", gen(db.address, db.port, "someone_else", db.region), "for user"),
        "another host's token": (user, gen(other.address, other.port, user, db.region), "is for"),
        "another port's token": (user, gen(db.address, 5433, user, db.region), "is for"),
        "another region's token": (user, gen(db.address, db.port, user, "eu-west-1"), "region"),
        "a password": (user, "a-real-password-1", "not an IAM auth token"),
    }
    good = gen(db.address, db.port, user, db.region)
    cases["a tampered signature"] = (user, good[:-4] + ("0000" if not good.endswith("0000") else "1111"),
                                     "signature")
    for what, (login_as, token, reason) in cases.items():
        as_user = user if what == "another user's token" else login_as
        with pytest.raises(psycopg.OperationalError, match=REFUSED):
            login(db.address, db.port, as_user, token)
        decision = authority(rds).last(as_user)
        assert decision is not None and reason in decision.reason, (what, decision)
    with login(db.address, db.port, user, good) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)


def test_created_with_iam_and_it_survives_a_failover(rds: Any, aws: Any, dns_resolver: Any) -> None:
    client = aws.client("rds")
    client.create_db_instance(DBInstanceIdentifier="iamha", Engine="postgres", DBInstanceClass="db.t3.micro",
                              MasterUsername="master", MasterUserPassword="master-pass-1", DBName="app",
                              MultiAZ=True, EnableIAMDatabaseAuthentication=True)
    desc = client.describe_db_instances(DBInstanceIdentifier="iamha")["DBInstances"][0]
    assert desc["IAMDatabaseAuthenticationEnabled"] is True and desc["DBInstanceStatus"] == "available"
    host, port = desc["Endpoint"]["Address"], desc["Endpoint"]["Port"]
    with login(host, port, "master", "master-pass-1") as conn:
        conn.execute("CREATE USER iam_app")
        conn.execute("GRANT rds_iam TO iam_app")
    old = rds.instance("iamha").primary
    rds.force_failover("iamha")
    assert rds.instance("iamha").primary is not old
    dns_resolver.flush()
    token = client.generate_db_auth_token(host, port, "iam_app", "us-east-1")
    with login(host, port, "iam_app", token) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    client.modify_db_instance(DBInstanceIdentifier="iamha", EnableIAMDatabaseAuthentication=False)
    assert client.describe_db_instances(DBInstanceIdentifier="iamha")["DBInstances"][0][
        "IAMDatabaseAuthenticationEnabled"] is False
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(host, port, "iam_app", token)  # back to passwords: the role has none


def test_without_root_the_api_says_what_to_do(postgres_instance: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db = postgres_instance("iamdb")
    monkeypatch.setattr("harness.rds.iamauth_pam.os.geteuid", lambda: 1000)
    with pytest.raises(ClientError, match=r"needs root|only root") as err:
        enable_iam(db)
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"
    assert "EnableIAMDatabaseAuthentication" in str(err.value)
    assert db.describe()["IAMDatabaseAuthenticationEnabled"] is False
