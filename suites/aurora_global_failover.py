"""Drill: an Aurora global database loses its primary region. Writers insert through the global writer endpoint;
mid-load the primary region goes dark (every member cut off, its RDS API too) and the secondary is promoted with
``failover_global_cluster(AllowDataLoss=True)``, as the operator or automation does; the global writer endpoint
follows it. What the secondary had not received is lost: the lost writes must fall within the RPO limit (Aurora:
typically under 1 s of writes), the old primary must acknowledge nothing after the failover (it is fenced, and
rebuilt as a secondary when its region is back), and writes must resume within the RTO limit.

Point it at your client with ``rds_drill_connect`` (see multi_az_failover). Emulator only: against a real account,
run aurora_failover or aurora_az_outage, or an FIS template through ``dbdrill fis``."""
from __future__ import annotations

import socket
from typing import Any

import pytest

from faults.aurora import GlobalFailover
from faults.base import Composite
from faults.outage import region_outage
from suites.drill import Fenced
from suites.pgclient import PgApp, Target, failover_workload
from suites.target import emulator_only

pytestmark = pytest.mark.dbdrill_drill("aurora_global_failover", kind="aurora-global")

OUTAGE_S = 2.0  # the primary region stays dark this long after the failover call


def test_aurora_global_failover(drill: Any, request: pytest.FixtureRequest, rds_drill_connect: Any) -> None:
    emulator_only(drill.settings, "aurora_global_failover")
    if getattr(drill.settings, "time_profile", "fast") == "fast":
        # Seconds, not AWS's minutes: the promotion is at once, then the endpoint's 5 s TTL runs out at the latest.
        drill.defaults(max_rto=10.0)
    database = request.getfixturevalue("aurora_global")("drill-global")
    primary, secondary = database.primary, database.secondary
    app = PgApp(drill.history, Target(database.endpoint, primary.port, primary.user, primary.password,
                                      primary.dbname), rds_drill_connect)
    app.setup()
    old_address = socket.gethostbyname(primary.writer_endpoint)
    loss = Composite([region_outage(primary.region, reconciler=primary.reconciler),
                      GlobalFailover(database.identifier, secondary.arn, reconciler=primary.reconciler)],
                     name=f"{primary.region}-lost-global-failover")
    failover_workload(drill, app, Fenced(loss, drill.history, old_address), duration=OUTAGE_S)
    drill.note(lost_region=primary.region, new_primary=database.writer_cluster(), old_writer_address=old_address)
    drill.finish(writer={database.endpoint}, checks=["lost-writes", "data-loss", "split-brain", "recovery"])
