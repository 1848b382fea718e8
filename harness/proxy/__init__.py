"""A Toxiproxy-compatible fault proxy server (asyncio), speaking the Toxiproxy v2 HTTP API."""
from __future__ import annotations

from harness.proxy.server import ProxyServer

__all__ = ["ProxyServer"]
