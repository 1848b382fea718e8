"""RDS DB instances made real: boto3 create -> a running PostgreSQL behind its proxy, reachable by its DNS
endpoint name with the master login; describe tells the truth; reboot, modify, stop/start, delete; bad input."""
from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from harness.config import Settings
from harness.errors import NotInstalledError
from harness.plugin.rds import PostgresInstance
from harness.rds.reconciler import RdsReconciler
from harness.stack import Stack
from tests.rds.pgkit import resolve

Make = Callable[..., PostgresInstance]


def test_create_connect_write_read(postgres_instance: Make, rds: RdsReconciler, aws: Any) -> None:
    client = aws.client("rds")
    answer = client.create_db_instance(DBInstanceIdentifier="orders", Engine="postgres", DBInstanceClass="db.t3.micro",
                                       MasterUsername="admin_user", MasterUserPassword="orders-pass-1",
                                       DBName="orders", AllocatedStorage=20)
    assert answer["DBInstance"]["DBInstanceStatus"] == "creating"
    desc = client.describe_db_instances(DBInstanceIdentifier="orders")["DBInstances"][0]
    assert desc["DBInstanceStatus"] == "available"
    assert desc["Endpoint"]["Address"] == "orders.aaaaaaaaaa.us-east-1.rds.amazonaws.com"
    assert desc["Endpoint"]["Port"] == 5432
    assert rds.engine is not None and desc["EngineVersion"] == rds.engine.bins.version
    assert desc["MultiAZ"] is False and "SecondaryAvailabilityZone" not in desc
    inst = rds.instance("orders")
    # The endpoint name resolves (through dbdrill's DNS) to the proxy in front of the server, not the server.
    assert resolve(desc["Endpoint"]["Address"]) == inst.primary.address != inst.primary.cluster.host
    with psycopg.connect(host=desc["Endpoint"]["Address"], port=5432, user="admin_user", password="orders-pass-1",
                         dbname="orders", autocommit=True, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO items VALUES (1, 'widget')")
        assert conn.execute("SELECT name FROM items").fetchone() == ("widget",)
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("admin_user", "orders")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=desc["Endpoint"]["Address"], port=5432, user="admin_user", password="wrong-pass-1",
                        dbname="orders", connect_timeout=5)
    messages = [e["Message"] for e in client.describe_events(SourceIdentifier="orders",
                                                              SourceType="db-instance")["Events"]]
    assert messages == ["DB instance created"]


