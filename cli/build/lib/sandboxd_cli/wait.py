"""Waiting for a sandbox to reach a phase, with progress on stderr.

Waiting polls `GET /v1/sandboxes/{name}` rather than trusting one answer: the reconciler
converges in the background, so the current phase is the only truth. Progress goes to stderr so
that stdout stays the command's result (`-o json` stays parseable): a spinner on a terminal,
otherwise one plain line whenever the phase, reason or a fork's state changes (CI logs).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from sandboxd_cli.views import progress

POLL_INTERVAL = 0.25
T = TypeVar("T")
Report = Callable[[dict[str, Any]], None]


def poll(
    *,
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    report: Callable[[T], None],
    interval: float = POLL_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, bool]:
    """Fetch until `done` or `timeout` seconds pass; the last value and whether it is done."""
    deadline = clock() + timeout
    value = fetch()
    while True:
        report(value)
        if done(value):
            return value, True
        remaining = deadline - clock()
        if remaining <= 0:
            return value, False
        sleep(min(interval, remaining))
        value = fetch()


@contextmanager
def reporter(*, tty: bool | None = None) -> Iterator[Report]:
    """A progress callback for the duration of a wait."""
    if tty if tty is not None else sys.stderr.isatty():
        with _spinner() as report:
            yield report
    else:
        yield _lines()


@contextmanager
def _spinner() -> Iterator[Report]:
    console = Console(stderr=True)
    with console.status("waiting for sandboxd…") as status:

        def report(sandbox: dict[str, Any]) -> None:
            status.update(Text(progress(sandbox)))  # Text: server messages are not markup

        yield report


def _lines() -> Report:
    last: list[str] = []

    def report(sandbox: dict[str, Any]) -> None:
        line = progress(sandbox)
        if last != [line]:
            typer.echo(line, err=True)
            last[:] = [line]

    return report
