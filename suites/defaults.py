"""Default fixtures of the shipped drills, as a pytest plugin so that a user's conftest.py can override
each one (fixtures in the drill modules themselves would win over conftest). Imports stay inside the
fixtures: loading the plugin costs nothing."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def ttl_drill_reader() -> Callable[[Any, str, str], Any]:
    """ttl_expiry: the app's read, ``reader(client, table, key) -> item or None``; must hide expired items."""
    from suites.ttl_expiry import default_reader

    return default_reader


@pytest.fixture
def ttl_drill_stream_handler() -> tuple[Callable[[dict[str, Any]], None], Callable[[], list[str]]]:
    """ttl_expiry: ``(handler, archived)``, the Lambda handler fed with the table's stream and a function
    returning the keys it archived."""
    from suites.ttl_expiry import default_stream_handler

    return default_stream_handler()


@pytest.fixture
def dynamodb_drill_writer() -> Callable[[Any, str, dict[str, Any]], None]:
    """dynamodb_throttling: the app's write with its retry policy, ``writer(client, table, item)``."""
    from suites.dynamodb_throttling import default_writer

    return default_writer


@pytest.fixture
def region_drill_app() -> Callable[..., Any]:
    """region_outage: ``factory(regions) -> app`` with ``app.put(key)`` and ``app.region``."""
    from suites.region_outage import FailoverApp

    return FailoverApp


@pytest.fixture
def network_drill_upstream(dbdrill_stack: Any) -> Iterator[str]:
    """network_faults: the endpoint under test, HOST:PORT (default: an echo server on its own address)."""
    from suites.network_faults import echo_server

    with echo_server(dbdrill_stack.hosts.allocate()) as address:
        yield address


@pytest.fixture
def network_drill_probe() -> Callable[[str, int], Any]:
    """network_faults: one request of the client under test, ``probe(host, port)``; raise on failure."""
    from suites.network_faults import EchoClient

    return EchoClient()


@pytest.fixture
def rds_drill_connect() -> Callable[..., Any]:
    """RDS drills: the app's connect, ``connect(host, port, user, password, dbname) -> psycopg connection``
    (autocommit). The drill bounds each statement and reconnects after errors."""
    from suites.pgclient import default_connect

    return default_connect


@pytest.fixture
def replica_drill_automation() -> Callable[..., Any]:
    """replica_promotion: the failover automation, ``(replica_id, region, zone_id, record_name) -> endpoint``;
    boto3 calls only (default: suites.automation.promote_and_flip)."""
    from suites.automation import promote_and_flip

    return promote_and_flip


@pytest.fixture
def cross_region_handler() -> Callable[..., Any]:
    """cross_region_failover: the automation, a Lambda handler ``handler(event, context)`` for an SQS event
    of SNS envelopes (RDS events or alarm state changes); boto3 calls only. Default: suites.automation."""
    from suites.automation import handler

    return handler


@pytest.fixture
def proxy_drill_connect() -> Callable[..., Any]:
    """rds_proxy_storm: the app's (Lambda's) connect, ``connect(host, port, user, password, dbname) -> psycopg
    connection`` (autocommit), called once per invocation with the RDS Proxy endpoint."""
    from suites.pgclient import default_connect

    return default_connect
