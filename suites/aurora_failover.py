"""Drill: Aurora writer failover. Writers insert through the cluster (writer) endpoint, readers read through
the reader endpoint; mid-load the cluster fails over (the old writer fenced as a blackhole, a reader promoted,
the cluster endpoint flipped). No acknowledged write may be lost, the writer endpoint must never serve a stale
read, readers' lag is measured against its limit, the fenced old writer must acknowledge nothing, and writes
must resume within the RTO limit.

Point it at your client with ``rds_drill_connect`` (see multi_az_failover). With ``--dbdrill-target=aws`` it
fails over your own cluster (``--dbdrill-aws-resource=arn:...:cluster:NAME``, ``--dbdrill-aws-dsn`` its writer
endpoint) through ``failover_db_cluster``, behind the game-day guard rails."""
from __future__ import annotations

import socket
from typing import Any

import pytest

from faults.aurora import writer_failover
from suites.drill import Fenced
from suites.pgclient import PgApp, Target, failover_workload
from suites.target import dsn_target, guard, is_aws, resource, stack_dns

pytestmark = pytest.mark.dbdrill_drill("aurora_failover", kind="aurora-failover")

FENCE_S = 1.5  # the old writer stays fenced this long before it rejoins as a reader


def test_aurora_failover(drill: Any, request: pytest.FixtureRequest, rds_drill_connect: Any) -> None:
    if is_aws(drill.settings):
        return game_day(drill, rds_drill_connect)
    if getattr(drill.settings, "time_profile", "fast") == "fast":
        # Seconds, not AWS's 30-60: the fence lasts 1.5 s, then the endpoint's 5 s TTL runs out at the latest.
        drill.defaults(max_rto=10.0, max_reader_lag=5.0)
    db = request.getfixturevalue("aurora_cluster")("drill-aurora", readers=2)
    login = (db.port, db.user, db.password, db.dbname)
    writer = PgApp(drill.history, Target(db.writer_endpoint, *login), rds_drill_connect)
    writer.setup()
    readers = PgApp(drill.history, Target(db.reader_endpoint, *login), rds_drill_connect)
    old_writer = db.writer()
    old_address = socket.gethostbyname(db.endpoint(old_writer))
    failover = writer_failover(db, hold_fence=True)
    failover_workload(drill, writer, Fenced(failover, drill.history, old_address), duration=FENCE_S, readers=2,
                      reader_app=readers)
    drill.note(failover_took_s=failover.took, old_writer=old_writer, new_writer=db.writer(),
               old_writer_address=old_address)
    drill.finish(writer={db.writer_endpoint},
                 checks=["lost-writes", "stale-reads", "split-brain", "recovery", "data-loss"])


def game_day(drill: Any, connect: Any) -> None:
    """Against a real cluster: failover_db_cluster behind the guard rails (allow-list, allow tag, plan, dry run)."""
    from faults.gameday import FailoverDbCluster
    from faults.gameday import game_day as guarded

    settings = drill.settings
    rails = guard(settings, drill.out)
    action = FailoverDbCluster(rails, resource(settings, "cluster"))
    target = dsn_target(settings)
    with stack_dns(), guarded(rails, [action]):
        if settings.dry_run:
            pytest.skip("dry run: the plan was printed, nothing was changed")
        app = PgApp(drill.history, target, connect)
        app.setup()
        failover_workload(drill, app, action)
    drill.note(resource=action.arn, target="aws")
    drill.finish(writer={target.host}, checks=["lost-writes", "stale-reads", "recovery", "data-loss"])
