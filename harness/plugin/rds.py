"""dbdrill pytest fixtures: rds (filled in as the area lands)."""
from __future__ import annotations
