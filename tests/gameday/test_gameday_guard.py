"""Game-day guard rails, with moto playing the real AWS account."""
from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

from faults.base import active_faults  # noqa: E402
from faults.gameday import (  # noqa: E402
    FailoverDbCluster,
    FisExperiment,
    GuardRailError,
    GuardRails,
    RebootDbInstance,
    game_day,
)

ACCOUNT = "123456789012"  # moto's account
ALLOW = [{"Key": "dbdrill:allow", "Value": "true"}]


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        rds = boto3.client("rds", region_name="us-east-1")
        tagged = rds.create_db_cluster(DBClusterIdentifier="drill", Engine="aurora-postgresql", MasterUsername="u",
                                       MasterUserPassword="password123", Tags=ALLOW)["DBCluster"]
        plain = rds.create_db_cluster(DBClusterIdentifier="prod", Engine="aurora-postgresql", MasterUsername="u",
                                      MasterUserPassword="password123")["DBCluster"]
        for name in ("drill-1", "drill-2"):
            rds.create_db_instance(DBInstanceIdentifier=name, DBClusterIdentifier="drill", Engine="aurora-postgresql",
                                   DBInstanceClass="db.r5.large")
        yield {"rds": rds, "tagged": tagged["DBClusterArn"], "plain": plain["DBClusterArn"]}


def guard(out: io.StringIO, **kw: Any) -> GuardRails:
    kw.setdefault("allow_accounts", [ACCOUNT])
    return GuardRails(clients=lambda svc, region: boto3.client(svc, region_name=region), out=out, **kw)


def writer(rds: Any) -> str:
    members = rds.describe_db_clusters(DBClusterIdentifier="drill")["DBClusters"][0]["DBClusterMembers"]
    return next(m["DBInstanceIdentifier"] for m in members if m["IsClusterWriter"])


def test_allow_listed_tagged_failover_runs_and_prints_the_plan(fake_aws: Any) -> None:
    out = io.StringIO()
    g = guard(out)
    before = writer(fake_aws["rds"])
    target = "drill-2" if before == "drill-1" else "drill-1"
    action = FailoverDbCluster(g, fake_aws["tagged"], target_instance=target)
    with game_day(g, [action]):
        with action:
            pass
    assert writer(fake_aws["rds"]) == target
    text = out.getvalue()
    assert f"game day in account {ACCOUNT}" in text
    assert "1. rds.failover_db_cluster(DBClusterIdentifier='drill'" in text


def test_dry_run_prints_and_changes_nothing(fake_aws: Any) -> None:
    out = io.StringIO()
    g = guard(out, dry_run=True)
    before = writer(fake_aws["rds"])
    action = FailoverDbCluster(g, fake_aws["tagged"], target_instance="drill-2" if before == "drill-1" else "drill-1")
    with game_day(g, [action]), action:
        pass
    assert writer(fake_aws["rds"]) == before
    assert "[dry-run] would call rds.failover_db_cluster" in out.getvalue()


def test_account_not_allow_listed_is_refused_before_anything(fake_aws: Any) -> None:
    out = io.StringIO()
    g = guard(out, allow_accounts=["999999999999"])
    before = writer(fake_aws["rds"])
    with pytest.raises(GuardRailError, match="account 123456789012, which is not in the allow-list"):
        with game_day(g, [FailoverDbCluster(g, fake_aws["tagged"])]):
            pytest.fail("body must not run")
    assert writer(fake_aws["rds"]) == before
    assert out.getvalue() == ""


def test_untagged_resource_is_refused(fake_aws: Any) -> None:
    g = guard(io.StringIO())
    with pytest.raises(GuardRailError, match="does not carry the allow tag dbdrill:allow=true"):
        with game_day(g, [RebootDbInstance(g, fake_aws["plain"].replace(":cluster:", ":db:"))]):
            pass


def test_no_allow_list_means_no_game_day() -> None:
    with pytest.raises(GuardRailError, match="needs --dbdrill-aws-allow-accounts"):
        GuardRails(clients=lambda s, r: None, allow_accounts=[])
    with pytest.raises(GuardRailError, match="KEY=VALUE"):
        GuardRails(clients=lambda s, r: None, allow_accounts=[ACCOUNT], allow_tag="nope")


def test_abort_stops_the_running_fis_experiment(fake_aws: Any) -> None:
    fis = boto3.client("fis", region_name="us-east-1")
    tpl = fis.create_experiment_template(
        clientToken="t", description="failover", roleArn=f"arn:aws:iam::{ACCOUNT}:role/fis",
        stopConditions=[{"source": "none"}], tags={"dbdrill:allow": "true"},
        targets={"c": {"resourceType": "aws:rds:cluster", "resourceArns": [fake_aws["tagged"]],
                       "selectionMode": "ALL"}},
        actions={"a": {"actionId": "aws:rds:failover-db-cluster", "targets": {"Clusters": "c"}}},
    )["experimentTemplate"]
    arn = f"arn:aws:fis:us-east-1:{ACCOUNT}:experiment-template/{tpl['id']}"
    out = io.StringIO()
    g = guard(out)
    exp = FisExperiment(g, arn)
    with pytest.raises(KeyboardInterrupt), game_day(g, [exp]):
        exp.start()
        assert exp.experiment_id
        started = exp.experiment_id
        raise KeyboardInterrupt  # the operator's Ctrl-C
    state = fis.get_experiment(id=started)["experiment"]["state"]["status"]
    assert state in ("stopping", "stopped")
    assert "aborted: healing every active fault" in out.getvalue()
    assert f"stopping FIS experiment {started}" in out.getvalue()
    assert active_faults() == []
    assert os.environ.get("AWS_ENDPOINT_URL") is None
