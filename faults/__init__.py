"""dbdrill faults: what goes wrong. Each fault is a context manager and a decorator that always heals."""
from __future__ import annotations

from faults.base import Composite, Fault, FaultError, FaultEvent, Timeline, active_faults, heal_all

__all__ = ["Composite", "Fault", "FaultError", "FaultEvent", "Timeline", "active_faults", "heal_all"]
