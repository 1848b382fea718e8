"""FIS templates against real RDS on the emulator: reboot with failover, AZ connectivity loss from subnets,
cross-region cut of replication."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from faults.fis import ExperimentRunner, Registry
from faults.fis_emulator import register_all
from harness.wait import WaitTimeout, wait_until

ACCOUNT = "123456789012"


def template(actions: dict[str, Any], targets: dict[str, Any]) -> dict[str, Any]:
    return {"description": "drill", "targets": targets, "actions": actions,
            "stopConditions": [{"source": "none"}], "roleArn": f"arn:aws:iam::{ACCOUNT}:role/fis"}


def registry() -> Registry:
    from faults.fis import default_registry

    reg = default_registry.copy()
    register_all(reg)
    return reg


def subnet_arn(aws: Any, region: str, az: str) -> str:
    subnets = aws.client("ec2", region=region).describe_subnets()["Subnets"]
    sid = next(s["SubnetId"] for s in subnets if s["AvailabilityZone"] == az)
    return f"arn:aws:ec2:{region}:{ACCOUNT}:subnet/{sid}"


def test_reboot_with_forced_failover(postgres_instance: Any, aws: Any) -> None:
    db = postgres_instance("fis-ha", multi_az=True)
    tpl = template({"reboot": {"actionId": "aws:rds:reboot-db-instances", "parameters": {"forceFailover": "true"},
                               "targets": {"DBInstances": "db"}}},
                   {"db": {"resourceType": "aws:rds:db", "resourceArns": [db.arn], "selectionMode": "ALL"}})
    record = ExperimentRunner(tpl, registry=registry(), extra={"endpoint": aws}).run()
    assert record.state == "completed", record.reason
    assert db.describe()["AvailabilityZone"] == "us-east-1b"


def test_disrupt_connectivity_of_an_az_fails_over_and_heals(postgres_instance: Any, aws: Any,
                                                            dns_resolver: Any) -> None:
    db = postgres_instance("fis-az", multi_az=True)
    tpl = template({"cut": {"actionId": "aws:network:disrupt-connectivity",
                            "parameters": {"scope": "availability-zone", "duration": "PT20S"},
                            "targets": {"Subnets": "az-a"}}},
                   {"az-a": {"resourceType": "aws:ec2:subnet", "selectionMode": "ALL",
                             "resourceArns": [subnet_arn(aws, "us-east-1", "us-east-1a")]}})
    runner = ExperimentRunner(tpl, registry=registry(), time_scale=0.1, extra={"endpoint": aws})
    done = threading.Thread(target=runner.run)
    done.start()
    wait_until(lambda: db.describe()["AvailabilityZone"] == "us-east-1b", 30, what="failover to us-east-1b")
    dns_resolver.flush()
    with db.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    done.join(60)
    assert runner.record.state == "completed", runner.record.reason
    assert runner.record.actions["cut"].end is not None


def test_cross_region_cut_holds_replication_then_catches_up(postgres_instance: Any, aws: Any) -> None:
    primary = postgres_instance("fis-home", region="us-west-2")
    replica = postgres_instance("fis-dr", source=primary, region="us-east-1")
    with primary.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")

    def count() -> int:
        with replica.connect() as conn:
            return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])

    wait_until(lambda: _exists(replica), 10, what="the table on the replica")
    tpl = template({"cut": {"actionId": "aws:network:route-table-disrupt-cross-region-connectivity",
                            "parameters": {"region": "us-east-1", "duration": "PT20S"},
                            "targets": {"Subnets": "home"}}},
                   {"home": {"resourceType": "aws:ec2:subnet", "selectionMode": "ALL",
                             "resourceArns": [subnet_arn(aws, "us-west-2", "us-west-2a")]}})
    runner = ExperimentRunner(tpl, registry=registry(), time_scale=0.1, extra={"endpoint": aws})
    thread = threading.Thread(target=runner.run)
    thread.start()
    wait_until(lambda: runner.record.actions["cut"].injected is not None, 10, what="the cut to take effect")
    with primary.connect() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    # The row cannot cross while the route is cut (replication takes milliseconds otherwise).
    with pytest.raises(WaitTimeout):
        wait_until(lambda: count() == 1, 1.0, what="the row to arrive")
    thread.join(60)
    assert runner.record.state == "completed", runner.record.reason
    wait_until(lambda: count() == 1, 15, what="the replica to catch up")


def _exists(db: Any) -> bool:
    with db.connect() as conn:
        return conn.execute("SELECT to_regclass('t') IS NOT NULL").fetchone()[0] is True
