"""The `sandbox` command: the root app, its global options, and the console-script entry point."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from sandboxd_cli.commands import down, faults, github_cmd, logs, preview, sandboxes, signals, up
from sandboxd_cli.config import DEFAULT_URL
from sandboxd_cli.errors import EXIT_CODES_HELP
from sandboxd_cli.options import Globals, OutputOption, show
from sandboxd_cli.render import Output

app = typer.Typer(
    name="sandbox",
    help="Create, inspect and delete sandboxd sandboxes.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(up.app)
app.add_typer(down.app)
app.add_typer(sandboxes.app)
app.add_typer(logs.app)
app.add_typer(faults.app)
app.add_typer(signals.app)
app.add_typer(github_cmd.app)
app.add_typer(preview.app)


@app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help=f"sandboxd's address (env SANDBOXD_URL; default {DEFAULT_URL}).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            metavar="TOKEN",
            help="API token (env SANDBOXD_TOKEN; for a local sandboxd the default is the "
            "admin token in $SANDBOXD_DATA_DIR or ~/.sandboxd).",
        ),
    ] = None,
) -> None:
    """Create, inspect and delete sandboxd sandboxes."""
    ctx.obj = Globals(url=url, token=token)


@app.command("version")
def show_version(output: OutputOption = Output.TABLE) -> None:
    """Print the CLI's version."""
    try:
        number = version("sandboxd-cli")
    except PackageNotFoundError:
        number = "unknown"
    if output is Output.TABLE:
        typer.echo(f"sandbox (sandboxd-cli) {number}")
    else:
        show({"client": number}, output)


def main() -> None:
    app(prog_name="sandbox")
