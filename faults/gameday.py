"""Game days against a real AWS account: faults performed through the AWS APIs, only behind guard rails
(allow-listed account, resources carrying an allow tag, a dry run that prints the plan, an abort that
heals everything on Ctrl-C or SIGTERM)."""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from faults.base import Fault, FaultError, heal_all

logger = logging.getLogger(__name__)

ClientFactory = Callable[[str, str], Any]  # (service, region) -> boto3 client


class GuardRailError(FaultError):
    """A game-day action was refused before anything changed."""


def parse_tag(tag: str) -> tuple[str, str]:
    key, sep, value = tag.partition("=")
    if not sep or not key:
        raise GuardRailError(f"allow tag must look like KEY=VALUE (e.g. dbdrill:allow=true), got {tag!r}")
    return key, value


def arn_region(arn: str) -> str:
    parts = arn.split(":")
    if len(parts) < 6 or parts[0] != "arn":
        raise GuardRailError(f"not an ARN: {arn!r}")
    return parts[3]


@dataclass
class GuardRails:
    """Checks every real-account action before it runs. ``clients(service, region)`` makes boto3
    clients (a real session in a game day; moto in tests)."""

    clients: ClientFactory
    allow_accounts: Sequence[str]
    allow_tag: str = "dbdrill:allow=true"
    dry_run: bool = False
    region: str = "us-east-1"
    out: TextIO = field(default_factory=lambda: sys.stdout)
    verified_account: str | None = None

    def __post_init__(self) -> None:
        if not self.allow_accounts:
            raise GuardRailError(
                "target aws needs --dbdrill-aws-allow-accounts=ACCOUNT_ID: the account ids a game day may "
                "touch. Nothing was started."
            )
        self.tag_key, self.tag_value = parse_tag(self.allow_tag)

    def verify_account(self) -> str:
        """The credentials' account must be allow-listed."""
        account = str(self.clients("sts", self.region).get_caller_identity()["Account"])
        if account not in self.allow_accounts:
            raise GuardRailError(
                f"the credentials belong to account {account}, which is not in the allow-list "
                f"{list(self.allow_accounts)} (--dbdrill-aws-allow-accounts). Nothing was changed."
            )
        self.verified_account = account
        return account

    def tags_of(self, arn: str) -> dict[str, str]:
        service = arn.split(":")[2]
        region = arn_region(arn)
        if service == "rds":
            tags = self.clients("rds", region).list_tags_for_resource(ResourceName=arn)["TagList"]
            return {t["Key"]: t["Value"] for t in tags}
        if service == "dynamodb":
            tags = self.clients("dynamodb", region).list_tags_of_resource(ResourceArn=arn)["Tags"]
            return {t["Key"]: t["Value"] for t in tags}
        if service == "fis":
            template_id = arn.rsplit("/", 1)[-1]
            got = self.clients("fis", region).get_experiment_template(id=template_id)["experimentTemplate"]
            return dict(got.get("tags") or {})
        found = self.clients("resourcegroupstaggingapi", region).get_resources(ResourceARNList=[arn])
        for item in found.get("ResourceTagMappingList", []):
            return {t["Key"]: t["Value"] for t in item.get("Tags", [])}
        return {}

    def verify_tagged(self, arn: str) -> None:
        if self.verified_account is None:
            self.verify_account()
        if arn.split(":")[4] != self.verified_account:
            raise GuardRailError(f"{arn} is not in the verified account {self.verified_account}. Nothing was changed.")
        tags = self.tags_of(arn)
        if tags.get(self.tag_key) != self.tag_value:
            raise GuardRailError(
                f"{arn} does not carry the allow tag {self.tag_key}={self.tag_value} (it has "
                f"{tags or 'no tags'}). Tag the resources a game day may fault, or pick others. Nothing was changed."
            )

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


