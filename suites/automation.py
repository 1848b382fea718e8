"""The failover automation of the seed pattern, written only with boto3 calls so it runs unchanged against
AWS and against the emulator: promote a read replica (in another region, typically) and point the app's
Route53 name at it. ``handler`` is a Lambda handler for SQS-delivered SNS messages carrying either an RDS
event notification or a CloudWatch alarm state change."""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import boto3
from botocore.config import Config

logger = logging.getLogger(__name__)

# RDS events that mean "the primary is gone" (failure, failover started, shut down, DB instance restarted
# in a degraded state) — what a real subscription filters on.
TRIGGER_EVENTS = frozenset({"RDS-EVENT-0031", "RDS-EVENT-0004", "RDS-EVENT-0013", "RDS-EVENT-0006"})

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=2, read_timeout=10)


def promote_and_flip(replica_id: str, replica_region: str, zone_id: str, record_name: str, *,
                     ttl: int = 1, wait: bool = True, session: Any = None) -> str:
    """Promote ``replica_id`` in ``replica_region``, wait until it is available, then UPSERT ``record_name``
    (a CNAME in hosted zone ``zone_id``) to the promoted instance's endpoint. Returns that endpoint."""
    boto = session or boto3
    rds = boto.client("rds", region_name=replica_region, config=_CONFIG)
    desc = rds.describe_db_instances(DBInstanceIdentifier=replica_id)["DBInstances"][0]
    if desc.get("ReadReplicaSourceDBInstanceIdentifier"):
        rds.promote_read_replica(DBInstanceIdentifier=replica_id)
    else:
        logger.info("%s is already standalone; only DNS is updated", replica_id)
    if wait:
        rds.get_waiter("db_instance_available").wait(DBInstanceIdentifier=replica_id,
                                                     WaiterConfig={"Delay": 1, "MaxAttempts": 600})
    endpoint = rds.describe_db_instances(DBInstanceIdentifier=replica_id)["DBInstances"][0]["Endpoint"]["Address"]
    route53 = boto.client("route53", config=_CONFIG)
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
        "Comment": f"failover to {replica_id}",
        "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": record_name, "Type": "CNAME", "TTL": ttl, "ResourceRecords": [{"Value": endpoint}]}}]})
    logger.warning("failover automation: promoted %s (%s), %s -> %s", replica_id, replica_region, record_name,
                   endpoint)
    return endpoint


def is_trigger(message: dict[str, Any]) -> bool:
    """An RDS event notification naming a trigger event, or a CloudWatch alarm entering ALARM."""
    event_id = str(message.get("Event ID", "")).rsplit("#", 1)[-1]
    if event_id in TRIGGER_EVENTS:
        return True
    return message.get("NewStateValue") == "ALARM"


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point (SQS trigger, each body an SNS envelope). Configuration from the environment, as a
    Lambda would have it: DR_REPLICA_ID, DR_REGION, DR_ZONE_ID, DR_RECORD_NAME."""
    done: list[str] = []
    for record in event.get("Records", []):
        body = json.loads(record["body"])
        message = json.loads(body["Message"]) if "Message" in body else body
        if not is_trigger(message):
            continue
        endpoint = promote_and_flip(os.environ["DR_REPLICA_ID"], os.environ["DR_REGION"],
                                    os.environ["DR_ZONE_ID"], os.environ["DR_RECORD_NAME"])
        done.append(endpoint)
        break  # one failover per batch is enough
    return {"failovers": done}
