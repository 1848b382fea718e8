"""RDS events: recorded for DescribeEvents and delivered to the SNS topics of matching event subscriptions
(SourceType, SourceIds, EventCategories, Enabled) in the shape RDS sends ("RDS Notification Message")."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.aws.endpoint import AwsEndpoint

logger = logging.getLogger(__name__)

SOURCE_TYPE = "db-instance"
SUBJECT = "RDS Notification Message"
EVENT_DOC = "http://docs.amazonwebservices.com/AmazonRDS/latest/UserGuide/USER_Events.html"
# name -> (RDS event id, category, message) — ids and categories from the RDS event catalogue.
CATALOGUE: dict[str, tuple[str, str, str]] = {
    "created": ("RDS-EVENT-0005", "creation", "DB instance created"),
    "deleted": ("RDS-EVENT-0003", "deletion", "DB instance deleted"),
    "restarted": ("RDS-EVENT-0006", "availability", "DB instance restarted"),
    "shutdown": ("RDS-EVENT-0004", "availability", "DB instance shutdown"),
    "failover_started": ("RDS-EVENT-0013", "failover", "Multi-AZ instance failover started."),
    "failover_dns": ("RDS-EVENT-0015", "failover",
                     "Multi-AZ failover to standby complete - DNS may take a few minutes to propagate."),
    "failover_completed": ("RDS-EVENT-0049", "failover", "Multi-AZ instance failover completed."),
    "recovery_started": ("RDS-EVENT-0052", "recovery", "Recovery of the Multi-AZ instance has started."),
    "recovery_completed": ("RDS-EVENT-0053", "recovery", "Recovery of the Multi-AZ instance is complete."),
    "converting_multi_az": ("RDS-EVENT-0024", "configuration change", "Converting to Multi-AZ"),
    "converted_multi_az": ("RDS-EVENT-0025", "configuration change", "Finished converting to Multi-AZ"),
    "converting_single_az": ("RDS-EVENT-0030", "configuration change", "Converting to Single-AZ"),
    "converted_single_az": ("RDS-EVENT-0029", "configuration change", "Finished converting to Single-AZ"),
    "password_reset": ("RDS-EVENT-0016", "configuration change", "Reset master credentials"),
    "replication_started": ("RDS-EVENT-0046", "read replica", "Replication for the Read Replica resumed."),
    "replication_stopped": ("RDS-EVENT-0057", "read replica",
                            "Replication for the Read Replica terminated. The read replica was promoted."),
    "stopped": ("RDS-EVENT-0087", "notification", "DB instance stopped"),
    "started": ("RDS-EVENT-0088", "notification", "DB instance started"),
    "failed": ("RDS-EVENT-0031", "failure", "DB instance put into failed state"),
    # Source type db-cluster (Aurora); ``{name}`` is the DB instance the message is about.
    "cluster_created": ("RDS-EVENT-0170", "creation", "DB cluster created."),
    "cluster_deleted": ("RDS-EVENT-0171", "deletion", "DB cluster deleted."),
    "cluster_failover_failed": ("RDS-EVENT-0069", "failover",
                                "Cluster failover failed, check the health of your cluster instances and try again."),
    "cluster_failover_reverting": ("RDS-EVENT-0070", "failover", "Promoting previous primary again: {name}."),
    "cluster_failover_completed": ("RDS-EVENT-0071", "failover", "Completed failover to DB instance: {name}."),
    "cluster_failover_same_az": ("RDS-EVENT-0072", "failover", "Started same AZ failover to DB instance: {name}."),
    "cluster_failover_cross_az": ("RDS-EVENT-0073", "failover", "Started cross AZ failover to DB instance: {name}."),
}
CLUSTER_SOURCE_TYPE = "db-cluster"


@dataclass
class RdsEvent:
    """One event; the attribute names are what moto's DescribeEvents serialiser reads."""

    source_identifier: str
    source_arn: str
    region: str
    event_id: str
    message: str
    event_categories: list[str]
    source_type: str = SOURCE_TYPE
    date: datetime = field(default_factory=lambda: datetime.now(UTC))
    delivered_to: list[str] = field(default_factory=list)

    def notification(self) -> dict[str, str]:
        """The JSON body RDS publishes to SNS."""
        return {
            "Event Source": self.source_type,
            "Event Time": self.date.strftime("%Y-%m-%d %H:%M:%S.") + f"{self.date.microsecond // 1000:03d}",
            "Identifier Link": f"https://console.aws.amazon.com/rds/home?region={self.region}#"
                               f"{'dbcluster' if self.source_type == CLUSTER_SOURCE_TYPE else 'dbinstance'}:id="
                               f"{self.source_identifier}",
            "Source ID": self.source_identifier,
            "Source ARN": self.source_arn,
            "Event ID": f"{EVENT_DOC}#{self.event_id}",
            "Event Message": self.message,
        }


