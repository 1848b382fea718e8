"""``dbdrill fis validate|run TEMPLATE``: AWS FIS experiment templates against the embedded emulator."""
from __future__ import annotations

import json
import os
import runpy
import threading
import time
from pathlib import Path
from typing import Any

import click

from faults.base import FaultError, recording
from harness.config import load_settings
from harness.errors import ConfigError


def _runner(template: Path, time_scale: float, extra: dict[str, Any] | None = None) -> Any:
    from faults.fis import ExperimentRunner
    from faults.fis_emulator import register_all

    register_all()
    try:
        return ExperimentRunner(template, time_scale=time_scale, extra=extra)
    except (FaultError, ValueError) as exc:
        raise click.UsageError(f"{template}: {exc}") from exc


@click.command("validate")
@click.argument("template", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def fis_validate(template: Path) -> None:
    """Check TEMPLATE (JSON, as for `aws fis create-experiment-template`) without running anything."""
    runner = _runner(template, 1.0)
    for name, action in runner.record.actions.items():
        after = f" after {', '.join(action.start_after)}" if action.start_after else ""
        click.echo(f"{name}: {action.action_id} for {action.duration}s{after}")
    click.echo("template ok")


@click.command("run")
@click.argument("template", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--setup", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Python file run first with the emulator's environment applied: define setup(stack) to "
                   "create the template's targets, and optionally workload(history, stop_event) to drive "
                   "traffic during the experiment.")
@click.option("--time-scale", type=float, default=0.01, show_default=True,
              help="Multiply every duration (0.01: PT5M lasts 3 s).")
@click.option("--settle", type=float, default=1.0, show_default=True,
              help="Seconds the workload goes on after the experiment, so recovery is observed.")
@click.option("--report-dir", type=click.Path(path_type=Path), default=Path("dbdrill-reports"), show_default=True)
def fis_run(template: Path, setup: Path | None, time_scale: float, settle: float, report_dir: Path) -> None:
    """Run TEMPLATE on a fresh embedded stack; write a journal and report; exit 1 if it did not complete."""
    from harness.stack import Stack
    from suites.checkers import check_all
    from suites.history import History
    from suites.report import Journal, run_dir, write_report

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    _runner(template, time_scale)  # refuse a bad template before anything starts
    history = History(name=template.stem)
    with Stack(settings) as stack, recording() as timeline:
        saved = dict(os.environ)
        os.environ.update(stack.aws.env())
        try:
            namespace = runpy.run_path(str(setup)) if setup else {}
            if "setup" in namespace:
                namespace["setup"](stack)
            runner = _runner(template, time_scale, extra={"endpoint": stack.aws, "stack": stack})
            stop = threading.Event()
            worker = None
            if "workload" in namespace:
                worker = threading.Thread(target=namespace["workload"], args=(history, stop), daemon=True)
                worker.start()
            started = time.time()
            record = runner.run()
            if worker is not None:
                stop.wait(settle)
            stop.set()
            if worker is not None:
                worker.join(30)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    verdict = check_all(history, faults=timeline.to_list()) if len(history) else None
    journal = Journal.build(f"fis-{template.stem}", history=history, faults=timeline, verdict=verdict,
                            settings=settings, started=started, experiment=record,
                            error=None if verdict is not None or record.state == "completed"
                            else RuntimeError(f"experiment {record.state}: {record.reason}"))
    if verdict is None and record.state == "completed":
        journal.verdict, journal.message = "pass", "experiment completed (no workload to check)"
    files = write_report(journal, run_dir(report_dir, journal.drill, started))
    click.echo(json.dumps({"experiment": record.id, "state": record.state, "reason": record.reason,
                           "actions": {n: {"state": a.state, "start": a.start, "end": a.end}
                                       for n, a in record.actions.items()}}, indent=2))
    click.echo(f"verdict: {journal.verdict}: {journal.message}")
    click.echo(f"report: {files.html}")
    raise SystemExit(0 if journal.verdict == "pass" else 1)
