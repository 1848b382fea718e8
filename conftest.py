"""Root conftest for dbdrill's own test suite. The plugin itself comes in through its pytest11 entry
point (the package is installed), so it is not listed here again."""
from __future__ import annotations
