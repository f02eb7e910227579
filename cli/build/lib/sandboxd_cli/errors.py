"""The CLI's error tree, mapped to exit codes in exactly one place (`EXIT_CODES` below).

    CliError               1  anything else the server refused (5xx, an unexpected status)
    ├── BadInput           2  bad local input, or the server rejected the request (400/413/422)
    ├── TimedOut           3  `up --wait` gave up before the sandbox was Ready
    ├── Unreachable        4  no answer from sandboxd (refused, timed out, not HTTP)
    ├── NotAuthorised      5  401/403: missing or wrong token
    ├── NotFound           6  404: no such sandbox (or fork)
    ├── Conflict           7  409: same name, other spec; or the sandbox is being deleted
    ├── SandboxFailed      1  the sandbox reached phase Failed
    └── Regressed          1  `metrics --compare` found a figure worse than the baseline's

Commands raise these and never call `typer.Exit` with a number of their own, so the table in
`--help` and cli/README.md stays true. `reports_errors` turns one into a single stderr line and
the exit code; no traceback ever reaches the user for an expected failure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import ParamSpec, TypeVar

import typer

from sandboxd_cli.render import printable


class CliError(Exception):
    """A failure the user should read about in one line (plus optional detail lines)."""

    def __init__(self, message: str, *, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)


class BadInput(CliError):
    pass


class TimedOut(CliError):
    pass


class Unreachable(CliError):
    pass


class NotAuthorised(CliError):
    pass


class NotFound(CliError):
    pass


class Conflict(CliError):
    pass


class SandboxFailed(CliError):
    pass


class Regressed(CliError):
    pass


EXIT_CODES: Mapping[type[CliError], int] = {
    BadInput: 2,
    TimedOut: 3,
    Unreachable: 4,
    NotAuthorised: 5,
    NotFound: 6,
    Conflict: 7,
    SandboxFailed: 1,
    Regressed: 1,
    CliError: 1,
}

EXIT_CODES_HELP = """\
Exit codes:
  0  success
  1  the sandbox failed, `metrics --compare` found a regression, or an unexpected error
  2  bad input: a flag, a spec file, or a spec the server rejected
  3  timed out waiting for the sandbox to be Ready
  4  cannot reach sandboxd
  5  not authorised (missing or wrong token)
  6  not found
  7  conflict (same name with another spec, or being deleted)
"""


def exit_code(error: CliError) -> int:
    """The exit code of the most specific class of `error` in `EXIT_CODES`."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so a `CliError` becomes `sandbox: <message>` on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as error:
            typer.echo(f"sandbox: {printable(error.message)}", err=True)
            for line in error.details:
                typer.echo(f"  {printable(line)}", err=True)
            raise typer.Exit(exit_code(error)) from None

    return wrapper