def test_factory_and_pg_connect(postgres_instance: Make, pg_connect: Callable[..., Any]) -> None:
    db = postgres_instance("inventory", db_name="stock")
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int)")
    with pg_connect(db.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with pg_connect(db.instance) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("stock",)


def test_reboot_restarts_the_server(postgres_instance: Make, pg_connect: Callable[..., Any]) -> None:
    db = postgres_instance()
    pid = db.instance.primary.cluster.pid
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
        answer = db.client.reboot_db_instance(DBInstanceIdentifier=db.identifier)
        assert answer["DBInstance"]["DBInstanceStatus"] == "rebooting"
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert db.instance.primary.cluster.pid != pid
    assert db.describe()["DBInstanceStatus"] == "available"
    with pg_connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_modify_multi_az_and_password(postgres_instance: Make, pg_connect: Callable[..., Any]) -> None:
    db = postgres_instance()
    answer = db.client.modify_db_instance(DBInstanceIdentifier=db.identifier, MultiAZ=True, ApplyImmediately=True)
    assert answer["DBInstance"]["DBInstanceStatus"] == "modifying"
    desc = db.describe()
    assert desc["DBInstanceStatus"] == "available" and desc["MultiAZ"] is True
    assert desc["SecondaryAvailabilityZone"] == "us-east-1b" and desc["AvailabilityZone"] == "us-east-1a"
    standby = db.instance.standby
    assert standby is not None and standby.cluster.in_recovery()
    db.client.modify_db_instance(DBInstanceIdentifier=db.identifier, MasterUserPassword="new-pass-22",
                                 ApplyImmediately=True)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        pg_connect(db)
    db.password = "new-pass-22"
    with pg_connect(db) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    db.client.modify_db_instance(DBInstanceIdentifier=db.identifier, MultiAZ=False, ApplyImmediately=True)
    desc = db.describe()
    assert desc["MultiAZ"] is False and "SecondaryAvailabilityZone" not in desc
    assert db.instance.standby is None and not standby.cluster.running()


def test_stop_and_start(postgres_instance: Make, pg_connect: Callable[..., Any]) -> None:
    db = postgres_instance()
    db.client.stop_db_instance(DBInstanceIdentifier=db.identifier)
    assert db.describe()["DBInstanceStatus"] == "stopped"
    with pytest.raises(psycopg.OperationalError):
        pg_connect(db, connect_timeout=2)
    db.client.start_db_instance(DBInstanceIdentifier=db.identifier)
    assert db.describe()["DBInstanceStatus"] == "available"
    with pg_connect(db) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_delete_removes_everything(postgres_instance: Make, rds: RdsReconciler, aws: Any) -> None:
    db = postgres_instance()
    inst = db.instance
    cluster = inst.primary.cluster
    answer = db.client.delete_db_instance(DBInstanceIdentifier=db.identifier, SkipFinalSnapshot=True)
    assert answer["DBInstance"]["DBInstanceStatus"] == "deleting"
    assert not cluster.running() and not cluster.root.exists()
    with pytest.raises(ClientError, match="DBInstanceNotFound"):
        db.describe()
    with pytest.raises(socket.gaierror):
        resolve(db.address)
    assert inst.primary.proxy not in rds.fleet.proxies.proxies()
    messages = [e["Message"] for e in db.client.describe_events(SourceIdentifier=db.identifier,
                                                                 SourceType="db-instance")["Events"]]
    assert messages == ["DB instance created", "DB instance deleted"]


@pytest.mark.parametrize(("engine", "fragment"), [("mysql", "Invalid DB engine: 'mysql'"),
                                                  ("aurora-postgresql", "use Engine='postgres'")])
def test_unsupported_engine_is_refused(rds: RdsReconciler, aws: Any, engine: str, fragment: str) -> None:
    client = aws.client("rds")
    with pytest.raises(ClientError) as err:
        client.create_db_instance(DBInstanceIdentifier="nope", Engine=engine, DBInstanceClass="db.t3.micro",
                                  MasterUsername="admin_user", MasterUserPassword="long-enough-1")
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert fragment in err.value.response["Error"]["Message"] and "postgres" in err.value.response["Error"]["Message"]
    assert client.describe_db_instances()["DBInstances"] == []


@pytest.mark.parametrize(("args", "code", "fragment"), [
    ({"MasterUserPassword": "short"}, "InvalidParameterValue", "shorter than 8 characters"),
    ({"MasterUserPassword": "has space 123"}, "InvalidParameterValue", "printable ASCII"),
    ({"MasterUsername": "rdsadmin"}, "InvalidParameterValue", "reserved"),
    ({"MultiAZ": True, "AvailabilityZone": "us-east-1c"}, "InvalidParameterCombination", "Multi-AZ"),
    ({"DBName": "1bad"}, "InvalidParameterValue", "DBName"),
])
def test_bad_create_parameters(rds: RdsReconciler, aws: Any, args: dict[str, Any], code: str, fragment: str) -> None:
    params = {"DBInstanceIdentifier": "bad", "Engine": "postgres", "DBInstanceClass": "db.t3.micro",
              "MasterUsername": "admin_user", "MasterUserPassword": "long-enough-1", **args}
    with pytest.raises(ClientError) as err:
        aws.client("rds").create_db_instance(**params)
    assert err.value.response["Error"]["Code"] == code
    assert fragment in err.value.response["Error"]["Message"]


def test_promote_a_non_replica_and_failover_single_az(postgres_instance: Make) -> None:
    db = postgres_instance()
    with pytest.raises(ClientError) as err:
        db.client.promote_read_replica(DBInstanceIdentifier=db.identifier)
    assert err.value.response["Error"]["Code"] == "InvalidDBInstanceState"
    assert "is not a read replica" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        db.client.reboot_db_instance(DBInstanceIdentifier=db.identifier, ForceFailover=True)
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"
    assert "not Multi-AZ" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        db.client.promote_read_replica(DBInstanceIdentifier="no-such-db")
    assert err.value.response["Error"]["Code"] == "DBInstanceNotFound"


def test_missing_postgres_is_a_clear_error(tmp_path: Path) -> None:
    stack = Stack(Settings(pg_bin=tmp_path / "bogus"))
    try:
        with pytest.raises(NotInstalledError) as err:
            stack.rds  # noqa: B018 - starting it is the test
        msg = str(err.value)
        assert str(tmp_path / "bogus") in msg and "apt-get install postgresql" in msg and "--dbdrill-pg-bin" in msg
        assert not stack.started("aws endpoint") and not stack.started("rds reconciler")
    finally:
        stack.close()
