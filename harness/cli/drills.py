"""``dbdrill drill`` (run drills, write reports, fail on a violated threshold), ``dbdrill fis`` (run an FIS
experiment template on the emulator) and ``dbdrill report`` (rebuild a report from its journal)."""
from __future__ import annotations

import importlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from harness.config import load_settings
from harness.errors import ConfigError

# The evidence kit sits above the harness; the CLI is the one place (with the plugin) that wires it in.


def _settings_env(**values: Any) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if value is None or value == () or value is False:
            continue
        out[f"DBDRILL_{key.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
    return out


def _journals_since(report_dir: Path, since: float) -> list[Path]:
    if not report_dir.is_dir():
        return []
    found = [p for p in report_dir.glob("*/journal.json") if p.stat().st_mtime >= since - 1]
    return sorted(found, key=lambda p: p.stat().st_mtime)


@click.command()
@click.argument("names", nargs=-1)
@click.option("--list", "list_only", is_flag=True, help="List the drills and exit.")
@click.option("--report-dir", type=click.Path(path_type=Path), default=Path("dbdrill-reports"), show_default=True,
              help="Where journals, HTML reports and junit.xml go.")
@click.option("-t", "--threshold", "thresholds", multiple=True, metavar="NAME=VALUE",
              help="Override a threshold (repeatable), e.g. -t max_rto=30s.")
@click.option("--time-profile", type=click.Choice(["fast", "aws"]), default=None,
              help="fast: sub-second failovers (default); aws: AWS-realistic timings.")
@click.option("--target", type=click.Choice(["emulator", "aws"]), default=None,
              help="emulator (default) or aws: a game day in a real account (needs allow-lists).")
@click.option("--aws-allow-accounts", default=None, metavar="IDS", help="Account ids a game day may touch.")
@click.option("--dry-run", is_flag=True, help="With --target aws: print the plan, change nothing.")
@click.option("--aws-resource", default=None, metavar="ARN", help="With --target aws: the DB instance/cluster ARN.")
@click.option("--aws-dsn", default=None, metavar="DSN", help="With --target aws: where the drill's clients connect.")
@click.option("--pytest-args", default="", metavar="ARGS", help="Extra pytest arguments, e.g. '-x -vv'.")
def drill(names: tuple[str, ...], list_only: bool, report_dir: Path, thresholds: tuple[str, ...],
          time_profile: str | None, target: str | None, aws_allow_accounts: str | None, dry_run: bool,
          aws_resource: str | None, aws_dsn: str | None, pytest_args: str) -> None:
    """Run drills by NAME (or `all`), write reports, exit non-zero when a threshold is violated."""
    from suites.catalog import DRILLS, resolve
    from suites.thresholds import thresholds_for

    if list_only:
        for info in DRILLS.values():
            click.echo(f"{info.name:24} {info.summary}")
        return
    threshold_text = ",".join(thresholds) or None
    env = _settings_env(report_dir=report_dir, time_profile=time_profile, target=target,
                        aws_allow_accounts=aws_allow_accounts, dry_run=dry_run or None, thresholds=threshold_text,
                        aws_resource=aws_resource, aws_dsn=aws_dsn)
    try:
        chosen = resolve(list(names))
        # Everything a user can get wrong is refused here, before any service starts.
        load_settings(env={**os.environ, **env})
        for info in chosen:
            importlib.import_module(info.module)  # registers the drill's threshold kind
            thresholds_for(info.kind, os.environ.get("DBDRILL_THRESHOLDS"), threshold_text)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    os.environ.update(env)
    report_dir.mkdir(parents=True, exist_ok=True)
    # junit_family legacy: the drills' numbers go into the JUnit XML as <property> elements.
    args = ["-p", "no:cacheprovider", "-q", "-rfE", "--junitxml", str(report_dir / "junit.xml"),
            "-o", "junit_family=legacy",
            *shlex.split(pytest_args), "--pyargs", *[i.module for i in chosen]]
    click.echo(f"dbdrill: running {len(chosen)} drill(s): {', '.join(i.name for i in chosen)}", err=True)
    import pytest

    started = time.time()
    code = int(pytest.main(args))
    click.echo(f"\ndbdrill: {len(chosen)} drill(s) in {time.time() - started:.1f}s; reports in {report_dir}/")
    for path in _journals_since(report_dir, started):
        data = json.loads(path.read_text())
        click.echo(f"  {data['verdict'].upper():5} {data['drill']:24} {path.parent / 'report.html'}")
    click.echo(f"  junit: {report_dir / 'junit.xml'}")
    sys.exit(code)


@click.command()
@click.argument("journal", type=click.Path(exists=True, dir_okay=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="HTML file to write.")
def report(journal: Path, output: Path | None) -> None:
    """Rebuild the HTML report from a drill's journal.json (or its directory)."""
    from suites.report import rebuild_html

    if journal.is_dir():
        journal = journal / "journal.json"
    try:
        out = rebuild_html(journal, output)
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        raise click.UsageError(f"{journal} is not a dbdrill journal: {exc}") from exc
    click.echo(str(out))


@click.group()
def fis() -> None:
    """AWS FIS experiment templates on the emulator."""


from harness.cli.fis import fis_run, fis_validate  # noqa: E402

fis.add_command(fis_run)
fis.add_command(fis_validate)
