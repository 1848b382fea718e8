"""The RDS Proxy API on the emulator: AWS-shaped answers (endpoint name, statuses, target health with reasons),
clear errors for what a user can get wrong, and delete stopping the real proxy."""
from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError

from faults.database import fence
from harness.rds.rdsproxy_client import ROLE_ARN, default_subnets


def code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


@pytest.fixture
def api(aws: Any, rds: Any) -> dict[str, Any]:
    """Clients and the arguments every create_db_proxy needs (a secret with a real login is made per test)."""
    return {"rds": aws.client("rds"), "sm": aws.client("secretsmanager"), "role": ROLE_ARN.format(
        account=aws.account_id), "subnets": default_subnets(aws, "us-east-1")}


def secret(api: dict[str, Any], name: str, user: str, password: str) -> str:
    arn: str = api["sm"].create_secret(Name=name, SecretString=json.dumps({"username": user,
                                                                          "password": password}))["ARN"]
    return arn


def create(api: dict[str, Any], name: str, secret_arn: str, **kw: Any) -> dict[str, Any]:
    args = {"DBProxyName": name, "EngineFamily": "POSTGRESQL", "RoleArn": api["role"], "VpcSubnetIds": api["subnets"],
            "Auth": [{"AuthScheme": "SECRETS", "SecretArn": secret_arn, "IAMAuth": "DISABLED"}], **kw}
    out: dict[str, Any] = api["rds"].create_db_proxy(**args)["DBProxy"]
    return out


