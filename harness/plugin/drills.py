"""dbdrill pytest fixtures: drills (filled in as the area lands)."""
from __future__ import annotations
