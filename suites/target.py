"""Drills against a real AWS account (``--dbdrill-target=aws``): the resource and DSN the user names, faults
performed through the AWS APIs behind faults.gameday's guard rails."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from faults.gameday import GuardRailError, GuardRails, arn_region
from harness.config import Settings
from suites.pgclient import Target


@contextlib.contextmanager
def stack_dns() -> Iterator[None]:
    """Next to a ``dbdrill up`` stack (DBDRILL_DNS exported), names resolve through its DNS server, as they
    would through Route53 in a real account; otherwise the system resolver is used unchanged."""
    if not os.environ.get("DBDRILL_DNS"):
        yield
        return
    from harness.dns.resolver import ResolverHook

    with ResolverHook.from_env():
        yield


def is_aws(settings: Any) -> bool:
    return getattr(settings, "target", "emulator") == "aws"


def emulator_only(settings: Any, drill: str) -> None:
    """Skip (with the reason) a drill that has no game-day form."""
    if is_aws(settings):
        pytest.skip(f"drill {drill} runs on the emulator only; game-day drills: multi_az_failover, aurora_failover, "
                    "aurora_az_outage")


def guard(settings: Settings, out: Any = None) -> GuardRails:
    import boto3

    session = boto3.Session()
    region = arn_region(settings.aws_resource) if settings.aws_resource else (session.region_name or "us-east-1")
    return GuardRails(clients=lambda service, r: session.client(service, region_name=r),
                      allow_accounts=settings.aws_allow_accounts, allow_tag=settings.aws_allow_tag,
                      dry_run=settings.dry_run, region=region, out=out or sys.stdout)


def resource(settings: Settings, kind: str) -> str:
    """The ARN the user named, of the right kind (``db`` or ``cluster``)."""
    arn = settings.aws_resource
    if not arn:
        raise GuardRailError(f"target aws needs --dbdrill-aws-resource=arn:aws:rds:REGION:ACCOUNT:{kind}:NAME (the "
                             f"{'DB instance' if kind == 'db' else 'DB cluster'} to fault). Nothing was started.")
    parts = arn.split(":")
    if len(parts) < 7 or parts[2] != "rds" or parts[5] != kind:
        raise GuardRailError(f"--dbdrill-aws-resource must be an RDS {kind} ARN (arn:aws:rds:REGION:ACCOUNT:"
                             f"{kind}:NAME), got {arn!r}. Nothing was started.")
    return arn


def fis_template(settings: Settings) -> str:
    """The FIS experiment template ARN the user named."""
    arn = settings.aws_resource or ""
    parts = arn.split(":")
    if len(parts) < 6 or parts[2] != "fis" or not parts[5].startswith("experiment-template/"):
        raise GuardRailError("target aws needs --dbdrill-aws-resource=arn:aws:fis:REGION:ACCOUNT:experiment-template/"
                             f"ID (the FIS experiment template to start), got {arn or 'none'!r}. Nothing was started.")
    return arn


def dsn_target(settings: Settings) -> Target:
    """Where the drill's clients connect: the libpq DSN the user gave."""
    from psycopg.conninfo import conninfo_to_dict

    if not settings.aws_dsn:
        raise GuardRailError("target aws needs --dbdrill-aws-dsn='host=... user=... password=... dbname=...' (the "
                             "endpoint the drill's clients write through). Nothing was started.")
    info = conninfo_to_dict(settings.aws_dsn)
    missing = [k for k in ("host", "user", "dbname") if not info.get(k)]
    if missing:
        raise GuardRailError(f"--dbdrill-aws-dsn lacks {', '.join(missing)}. Nothing was started.")
    return Target(str(info["host"]), int(info.get("port") or 5432), str(info["user"]), str(info.get("password") or ""),
                  str(info["dbname"]))


def run_game_day(drill: Any, connect: Any, make_action: Any, *, duration: float = 0.5) -> None:
    """The game-day form of a database failover drill: ``make_action(rails)`` is the AWS action (built behind the
    guard rails: allow-listed account, allow tag, plan printed first, dry run, abort heals); clients write through
    the DSN the user gave while it runs ``duration`` s into the workload."""
    from faults.gameday import game_day as guarded
    from suites.pgclient import PgApp, failover_workload

    settings = drill.settings
    rails = guard(settings, drill.out)
    action = make_action(rails)
    target = dsn_target(settings)
    with stack_dns(), guarded(rails, [action]):
        if settings.dry_run:
            pytest.skip("dry run: the plan was printed, nothing was changed")
        app = PgApp(drill.history, target, connect)
        app.setup()
        failover_workload(drill, app, action, duration=duration)
    drill.note(resource=action.arn, target="aws")
    drill.finish(writer={target.host}, checks=["lost-writes", "stale-reads", "recovery", "data-loss"])
