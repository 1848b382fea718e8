"""Drill: RDS Multi-AZ failover (reboot with failover). Writers keep inserting through the instance's
endpoint name; the old primary is fenced, the synchronous standby promoted, the DNS name flipped. No
acknowledged write may be lost, the writer endpoint must never serve a stale read, the fenced old primary
must acknowledge nothing, and writes must resume within the RTO limit.

Point it at your client by overriding ``rds_drill_connect`` in your conftest.py::

    @pytest.fixture
    def rds_drill_connect():
        from myapp.db import connect          # your pool's connect: timeouts, keepalives, DNS caching...
        return lambda host, port, user, password, dbname: connect(host, port, user, password, dbname)
"""
from __future__ import annotations

from typing import Any

import pytest

from faults.database import force_failover
from suites.drill import Fenced
from suites.pgclient import PgApp, Target, failover_workload
from suites.target import is_aws, resource, run_game_day

pytestmark = pytest.mark.dbdrill_drill("multi_az_failover", kind="rds-multi-az-failover")


def fast_defaults(drill: Any) -> None:
    """With the fast time profile the whole failover takes well under a second: hold it to seconds."""
    if getattr(drill.settings, "time_profile", "fast") == "fast":
        drill.defaults(max_rto=5.0)


def test_multi_az_failover(drill: Any, request: pytest.FixtureRequest, rds_drill_connect: Any) -> None:
    if is_aws(drill.settings):
        return game_day(drill, rds_drill_connect)
    fast_defaults(drill)
    db = request.getfixturevalue("postgres_instance")("drill-ha", multi_az=True)
    app = PgApp(drill.history, Target(db.address, db.port, db.user, db.password, db.dbname), rds_drill_connect)
    app.setup()
    old_primary = db.instance.primary.address
    failover = force_failover(db)
    failover_workload(drill, app, Fenced(failover, drill.history, old_primary))
    desc = db.describe()
    drill.note(failover_took_s=failover.took, old_primary=old_primary, new_primary=db.instance.primary.address,
               availability_zone=desc["AvailabilityZone"], secondary_zone=desc.get("SecondaryAvailabilityZone"))
    drill.finish(writer={db.address}, checks=["lost-writes", "stale-reads", "split-brain", "recovery", "data-loss"])


def game_day(drill: Any, connect: Any) -> None:
    """The same drill against a real Multi-AZ instance: reboot_db_instance(ForceFailover=True) behind the guard
    rails (allow-listed account, allow tag, plan printed first, dry run, abort heals)."""
    from faults.gameday import RebootDbInstance

    run_game_day(drill, connect,
                 lambda rails: RebootDbInstance(rails, resource(drill.settings, "db"), force_failover=True))