class RdsEvents:
    """Emits events for the reconciler: DescribeEvents sees them (moto's backend list), subscriptions get them."""

    def __init__(self, aws: AwsEndpoint) -> None:
        self.aws = aws
        self.history: list[RdsEvent] = []
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    def emit(self, region: str, identifier: str, arn: str, kind: str, message: str | None = None, *,
             name: str = "") -> RdsEvent:
        """``kind`` from CATALOGUE (``cluster_*``: a DB cluster event, ``name`` filling its message)."""
        event_id, category, default = CATALOGUE[kind]
        source_type = CLUSTER_SOURCE_TYPE if kind.startswith("cluster_") else SOURCE_TYPE
        event = RdsEvent(identifier, arn, region, event_id, message or default.format(name=name), [category],
                         source_type=source_type)
        with self.aws.lock:
            backend = self.aws.backend("rds", region)
            backend.events.append(event)
            subscriptions = [s for s in backend.event_subscriptions.values() if matches(s, event)]
            topics = [str(s.sns_topic_arn) for s in subscriptions]
        with self._lock:
            self.history.append(event)
        for topic in dict.fromkeys(topics):
            self._publish(region, topic, event)
        logger.info("RDS event %s %s/%s: %s", event.event_id, region, identifier, event.message)
        return event

    def _publish(self, region: str, topic: str, event: RdsEvent) -> None:
        topic_region = topic.split(":")[3] if topic.count(":") >= 5 else region
        try:
            self._client(topic_region).publish(
                TopicArn=topic, Subject=SUBJECT, Message=json.dumps(event.notification()),
                MessageAttributes={"EventID": {"DataType": "String", "StringValue": event.event_id},
                                   "Resource": {"DataType": "String", "StringValue": event.source_arn}})
            event.delivered_to.append(topic)
        except Exception as exc:
            # As RDS: an event that cannot be delivered (topic gone, SNS cut) is not retried forever.
            logger.warning("RDS event %s for %s not delivered to %s: %s", event.event_id, event.source_identifier,
                           topic, exc)

    def _client(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                from botocore.config import Config

                config = Config(retries={"total_max_attempts": 2, "mode": "standard"}, connect_timeout=2,
                                read_timeout=5)
                client = self._clients[region] = self.aws.client("sns", region=region, config=config)
            return client

    def for_source(self, identifier: str) -> list[RdsEvent]:
        with self._lock:
            return [e for e in self.history if e.source_identifier == identifier]

    def reset(self) -> None:
        with self._lock:
            self.history.clear()
            self._clients.clear()


def matches(subscription: Any, event: RdsEvent) -> bool:
    """Does an RDS event subscription want ``event``? Enabled, SourceType (none = all), SourceIds (none = all
    of that type), EventCategories (none = all)."""
    if not getattr(subscription, "enabled", True):
        return False
    source_type = getattr(subscription, "source_type", None)
    if source_type and source_type != event.source_type:
        return False
    ids = [str(i).lower() for i in getattr(subscription, "source_ids", None) or []]
    if ids and event.source_identifier.lower() not in ids:
        return False
    categories = [str(c).lower() for c in getattr(subscription, "event_categories", None) or []]
    return not categories or any(c in categories for c in event.event_categories)


def subscription_response(action: str, subscription: Any, account_id: str) -> bytes:
    """The query-protocol answer of ``action`` (ModifyEventSubscription, AddSourceIdentifierToSubscription...)
    carrying one EventSubscription: moto lacks these actions, dbdrill answers them itself."""
    from xml.sax.saxutils import escape

    from harness.aws.wire import new_request_id

    def tag(name: str, value: Any) -> str:
        return f"<{name}>{escape(str(value))}</{name}>" if value not in (None, "") else ""

    created = getattr(subscription, "created_at", None)
    ids = "".join(tag("SourceId", i) for i in subscription.source_ids or [])
    cats = "".join(tag("EventCategory", c) for c in subscription.event_categories or [])
    body = (tag("CustomerAwsId", account_id) + tag("CustSubscriptionId", subscription.subscription_name)
            + tag("SnsTopicArn", subscription.sns_topic_arn) + tag("Status", subscription.status)
            + tag("SubscriptionCreationTime", created.isoformat() if created else None)
            + tag("SourceType", subscription.source_type)
            + (f"<SourceIdsList>{ids}</SourceIdsList>" if ids else "")
            + (f"<EventCategoriesList>{cats}</EventCategoriesList>" if cats else "")
            + tag("Enabled", "true" if subscription.enabled else "false")
            + tag("EventSubscriptionArn", subscription.arn))
    return (f'<{action}Response xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><{action}Result>'
            f"<EventSubscription>{body}</EventSubscription></{action}Result><ResponseMetadata><RequestId>"
            f"{new_request_id()}</RequestId></ResponseMetadata></{action}Response>").encode()
