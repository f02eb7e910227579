"""`sandbox logs`: a fork's output (its stdout and stderr), optionally followed.

Following polls with the byte offset the server returns (`Sandboxd-Log-Offset`), so nothing is
printed twice or skipped even when the log grows between polls. It ends on Ctrl-C (exit 0) or
when the sandbox disappears (404, exit 0 with a note on stderr). Ctrl-C stops it between two
polls, not inside one: an interrupt raised in the middle of the HTTP client's work can leave
its connection pool locked for the close that follows (the process then hangs); a second
Ctrl-C stops it at once.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import typer
import yaml

from sandboxd_cli.client import Api, LogChunk
from sandboxd_cli.errors import NotFound, reports_errors
from sandboxd_cli.options import OutputOption, open_api
from sandboxd_cli.render import Output

app = typer.Typer()

FOLLOW_INTERVAL = 0.5


@app.command()
@reports_errors
def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The sandbox's name.")],
    service: Annotated[str, typer.Argument(help="The forked service.")],
    tail: Annotated[int, typer.Option(min=0, help="Start with the last N lines.")] = 100,
    follow: Annotated[
        bool, typer.Option("--follow", "-F", help="Keep printing new output until Ctrl-C.")
    ] = False,
    output: OutputOption = Output.TABLE,
) -> None:
    """Print a fork's log; json/yaml print one {offset, text} object per chunk read."""
    with open_api(ctx) as api:
        try:
            chunk = api.logs(name, service, tail=tail)
            emit(chunk, output)
            if follow:
                follow_from(api, name, service, offset=chunk.next_offset, output=output)
        except KeyboardInterrupt:
            return


def follow_from(api: Api, name: str, service: str, *, offset: int, output: Output) -> None:
    """Print what is appended from `offset` on, until the sandbox (or its log) is gone or
    Ctrl-C."""
    with _interrupted_between_polls() as interrupted:
        while not interrupted():
            time.sleep(FOLLOW_INTERVAL)  # (a Ctrl-C's handler returns: the sleep goes on)
            if interrupted():
                return
            try:
                chunk = api.logs(name, service, offset=offset)
            except NotFound:
                typer.echo(
                    f"sandbox {name}: the log of {service} is gone; stopped following", err=True
                )
                return
            emit(chunk, output)
            offset = chunk.next_offset


@contextmanager
def _interrupted_between_polls() -> Iterator[Callable[[], bool]]:
    """Whether Ctrl-C was pressed: the first one only noted, a second one a KeyboardInterrupt
    as usual. (Off the main thread no handler can be set, and a process started with SIGINT
    ignored keeps ignoring it: there, Ctrl-C does what it did.)"""
    pressed = False

    def note(signum: int, frame: FrameType | None) -> None:
        nonlocal pressed
        pressed = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, note)
    try:
        yield lambda: pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def emit(chunk: LogChunk, output: Output) -> None:
    """Raw bytes for people (a partial UTF-8 sequence is completed by the next chunk)."""
    if output is Output.TABLE:
        if chunk.data:
            typer.echo(chunk.data, nl=False)
        return
    record = {"offset": chunk.next_offset, "text": chunk.data.decode("utf-8", errors="replace")}
    if output is Output.JSON:
        typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        typer.echo(yaml.safe_dump(record, explicit_start=True, allow_unicode=True), nl=False)
