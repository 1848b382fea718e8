"""Drill: an Aurora cluster loses its writer's Availability Zone. Writers insert through the cluster (writer)
endpoint, readers read through the reader endpoint; mid-load the writer's AZ goes dark (its members blackholed,
clients and replication alike) and Aurora fails over by itself to a reader in another AZ, the reader endpoint
leaving the lost members out. No acknowledged write may be lost (a crash failover loses none on Aurora's shared
storage, and none here: commits wait for the reachable readers), the writer endpoint must never serve a stale
read, the lost old writer must acknowledge nothing, and writes must resume within the RTO limit. When the AZ is
back the old writer rejoins as a reader.

Point it at your client with ``rds_drill_connect`` (see multi_az_failover). With ``--dbdrill-target=aws`` it
starts your own FIS experiment template (``--dbdrill-aws-resource=arn:aws:fis:REGION:ACCOUNT:experiment-template/
ID``, e.g. ``aws:network:disrupt-connectivity`` with scope ``availability-zone`` on the writer's subnet) behind the
game-day guard rails, clients writing through ``--dbdrill-aws-dsn`` (the cluster endpoint)."""
from __future__ import annotations

import socket
from typing import Any

import pytest

from faults.outage import az_outage
from suites.drill import Fenced
from suites.pgclient import aurora_apps, failover_workload
from suites.target import fis_template, is_aws, run_game_day

pytestmark = pytest.mark.dbdrill_drill("aurora_az_outage", kind="aurora-failover")

OUTAGE_S = 1.5  # how long the AZ stays dark


def test_aurora_az_outage(drill: Any, request: pytest.FixtureRequest, rds_drill_connect: Any) -> None:
    if is_aws(drill.settings):
        return game_day(drill, rds_drill_connect)
    db, writer, readers = aurora_apps(drill, request, rds_drill_connect, "drill-aurora-az")
    old_writer = db.writer()
    lost_az = db.cluster.member(old_writer).az
    old_address = socket.gethostbyname(db.endpoint(old_writer))
    outage = az_outage(lost_az, reconciler=db.reconciler)
    failover_workload(drill, writer, Fenced(outage, drill.history, old_address), duration=OUTAGE_S, readers=2,
                      reader_app=readers)
    new_writer = db.writer()
    drill.note(lost_az=lost_az, old_writer=old_writer, new_writer=new_writer,
               new_writer_az=db.cluster.member(new_writer).az, old_writer_address=old_address)
    drill.finish(writer={db.writer_endpoint},
                 checks=["lost-writes", "stale-reads", "split-brain", "recovery", "data-loss"])


def game_day(drill: Any, connect: Any) -> None:
    """Against a real cluster: your FIS experiment template, started behind the guard rails (allow-listed account,
    allow tag on the template, plan printed first, dry run, abort stops the experiment)."""
    from faults.gameday import FisExperiment

    run_game_day(drill, connect, lambda rails: FisExperiment(rails, fis_template(drill.settings)), duration=OUTAGE_S)
