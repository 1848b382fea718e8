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
from faults.schedule import Nemesis, Step
from suites.drill import Fenced
from suites.pgclient import PgApp, Target
from suites.workload import Workload, settle, writes_after

pytestmark = pytest.mark.dbdrill_drill("multi_az_failover", kind="rds-multi-az-failover")


def fast_defaults(drill: Any) -> None:
    """With the fast time profile the whole failover takes well under a second: hold it to seconds."""
    if getattr(drill.settings, "time_profile", "fast") == "fast":
        drill.defaults(max_rto=5.0)


def test_multi_az_failover(drill: Any, postgres_instance: Any, rds_drill_connect: Any) -> None:
    fast_defaults(drill)
    db = postgres_instance("drill-ha", multi_az=True)
    app = PgApp(drill.history, Target(db.address, db.port, db.user, db.password, db.dbname), rds_drill_connect)
    app.setup()
    old_primary = db.instance.primary.address
    history = drill.history

    def work(process: int, i: int) -> None:
        if process == 2:
            app.read(process)
        else:
            app.write(process, i * 2 + process)

    failover = force_failover(db)
    with drill.progress(), Workload(work, threads=3, interval=0.01, max_time=120):
        step = Step(1.0, 0.5, Fenced(failover, history, old_primary), name="failover")
        nemesis = Nemesis([step], max_time=120).start()
        assert nemesis.wait(120), "the failover did not finish"
        nemesis.stop()
        nemesis.check()
        drill.schedule = nemesis.schedule()
        healed = history.operations()[-1].invoke_time
        drill.note(recovered_after_heal=settle(writes_after(history, healed, 20), drill.settle_s))
    app.final_read()
    app.close()
    desc = db.describe()
    drill.note(failover_took_s=failover.took, old_primary=old_primary, new_primary=db.instance.primary.address,
               availability_zone=desc["AvailabilityZone"], secondary_zone=desc.get("SecondaryAvailabilityZone"))
    drill.finish(writer={db.address}, checks=["lost-writes", "stale-reads", "split-brain", "recovery", "data-loss"])

