"""dbdrill pytest fixtures: dns (filled in as the area lands)."""
from __future__ import annotations
