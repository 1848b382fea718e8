"""Settings: one table of options, each an ini key, a CLI flag and an environment variable, read once
into a frozen dataclass. Precedence: command line > environment > ini file > default."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.errors import ConfigError


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _url(text: str) -> str:
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
        raise ValueError(f"expected http://HOST:PORT, got {text!r}")
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


def _assignments(text: str) -> str:
    """``name=value`` items (comma, semicolon or newline separated); values are typed by the drill."""
    for item in (i.strip() for i in text.replace(";", ",").replace("\n", ",").split(",")):
        if item and not item.startswith("#") and ("=" not in item or not item.split("=", 1)[0].strip()):
            raise ValueError(f"expected name=value items such as max_rto=30s,max_lost_writes=0, got {item!r}")
    return text.strip()


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    parse.__name__ = "one of " + "|".join(choices)
    return parse


@dataclass(frozen=True)
class Option:
    """One setting. ``name`` "toxiproxy-url" is --dbdrill-toxiproxy-url, ini dbdrill_toxiproxy_url,
    env DBDRILL_TOXIPROXY_URL and field ``toxiproxy_url``."""

    name: str
    help: str
    parse: Callable[[str], Any] = str
    metavar: str = "VALUE"

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        return f"--dbdrill-{self.name}"

    @property
    def ini(self) -> str:
        return f"dbdrill_{self.dest}"

    @property
    def env(self) -> str:
        return f"DBDRILL_{self.dest.upper()}"


@dataclass(frozen=True)
class Settings:
    """Every dbdrill setting, typed. Defaults are the embedded emulator with fast timings."""

    toxiproxy_url: str | None = None
    state_dir: Path | None = None
    regions: tuple[str, ...] = ("us-east-1", "us-west-2", "eu-west-1")
    time_profile: str = "fast"
    keep_state: bool = False
    dynamodb_capacity: bool = True
    ttl_delay: float | None = None
    fis_time_scale: float | None = None
    pg_bin: Path | None = None
    dns_ttl_cap: float | None = None
    target: str = "emulator"
    aws_allow_accounts: tuple[str, ...] = ()
    aws_allow_tag: str = "dbdrill:allow=true"
    dry_run: bool = False
    aws_resource: str | None = None
    aws_dsn: str | None = None
    report_dir: Path = field(default_factory=lambda: Path("dbdrill-reports"))
    thresholds: str | None = None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


OPTIONS: tuple[Option, ...] = (
    Option("toxiproxy-url", "use this external Toxiproxy server (http://HOST:PORT) instead of the "
           "embedded one", _url, "URL"),
    Option("state-dir", "directory for run state (PostgreSQL data, logs); short path, default "
           "/tmp/dbdrill-UID", Path, "DIR"),
    Option("regions", "emulated AWS regions, comma separated", _csv, "R1,R2"),
    Option("time-profile", "fast: sub-second failovers and sweeps; aws: AWS-realistic timings",
           _choice("fast", "aws"), "PROFILE"),
    Option("keep-state", "keep emulated AWS state between tests (faster, less isolated)", _bool, "BOOL"),
    Option("dynamodb-capacity", "throttle provisioned DynamoDB tables by their capacity", _bool, "BOOL"),
    Option("ttl-delay", "seconds after expiry before the TTL sweeper deletes an item (default by "
           "time profile)", float, "SECONDS"),
    Option("fis-time-scale", "FIS experiments started through the emulated FIS API run their durations times "
           "this (default by time profile: fast 0.01, PT5M lasts 3 s; aws 1)", float, "FACTOR"),
    Option("pg-bin", "directory holding the PostgreSQL server binaries (postgres, initdb)", Path, "DIR"),
    Option("dns-ttl-cap", "cap every DNS TTL the test resolver honours at this many seconds", float,
           "SECONDS"),
    Option("target", "emulator (default) or aws (a real account: game day, needs allow-lists)",
           _choice("emulator", "aws"), "TARGET"),
    Option("aws-allow-accounts", "AWS account ids a game day may touch, comma separated", _csv, "IDS"),
    Option("aws-allow-tag", "tag KEY=VALUE every real resource must carry to be faulted", str, "KEY=VALUE"),
    Option("dry-run", "with target aws: print the plan, change nothing", _bool, "BOOL"),
    Option("aws-resource", "with target aws: ARN of the DB instance / cluster the drill faults", str, "ARN"),
    Option("aws-dsn", "with target aws: libpq DSN the drill's clients use (the resource's endpoint)", str, "DSN"),
    Option("report-dir", "directory for drill journals and reports", Path, "DIR"),
    Option("thresholds", "drill pass/fail limits overriding each drill's defaults, e.g. "
           "max_rto=30s,max_lost_writes=0,min_availability=0.99", _assignments, "NAME=VALUE,..."),
)

_BY_DEST = {o.dest: o for o in OPTIONS}


def option(dest: str) -> Option:
    return _BY_DEST[dest]


def parse_value(opt: Option, raw: Any, source: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return opt.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"bad value for {source}: {exc}. Fix the {source} setting (see: pytest --help, "
            f"section dbdrill).",
            obj=opt,
        ) from exc


def load_settings(
    cli: Mapping[str, Any] | None = None,
    ini: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the sources (command line > environment > ini > default) into Settings.
    ``cli``/``ini`` map dest -> raw value, None meaning "not given"."""
    cli, ini = cli or {}, ini or {}
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        for raw, source in (
            (cli.get(opt.dest), opt.flag),
            (env.get(opt.env), opt.env),
            (ini.get(opt.dest), opt.ini),
        ):
            if raw is not None and raw != "":
                values[opt.dest] = parse_value(opt, raw, source)
                break
    settings = Settings(**values)
    if settings.ttl_delay is not None and settings.ttl_delay < 0:
        raise ConfigError(f"{option('ttl_delay').flag} must be >= 0, got {settings.ttl_delay}")
    if settings.fis_time_scale is not None and not (0 < settings.fis_time_scale < float("inf")):
        raise ConfigError(f"{option('fis_time_scale').flag} must be a number > 0 (0.01 makes PT5M last 3 s), got "
                          f"{settings.fis_time_scale}")
    if settings.target == "aws" and not settings.aws_allow_accounts:
        raise ConfigError(
            "target aws needs an allow-list: set --dbdrill-aws-allow-accounts=ACCOUNT_ID (the account "
            "the game day may touch). Nothing was started.",
        )
    return settings
