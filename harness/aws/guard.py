"""Emulated mode never reaches real AWS: while the endpoint runs, botocore's HTTP send refuses any host that
is not loopback, and endpoint URLs handed to the harness must be loopback too."""
from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from harness.errors import HarnessError
from harness.hosts import is_loopback

logger = logging.getLogger(__name__)


class RealAwsBlocked(HarnessError):
    """A request was about to leave for a non-loopback host while the emulator runs."""


_lock = threading.Lock()
_depth = 0
_original: Any = None


def loopback_host(host: str | None) -> bool:
    return bool(host) and (is_loopback(host or "") or (host or "").endswith(".localhost"))


def check_endpoint_url(url: str) -> str:
    """``url`` if it points at a loopback host, else RealAwsBlocked saying why."""
    host = urlsplit(url if "://" in url else f"http://{url}").hostname
    if not loopback_host(host):
        raise RealAwsBlocked(
            f"endpoint {url!r} is not a loopback address: dbdrill's emulated mode only talks to the emulator "
            "on 127.x.y.z. Use aws.endpoint_url(region) / aws.client(...), or run a game day with "
            "--dbdrill-target aws to reach a real account.")
    return url


def _guarded_send(self: Any, request: Any) -> Any:
    host = urlsplit(request.url).hostname
    if not loopback_host(host):
        raise RealAwsBlocked(
            f"dbdrill blocked a request to {request.url.split('?', 1)[0]}: emulated mode never talks to real "
            "AWS. Build clients with aws.client(...) or inside the aws_env fixture (AWS_ENDPOINT_URL points at "
            "the emulator), and do not pass endpoint_url for a real AWS host.")
    return _original(self, request)


def install() -> None:
    """Guard botocore's URLLib3Session.send (counted; ``uninstall`` the same number of times)."""
    global _depth, _original
    from botocore.httpsession import URLLib3Session

    with _lock:
        _depth += 1
        if _depth == 1:
            _original = URLLib3Session.send
            URLLib3Session.send = _guarded_send
            logger.debug("botocore send guarded: loopback only")


def uninstall() -> None:
    global _depth, _original
    from botocore.httpsession import URLLib3Session

    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        if _depth == 0 and _original is not None:
            URLLib3Session.send = _original
            _original = None


def installed() -> bool:
    return _depth > 0