def test_create_describe_register_health_delete(postgres_instance: Any, api: dict[str, Any],
                                                 dns_resolver: Any) -> None:
    db = postgres_instance("pxapi")
    client = api["rds"]
    answer = create(api, "orders-proxy", secret(api, "pxapi", db.user, db.password), IdleClientTimeout=900)
    assert answer["Status"] == "creating"  # as AWS answers the create
    endpoint = answer["Endpoint"]
    assert endpoint.startswith("orders-proxy.proxy-") and endpoint.endswith(".us-east-1.rds.amazonaws.com")
    desc = client.describe_db_proxies(DBProxyName="orders-proxy")["DBProxies"][0]
    assert (desc["Status"], desc["Endpoint"], desc["IdleClientTimeout"]) == ("available", endpoint, 900)
    assert client.describe_db_proxy_targets(DBProxyName="orders-proxy")["Targets"] == []
    with pytest.raises(psycopg.OperationalError):  # no target yet: the login waits for a server that never comes
        psycopg.connect(host=endpoint, port=5432, user=db.user, password=db.password, dbname=db.dbname,
                        connect_timeout=2)

    client.register_db_proxy_targets(DBProxyName="orders-proxy", DBInstanceIdentifiers=["pxapi"])
    [target] = client.describe_db_proxy_targets(DBProxyName="orders-proxy")["Targets"]
    assert target["TargetHealth"] == {"State": "AVAILABLE"}
    assert (target["Endpoint"], target["Port"], target["Type"], target["RdsResourceId"]) == (
        db.address, 5432, "RDS_INSTANCE", "pxapi")
    with psycopg.connect(host=endpoint, port=5432, user=db.user, password=db.password, dbname=db.dbname,
                         autocommit=True, prepare_threshold=None, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (db.user,)

    with fence(db):
        [target] = client.describe_db_proxy_targets(DBProxyName="orders-proxy")["Targets"]
        assert target["TargetHealth"]["State"] == "UNAVAILABLE"
        assert target["TargetHealth"]["Reason"] == "CONNECTION_FAILED"
    assert client.describe_db_proxy_targets(DBProxyName="orders-proxy")["Targets"][0]["TargetHealth"] == {
        "State": "AVAILABLE"}

    client.deregister_db_proxy_targets(DBProxyName="orders-proxy", DBInstanceIdentifiers=["pxapi"])
    assert client.describe_db_proxy_targets(DBProxyName="orders-proxy")["Targets"] == []
    client.register_db_proxy_targets(DBProxyName="orders-proxy", DBInstanceIdentifiers=["pxapi"])

    assert client.delete_db_proxy(DBProxyName="orders-proxy")["DBProxy"]["Status"] == "deleting"
    with pytest.raises(ClientError) as err:
        client.describe_db_proxies(DBProxyName="orders-proxy")
    assert code(err) == "DBProxyNotFoundFault"
    with pytest.raises(psycopg.OperationalError):  # nothing answers at the endpoint any more
        psycopg.connect(host=endpoint, port=5432, user=db.user, password=db.password, dbname=db.dbname,
                        connect_timeout=2)


def test_a_wrong_secret_shows_as_auth_failure(postgres_instance: Any, api: dict[str, Any]) -> None:
    db = postgres_instance("pxauth")
    create(api, "badlogin", secret(api, "pxauth", db.user, "not-the-password"))
    api["rds"].register_db_proxy_targets(DBProxyName="badlogin", DBInstanceIdentifiers=["pxauth"])
    health = api["rds"].describe_db_proxy_targets(DBProxyName="badlogin")["Targets"][0]["TargetHealth"]
    assert (health["State"], health["Reason"]) == ("UNAVAILABLE", "AUTH_FAILURE")
    assert "password authentication failed" in health["Description"]


def test_bad_input_is_refused_with_the_fix(postgres_instance: Any, api: dict[str, Any], aws: Any) -> None:
    db = postgres_instance("pxbad")
    good = secret(api, "pxbad", db.user, db.password)
    client = api["rds"]
    for family in ("MYSQL", "SQLSERVER"):
        with pytest.raises(ClientError, match="use EngineFamily POSTGRESQL") as err:
            create(api, "p-mysql", good, EngineFamily=family)
        assert code(err) == "InvalidParameterValue"
    missing = f"arn:aws:secretsmanager:us-east-1:{aws.account_id}:secret:nope-AbCdEf"
    with pytest.raises(ClientError, match=r"not found in Secrets Manager.*create_secret") as err:
        create(api, "p-nosecret", missing)
    assert code(err) == "InvalidParameterValue"
    no_user = api["sm"].create_secret(Name="half", SecretString=json.dumps({"password": "x"}))["ARN"]
    with pytest.raises(ClientError, match='"username" and "password"'):
        create(api, "p-half", no_user)
    with pytest.raises(ClientError, match="ClientPasswordAuthType"):
        create(api, "p-mysqlauth", good, Auth=[{"AuthScheme": "SECRETS", "SecretArn": good,
                                                "ClientPasswordAuthType": "MYSQL_NATIVE_PASSWORD"}])
    with pytest.raises(ClientError) as err:
        client.describe_db_proxies(DBProxyName="p-mysql")
    assert code(err) == "DBProxyNotFoundFault"  # nothing half-made was left behind

    create(api, "p-ok", good)
    with pytest.raises(ClientError, match="DBInstance ghost not found") as err:
        client.register_db_proxy_targets(DBProxyName="p-ok", DBInstanceIdentifiers=["ghost"])
    assert code(err) == "DBInstanceNotFound"
    with pytest.raises(ClientError) as err:
        client.register_db_proxy_targets(DBProxyName="p-ok", DBClusterIdentifiers=["ghost-cluster"])
    assert code(err) == "DBClusterNotFoundFault"
    with pytest.raises(ClientError) as err:
        client.register_db_proxy_targets(DBProxyName="nobody", DBInstanceIdentifiers=["pxbad"])
    assert code(err) == "DBProxyNotFoundFault"
    with pytest.raises(ClientError) as err:
        client.describe_db_proxy_targets(DBProxyName="nobody")
    assert code(err) == "DBProxyNotFoundFault"
    client.register_db_proxy_targets(DBProxyName="p-ok", DBInstanceIdentifiers=["pxbad"])
    with pytest.raises(ClientError, match="one target"):
        client.register_db_proxy_targets(DBProxyName="p-ok", DBInstanceIdentifiers=["pxbad"])
    for pool, why in (({"MaxConnectionsPercent": 0}, "MaxConnectionsPercent must be"),
                      ({"MaxConnectionsPercent": 101}, "MaxConnectionsPercent must be"),
                      ({"MaxConnectionsPercent": 40, "MaxIdleConnectionsPercent": 60}, "must not exceed"),
                      ({"ConnectionBorrowTimeout": 3601}, "ConnectionBorrowTimeout must be")):
        with pytest.raises(ClientError, match=why):
            client.modify_db_proxy_target_group(DBProxyName="p-ok", TargetGroupName="default",
                                                ConnectionPoolConfig=pool)
    with pytest.raises(ClientError, match="does not rename"):
        client.modify_db_proxy(DBProxyName="p-ok", NewDBProxyName="p-renamed")
    other = secret(api, "pxbad2", db.user, db.password)
    with pytest.raises(ClientError, match="IAMAuth with one Auth entry"):
        create(api, "p-iam2", good, Auth=[{"AuthScheme": "SECRETS", "SecretArn": arn, "IAMAuth": "REQUIRED"}
                                          for arn in (good, other)])
