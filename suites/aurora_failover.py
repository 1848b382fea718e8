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
from suites.pgclient import aurora_apps, failover_workload
from suites.target import is_aws, resource, run_game_day

pytestmark = pytest.mark.dbdrill_drill("aurora_failover", kind="aurora-failover")

FENCE_S = 1.5  # the old writer stays fenced this long before it rejoins as a reader


def test_aurora_failover(drill: Any, request: pytest.FixtureRequest, rds_drill_connect: Any) -> None:
    if is_aws(drill.settings):
        return game_day(drill, rds_drill_connect)
    db, writer, readers = aurora_apps(drill, request, rds_drill_connect, "drill-aurora")
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

    run_game_day(drill, connect, lambda rails: FailoverDbCluster(rails, resource(drill.settings, "cluster")))
