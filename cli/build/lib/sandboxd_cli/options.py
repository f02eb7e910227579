"""What every command shares: the `-o` option, the connection from the global options, printing.

The root callback (`sandboxd_cli.main`) stores the raw `--url`/`--token` in `ctx.obj`; a command
asks `open_api(ctx)` for a client, so the environment and the token file are read only when a
command actually talks to sandboxd (and `--help` never does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from sandboxd_cli.client import Api
from sandboxd_cli.config import resolve
from sandboxd_cli.render import Output, dump


@dataclass(frozen=True)
class Globals:
    """The root command's options, as given (None when not given)."""

    url: str | None = None
    token: str | None = None


OutputOption = Annotated[
    Output,
    typer.Option(
        "-o",
        "--output",
        case_sensitive=False,
        help="table for people; json or yaml print the API's objects exactly.",
    ),
]


@contextmanager
def open_api(ctx: typer.Context) -> Iterator[Api]:
    given = ctx.obj if isinstance(ctx.obj, Globals) else Globals()
    connection = resolve(url=given.url, token=given.token, env=os.environ, home=Path.home())
    with Api(connection=connection) as api:
        yield api


def now() -> datetime:
    return datetime.now(UTC)


def show(obj: Any, output: Output) -> None:
    """Print an API object as JSON or YAML on stdout."""
    typer.echo(dump(obj, output), nl=False)


def note(message: str, *, output: Output) -> None:
    """A human remark: stdout for table output, stderr when stdout must stay machine-readable."""
    typer.echo(message, err=output is not Output.TABLE)
