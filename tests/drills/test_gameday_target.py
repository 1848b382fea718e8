"""`--target aws`: a drill performs its fault through the AWS API behind the guard rails. A `dbdrill up` stack
plays the real account (its RDS API, its DNS) and the drill runs as a separate program, as on a game day."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from harness.process import Executor

DBDRILL = str(Path(sys.executable).parent / "dbdrill")
ACCOUNT = "123456789012"


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DBDRILL_"))}, **extra}


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `dbdrill up` stack as the account, with a tagged Multi-AZ instance and an untagged one."""
    log = tmp_path_factory.mktemp("up") / "up.log"
    up = Executor("dbdrill up", [DBDRILL, "up"], log_path=log, timeout=90, env=clean_env({}),
                  ready=lambda: log.exists() and "# dbdrill up: ready" in log.read_text())
    up.start()
    try:
        exports = {}
        for line in log.read_text().splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                exports[key] = shlex.split(value)[0]
        rds = boto3.client("rds", endpoint_url=exports["AWS_ENDPOINT_URL"], region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        for name, tags in (("orders", [{"Key": "dbdrill:allow", "Value": "true"}]), ("billing", [])):
            rds.create_db_instance(DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.r6g.large",
                                   MasterUsername="app", MasterUserPassword="app-pass-1", DBName="app", MultiAZ=True,
                                   Tags=tags)
        rds.get_waiter("db_instance_available").wait(DBInstanceIdentifier="orders", WaiterConfig={"Delay": 1})
        exports["ENDPOINT"] = rds.describe_db_instances(DBInstanceIdentifier="orders")["DBInstances"][0][
            "Endpoint"]["Address"]
        yield exports
    finally:
        up.stop()


def drill(account: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env({k: v for k, v in account.items() if k != "ENDPOINT"})
    dsn = f"host={account['ENDPOINT']} port=5432 user=app password=app-pass-1 dbname=app"
    return subprocess.run([DBDRILL, "drill", "multi_az_failover", "--target", "aws", "--report-dir", "out",
                           "--aws-dsn", dsn, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def arn(name: str) -> str:
    return f"arn:aws:rds:us-east-1:{ACCOUNT}:db:{name}"


def test_game_day_failover_through_the_api(account: dict[str, str], tmp_path: Path) -> None:
    res = drill(account, tmp_path, "--aws-allow-accounts", ACCOUNT, "--aws-resource", arn("orders"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"game day in account {ACCOUNT}" in out
    assert "rds.reboot_db_instance(DBInstanceIdentifier='orders', ForceFailover=True)" in out
    [journal] = (tmp_path / "out").glob("multi_az_failover-*/journal.json")
    assert '"verdict": "pass"' in journal.read_text()


def test_dry_run_prints_the_plan_and_changes_nothing(account: dict[str, str], tmp_path: Path) -> None:
    rds = boto3.client("rds", endpoint_url=account["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    before = rds.describe_db_instances(DBInstanceIdentifier="orders")["DBInstances"][0]["AvailabilityZone"]
    res = drill(account, tmp_path, "--aws-allow-accounts", ACCOUNT, "--aws-resource", arn("orders"), "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "dry run" in res.stdout and "1. rds.reboot_db_instance" in res.stdout
    after = rds.describe_db_instances(DBInstanceIdentifier="orders")["DBInstances"][0]["AvailabilityZone"]
    assert before == after


@pytest.mark.parametrize(("args", "message"), [
    (["--aws-resource", arn("orders")], "allow-list"),
    (["--aws-allow-accounts", "999999999999", "--aws-resource", arn("orders")], "not in the allow-list"),
    (["--aws-allow-accounts", ACCOUNT, "--aws-resource", arn("billing")], "does not carry the allow tag"),
    (["--aws-allow-accounts", ACCOUNT], "--dbdrill-aws-resource"),
])
def test_refusals_change_nothing(account: dict[str, str], tmp_path: Path, args: list[str], message: str) -> None:
    res = drill(account, tmp_path, *args)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr


def test_aurora_game_day(account: dict[str, str], tmp_path: Path) -> None:
    rds = boto3.client("rds", endpoint_url=account["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    cluster = rds.create_db_cluster(DBClusterIdentifier="ledger", Engine="aurora-postgresql", MasterUsername="app",
                                    MasterUserPassword="app-pass-1", DatabaseName="app",
                                    Tags=[{"Key": "dbdrill:allow", "Value": "true"}])["DBCluster"]
    for name in ("ledger-1", "ledger-2"):
        rds.create_db_instance(DBInstanceIdentifier=name, DBClusterIdentifier="ledger", Engine="aurora-postgresql",
                               DBInstanceClass="db.r6g.large")
    env = clean_env({k: v for k, v in account.items() if k != "ENDPOINT"})
    dsn = f"host={cluster['Endpoint']} port=5432 user=app password=app-pass-1 dbname=app"
    res = subprocess.run([DBDRILL, "drill", "aurora_failover", "--target", "aws", "--report-dir", "out",
                          "--aws-allow-accounts", ACCOUNT, "--aws-resource",
                          f"arn:aws:rds:us-east-1:{ACCOUNT}:cluster:ledger", "--aws-dsn", dsn],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rds.failover_db_cluster(DBClusterIdentifier='ledger')" in res.stdout
    members = rds.describe_db_clusters(DBClusterIdentifier="ledger")["DBClusters"][0]["DBClusterMembers"]
    assert {m["DBInstanceIdentifier"]: m["IsClusterWriter"] for m in members} == {"ledger-1": False, "ledger-2": True}


def test_aurora_az_outage_game_day_through_fis(account: dict[str, str], tmp_path: Path) -> None:
    """The AZ-outage drill's game day starts the user's FIS template; the emulated FIS API runs it for real."""
    session = {"endpoint_url": account["AWS_ENDPOINT_URL"], "region_name": "us-east-1",
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    rds, ec2, fis = (boto3.client(s, **session) for s in ("rds", "ec2", "fis"))  # type: ignore[call-overload]
    cluster = rds.create_db_cluster(DBClusterIdentifier="books", Engine="aurora-postgresql", MasterUsername="app",
                                    MasterUserPassword="app-pass-1", DatabaseName="app")["DBCluster"]
    for name in ("books-1", "books-2", "books-3"):  # books-1, the writer, in us-east-1a
        rds.create_db_instance(DBInstanceIdentifier=name, DBClusterIdentifier="books", Engine="aurora-postgresql",
                               DBInstanceClass="db.r6g.large")
    subnet = next(s for s in ec2.describe_subnets()["Subnets"] if s["AvailabilityZone"] == "us-east-1a")
    subnet_arn = f"arn:aws:ec2:us-east-1:{ACCOUNT}:subnet/{subnet['SubnetId']}"
    template = fis.create_experiment_template(
        clientToken="az", description="lose us-east-1a", roleArn=f"arn:aws:iam::{ACCOUNT}:role/fis",
        stopConditions=[{"source": "none"}], tags={"dbdrill:allow": "true"},
        targets={"subnets": {"resourceType": "aws:ec2:subnet", "resourceArns": [subnet_arn], "selectionMode": "ALL"}},
        actions={"cut": {"actionId": "aws:network:disrupt-connectivity", "targets": {"Subnets": "subnets"},
                         "parameters": {"scope": "availability-zone", "duration": "PT1M"}}})["experimentTemplate"]
    env = clean_env({k: v for k, v in account.items() if k != "ENDPOINT"})
    dsn = f"host={cluster['Endpoint']} port=5432 user=app password=app-pass-1 dbname=app"
    res = subprocess.run([DBDRILL, "drill", "aurora_az_outage", "--target", "aws", "--report-dir", "out",
                          "--aws-allow-accounts", ACCOUNT, "--aws-resource",
                          f"arn:aws:fis:us-east-1:{ACCOUNT}:experiment-template/{template['id']}", "--aws-dsn", dsn],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"fis.start_experiment(experimentTemplateId='{template['id']}')" in res.stdout
    [experiment] = fis.list_experiments()["experiments"]
    assert experiment["state"]["status"] in ("completed", "stopped")
    members = rds.describe_db_clusters(DBClusterIdentifier="books")["DBClusters"][0]["DBClusterMembers"]
    writer = next(m["DBInstanceIdentifier"] for m in members if m["IsClusterWriter"])
    assert writer != "books-1", "the writer's AZ was lost: the cluster failed over to another AZ"
    [journal] = (tmp_path / "out").glob("aurora_az_outage-*/journal.json")
    assert '"verdict": "pass"' in journal.read_text()


def test_aurora_az_outage_game_day_needs_a_fis_template(account: dict[str, str], tmp_path: Path) -> None:
    env = clean_env({k: v for k, v in account.items() if k != "ENDPOINT"})
    res = subprocess.run([DBDRILL, "drill", "aurora_az_outage", "--target", "aws", "--report-dir", "out",
                          "--aws-allow-accounts", ACCOUNT, "--aws-resource",
                          f"arn:aws:rds:us-east-1:{ACCOUNT}:cluster:books", "--aws-dsn", "host=x user=app dbname=app"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "experiment-template/ID" in res.stdout + res.stderr
