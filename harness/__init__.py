"""dbdrill harness: the services a drill runs on (proxy, emulated AWS, PostgreSQL, DNS) and their lifecycle."""
from __future__ import annotations

from harness.errors import HarnessError

__all__ = ["HarnessError"]
__version__ = "0.1.0"
