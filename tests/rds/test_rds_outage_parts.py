"""Region and AZ outages cut the DB instances there too (parts registered by faults.database)."""
from __future__ import annotations

from typing import Any

import psycopg
import pytest

from faults.outage import az_outage, region_outage


def test_region_outage_cuts_its_db_instances_and_cross_region_replication(postgres_instance: Any) -> None:
    home = postgres_instance("out-home", region="us-west-2")
    other = postgres_instance("out-other", region="eu-west-1")
    replica = postgres_instance("out-dr", source=home, region="us-east-1")
    with home.connect() as conn:
        conn.execute("CREATE TABLE t (id int)")
    outage = region_outage("us-west-2", "blackhole")
    parts = sorted((p.kind, p.target_label()) for p in outage.parts)
    assert ("db_fence", "us-west-2/out-home") in parts
    assert ("db_pause_replication", "us-east-1/out-dr") in parts
    assert not any("out-other" in label for _, label in parts)
    with outage:
        with pytest.raises(psycopg.OperationalError):
            home.connect(connect_timeout=2)
        with other.connect() as conn:  # another region's instance keeps serving
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with replica.connect() as conn:  # the DR replica is readable, its link to the dark region cut
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with home.connect() as conn:
        conn.execute("INSERT INTO t VALUES (1)")


def test_az_outage_fails_over_multi_az_instances(postgres_instance: Any, dns_resolver: Any) -> None:
    ha = postgres_instance("out-ha", multi_az=True)
    assert ha.describe()["AvailabilityZone"] == "us-east-1a"
    with az_outage("us-east-1a"):
        dns_resolver.flush()
        assert ha.describe()["AvailabilityZone"] == "us-east-1b"
        with ha.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
