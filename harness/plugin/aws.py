"""dbdrill pytest fixtures: aws (filled in as the area lands)."""
from __future__ import annotations
