"""`sandbox list`, `get`, `events` and `extend`: reading sandboxes and extending their TTL."""

from __future__ import annotations

from typing import Annotated

import typer

from sandboxd_cli.errors import reports_errors
from sandboxd_cli.options import OutputOption, now, open_api, show
from sandboxd_cli.render import Output, when
from sandboxd_cli.spec import parse_label
from sandboxd_cli.views import details, event_table, sandbox_list

app = typer.Typer()

NameArgument = Annotated[str, typer.Argument(help="The sandbox's name.")]


@app.command("list")
@reports_errors
def list_(
    ctx: typer.Context,
    label: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Only sandboxes with this label (repeatable)."),
    ] = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """List sandboxes, optionally only those carrying every given label."""
    selectors = [f"{key}={value}" for key, value in map(parse_label, label or ())]
    with open_api(ctx) as api:
        listing = api.sandboxes(labels=selectors)
    if output is not Output.TABLE:
        show(listing, output)
        return
    items = [item for item in listing.get("items") or [] if isinstance(item, dict)]
    typer.echo(sandbox_list(items, now=now()))


@app.command()
@reports_errors
def get(ctx: typer.Context, name: NameArgument, output: OutputOption = Output.TABLE) -> None:
    """Show a sandbox: phase, routing key, expiry, forks, labels and links."""
    with open_api(ctx) as api:
        sandbox = api.get(name)
    if output is not Output.TABLE:
        show(sandbox, output)
        return
    typer.echo(details(sandbox, now=now()))


@app.command()
@reports_errors
def events(ctx: typer.Context, name: NameArgument, output: OutputOption = Output.TABLE) -> None:
    """Show a sandbox's event log, oldest first."""
    with open_api(ctx) as api:
        log = api.events(name)
    if output is not Output.TABLE:
        show(log, output)
        return
    items = [item for item in log.get("items") or [] if isinstance(item, dict)]
    typer.echo(event_table(items))


@app.command()
@reports_errors
def extend(
    ctx: typer.Context,
    name: NameArgument,
    ttl: Annotated[str, typer.Option(help="New lifetime counted from now, such as 4h.")],
    output: OutputOption = Output.TABLE,
) -> None:
    """Give a sandbox a new TTL, counted from now (up to the server's cap)."""
    with open_api(ctx) as api:
        sandbox = api.patch(name, {"ttl": ttl})
    if output is not Output.TABLE:
        show(sandbox, output)
        return
    typer.echo(f"sandbox {name} now expires at {when(sandbox.get('expiresAt'), now=now())}")
