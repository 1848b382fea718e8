"""``dbdrill proxy``: run the Toxiproxy-compatible fault proxy server in the foreground."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from harness.errors import HarnessError


@click.group()
def proxy() -> None:
    """Toxiproxy-compatible fault proxy server (the HTTP API of Toxiproxy v2)."""


@proxy.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address of the HTTP API (loopback unless you mean to expose it).")
@click.option("--port", default=8474, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the HTTP API (0 picks a free one).")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON array of proxies to create at start, as toxiproxy-server -config.")
def serve(host: str, port: int, config: Path | None) -> None:
    """Serve until SIGTERM or Ctrl-C; prints the API URL once it answers."""
    from harness.proxy.server import ProxyServer

    server = ProxyServer(host=host, port=port, config=config)

    def ready() -> None:
        click.echo(f"dbdrill proxy API on {server.url}")
        sys.stdout.flush()

    try:
        server.serve(ready=ready)
    except HarnessError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("dbdrill proxy stopped")
