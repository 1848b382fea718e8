"""dbdrill pytest fixtures: proxy (filled in as the area lands)."""
from __future__ import annotations
