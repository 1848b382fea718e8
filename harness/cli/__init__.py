"""The ``dbdrill`` command. Subcommands live in their own modules and load only when called."""
from __future__ import annotations

import importlib
import logging
from typing import Any

import click

# name -> "module:attribute"; kept here so `dbdrill --help` lists them without importing them.
COMMANDS: dict[str, tuple[str, str]] = {
    "proxy": ("harness.cli.proxy:proxy", "Toxiproxy-compatible fault proxy server."),
    "up": ("harness.cli.up:up", "Run the embedded stack in the foreground; print its environment."),
    "fault": ("harness.cli.fault:fault", "Inject and heal faults on a running `dbdrill up` stack."),
    "drill": ("harness.cli.drills:drill", "Run drills (or all), write reports, fail on a threshold."),
    "fis": ("harness.cli.drills:fis", "Run an AWS FIS experiment template against the emulator."),
    "report": ("harness.cli.drills:report", "Rebuild the HTML report from a drill journal."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target = COMMANDS[cmd_name][0]
        mod_name, attr = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                return None
            raise
        cmd: click.Command = getattr(mod, attr)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in sorted(COMMANDS.items())])


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="dbdrill")
def main(verbose: int) -> None:
    """dbdrill: fault drills for AWS databases, on an embedded emulator or a real account."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run(*args: Any) -> None:
    main.main(args=list(args), standalone_mode=True)
