"""Helpers shared by the AWS tests."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests  # noqa: F401
from botocore.config import Config

# requests (the fault proxy's client uses it) is loaded here, before any in-process pytester run takes its
# snapshot of sys.modules: otherwise the second inner run re-imports it next to objects of the first import
# and requests fails with "You can only merge into CookieJar".


@pytest.fixture
def no_retry() -> Config:
    """Client config that surfaces every error at once (no retries), with short timeouts."""
    return Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=10)


@pytest.fixture
def kv_table() -> Callable[..., None]:
    """``kv_table(client, name, **extra)``: a string-keyed (``pk``) on-demand table."""

    def make(client: Any, name: str, **extra: Any) -> None:
        client.create_table(TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST", **extra)

    return make
