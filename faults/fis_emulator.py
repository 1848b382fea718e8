"""Every FIS action the emulator can perform, registered in one call (the CLI and the drills use it)."""
from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger(__name__)

# Modules with a ``register_fis_actions(registry)``; a module that is missing is skipped.
PROVIDERS = ("faults.api", "faults.dynamodb", "faults.database", "faults.aurora", "faults.network")


def register_all(registry: Any = None) -> list[str]:
    """Register the emulator's handlers in ``registry`` (default: the global one); returns the
    action ids that are supported afterwards."""
    from faults.fis import default_registry

    reg = registry or default_registry
    for name in PROVIDERS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        register = getattr(mod, "register_fis_actions", None)
        if register is not None:
            register(reg)
    supported: list[str] = reg.supported()
    return supported
