"""Exceptions raised by the harness: one base class, each carrying the object involved."""
from __future__ import annotations

from typing import Any


class HarnessError(Exception):
    """Base of every harness error. ``obj`` is the thing involved (a service, a setting, a path)."""

    def __init__(self, message: str, *, obj: Any = None) -> None:
        super().__init__(message)
        self.obj = obj


class ConfigError(HarnessError):
    """A setting has a value dbdrill cannot use; the message names the setting and the fix."""


class ServiceError(HarnessError):
    """A service we start did not become ready, died, or could not be stopped."""


class NotInstalledError(HarnessError):
    """A program dbdrill needs (PostgreSQL, PgBouncer) is missing; the message says how to install it."""
