"""`sandbox down`: delete a sandbox. Idempotent, so a PR-close job can always run it."""

from __future__ import annotations

from typing import Annotated

import typer

from sandboxd_cli.client import Api, Json
from sandboxd_cli.errors import NotFound, TimedOut, reports_errors
from sandboxd_cli.options import OutputOption, note, open_api, show
from sandboxd_cli.render import Output, text
from sandboxd_cli.wait import poll, reporter

app = typer.Typer()


@app.command()
@reports_errors
def down(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The sandbox to delete.")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the phase is Deleted.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait before exit code 3.")
    ] = 180,
    output: OutputOption = Output.TABLE,
) -> None:
    """Delete a sandbox; deleting one that is gone or never existed is not an error."""
    with open_api(ctx) as api:
        try:
            sandbox: Json | None = api.delete(name)
        except NotFound:
            note(f"sandbox {name} was never created: nothing to delete", output=output)
            return
        if wait:
            sandbox = wait_deleted(api, name, timeout=timeout)
    if output is not Output.TABLE:
        show(sandbox, output)
        return
    phase = text(sandbox.get("phase")) if sandbox else "Deleted"
    state = "deleted" if phase == "Deleted" else "deleting"
    typer.echo(f"sandbox {name}: {state} (phase {phase})")


def wait_deleted(api: Api, name: str, *, timeout: float) -> Json | None:
    """The sandbox once Deleted; None if its tombstone is already gone as well."""
    with reporter() as report:
        sandbox, done = poll(
            fetch=lambda: _get_or_none(api, name),
            done=lambda s: s is None or s.get("phase") == "Deleted",
            timeout=timeout,
            report=lambda s: report(s) if s is not None else None,
        )
    if not done:
        phase = text(sandbox.get("phase")) if sandbox else "-"
        raise TimedOut(f"sandbox {name} is not Deleted after {timeout:g}s (phase {phase})")
    return sandbox


def _get_or_none(api: Api, name: str) -> Json | None:
    try:
        return api.get(name)
    except NotFound:
        return None