class AwsAction(Fault):
    """A fault performed through a real AWS API call, checked by the guard rails first. In a dry run
    it only prints what it would call."""

    kind = "aws-action"

    def __init__(self, guard: GuardRails, arn: str, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.guard = guard
        self.arn = arn
        self.region = arn_region(arn)

    def call(self) -> tuple[str, str, dict[str, Any]]:
        """(service, operation, kwargs) of the API call that injects the fault."""
        raise NotImplementedError

    def plan_line(self) -> str:
        service, op, kwargs = self.call()
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return f"{service}.{op}({args}) in {self.region} on {self.arn}"

    def check(self) -> None:
        self.guard.verify_tagged(self.arn)

    def _inject(self) -> None:
        self.check()
        if self.guard.dry_run:
            self.guard.say(f"[dry-run] would call {self.plan_line()}")
            return
        service, op, kwargs = self.call()
        self.guard.say(f"calling {self.plan_line()}")
        self.response = getattr(self.guard.clients(service, self.region), op)(**kwargs)

    def _heal(self) -> None:
        """One-shot actions (a failover) have nothing to undo."""

    def describe(self) -> dict[str, Any]:
        return {"arn": self.arn, "dry_run": self.guard.dry_run}

    def target_label(self) -> str:
        return self.arn


class FailoverDbCluster(AwsAction):
    kind = "aws:rds:failover-db-cluster"

    def __init__(self, guard: GuardRails, cluster_arn: str, target_instance: str | None = None) -> None:
        super().__init__(guard, cluster_arn, name=self.kind)
        self.target_instance = target_instance

    def call(self) -> tuple[str, str, dict[str, Any]]:
        kwargs: dict[str, Any] = {"DBClusterIdentifier": self.arn.rsplit(":", 1)[-1]}
        if self.target_instance:
            kwargs["TargetDBInstanceIdentifier"] = self.target_instance
        return "rds", "failover_db_cluster", kwargs


class RebootDbInstance(AwsAction):
    kind = "aws:rds:reboot-db-instances"

    def __init__(self, guard: GuardRails, instance_arn: str, force_failover: bool = True) -> None:
        super().__init__(guard, instance_arn, name=self.kind)
        self.force_failover = force_failover

    def call(self) -> tuple[str, str, dict[str, Any]]:
        return "rds", "reboot_db_instance", {
            "DBInstanceIdentifier": self.arn.rsplit(":", 1)[-1], "ForceFailover": self.force_failover,
        }


class FisExperiment(AwsAction):
    """Start an FIS experiment from a template that carries the allow tag; healing stops it (the abort)."""

    kind = "aws:fis:experiment"

    def __init__(self, guard: GuardRails, template_arn: str) -> None:
        super().__init__(guard, template_arn, name=self.kind)
        self.template_id = template_arn.rsplit("/", 1)[-1]
        self.experiment_id: str | None = None

    def call(self) -> tuple[str, str, dict[str, Any]]:
        return "fis", "start_experiment", {"experimentTemplateId": self.template_id}

    def _inject(self) -> None:
        super()._inject()
        if not self.guard.dry_run:
            self.experiment_id = self.response["experiment"]["id"]

    def _heal(self) -> None:
        if self.experiment_id is None:
            return
        fis = self.guard.clients("fis", self.region)
        state = fis.get_experiment(id=self.experiment_id)["experiment"]["state"]["status"]
        if state in ("pending", "initiating", "running"):
            self.guard.say(f"stopping FIS experiment {self.experiment_id}")
            fis.stop_experiment(id=self.experiment_id)
        self.experiment_id = None


@contextlib.contextmanager
def game_day(guard: GuardRails, actions: Sequence[AwsAction]) -> Iterator[GuardRails]:
    """Verify everything first (account, tags of every target), print the plan, then run the body.
    Ctrl-C or SIGTERM aborts: every fault still active is healed before the error goes up."""
    account = guard.verify_account()
    for action in actions:
        action.check()
    guard.say(f"game day in account {account}{' (dry run: nothing will change)' if guard.dry_run else ''}; plan:")
    for i, action in enumerate(actions, 1):
        guard.say(f"  {i}. {action.plan_line()}")
    previous: Any = None
    on_main = threading.current_thread() is threading.main_thread()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if on_main:
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield guard
    except KeyboardInterrupt:
        guard.say("aborted: healing every active fault")
        raise
    finally:
        healed = heal_all()
        if healed:
            logger.warning("game day healed %d fault(s) left active", len(healed))
        if on_main:
            signal.signal(signal.SIGTERM, previous)
