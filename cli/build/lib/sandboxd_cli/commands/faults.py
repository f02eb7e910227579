"""`sandbox fault add`, `list` and `clear`: a sandbox's faults, changed by PATCHing the list.

The API replaces the whole list on a PATCH, so `add` and `clear` read the sandbox, change its
list and send it back with the faults as stored (with their ids, which therefore stay), on the
condition that the sandbox's `generation` is still the one read: a change made by someone else
in between is a 409 (exit 7, "read it again and retry"), never silently overwritten.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sandboxd_cli.client import Json
from sandboxd_cli.errors import NotFound, reports_errors
from sandboxd_cli.options import OutputOption, open_api, show
from sandboxd_cli.render import Output
from sandboxd_cli.views import fault_table, stored_faults

app = typer.Typer(
    name="fault",
    help="Add, list and clear the faults injected into a sandbox's traffic.",
    no_args_is_help=True,
)

NameArgument = Annotated[str, typer.Argument(help="The sandbox's name.")]


def _opt(description: str, metavar: str | None = None) -> Any:
    return typer.Option(help=description, metavar=metavar)


@app.command()
@reports_errors
def add(
    ctx: typer.Context,
    name: NameArgument,
    service: Annotated[str, _opt("The catalog service whose traffic gets the fault.")],
    kind: Annotated[str, _opt("latency, http_error, rate_limit, timeout, reset, ... (README).")],
    tool: Annotated[str | None, _opt("mcp: glob of the tool name (tools/call).")] = None,
    method: Annotated[str | None, _opt("mcp: glob of the JSON-RPC method.")] = None,
    path: Annotated[str | None, _opt("http: glob of the request path.")] = None,
    http_method: Annotated[str | None, _opt("http: the request method, such as GET.")] = None,
    latency_ms: Annotated[int | None, _opt("latency, timeout: milliseconds.")] = None,
    status: Annotated[int | None, _opt("http_error: the status (default 503).")] = None,
    code: Annotated[int | None, _opt("jsonrpc_error: the code (default -32603).")] = None,
    message: Annotated[str | None, _opt("jsonrpc_error, tool_error: the message.")] = None,
    text: Annotated[str | None, _opt("inject: the text added to the tool result.")] = None,
    field: Annotated[
        list[str] | None, _opt("drop_fields: a dotted path to drop (repeatable).", "PATH")
    ] = None,
    retry_after: Annotated[int | None, _opt("rate_limit: Retry-After seconds.")] = None,
    chunk_delay_ms: Annotated[int | None, _opt("slow_stream: ms between chunks.")] = None,
    probability: Annotated[float | None, _opt("0..1: the chance each time (default 1).")] = None,
    seed: Annotated[int | None, _opt("Seed for the probability draws (reproducible).")] = None,
    nth: Annotated[int | None, _opt("Only every Nth matching request.")] = None,
    after: Annotated[int | None, _opt("Skip the first N matching requests.")] = None,
    times: Annotated[int | None, _opt("Stop after N injections.")] = None,
    fault_id: Annotated[
        str | None, typer.Option("--id", help="The fault's id (generated when not given).")
    ] = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Add a fault to a sandbox (after the ones it has): only its own traffic sees it."""
    given = {
        "id": fault_id, "service": service, "kind": kind, "tool": tool, "method": method,
        "path": path, "httpMethod": http_method, "latencyMs": latency_ms, "status": status,
        "code": code, "message": message, "text": text, "fields": field or None,
        "retryAfter": retry_after, "chunkDelayMs": chunk_delay_ms,
        "probability": probability, "seed": seed, "nth": nth, "after": after, "times": times,
    }  # fmt: skip
    fault = {key: value for key, value in given.items() if value is not None}
    with open_api(ctx) as api:
        current = api.get(name)
        faults = stored_faults(current)
        sandbox = api.patch(name, _patch(current, [*faults, fault]))
    if output is not Output.TABLE:
        show(sandbox, output)
        return
    added = stored_faults(sandbox)[len(faults)]
    typer.echo(f"fault {added.get('id')} added to sandbox {name}")


@app.command("list")
@reports_errors
def list_(ctx: typer.Context, name: NameArgument, output: OutputOption = Output.TABLE) -> None:
    """List a sandbox's faults in the order they apply, with how often each matched and fired."""
    with open_api(ctx) as api:
        sandbox = api.get(name)
    faults = sandbox.get("faults")
    items = [f for f in faults if isinstance(f, dict)] if isinstance(faults, list) else []
    if output is not Output.TABLE:
        show({"items": items}, output)
        return
    typer.echo(fault_table(items))


@app.command()
@reports_errors
def clear(
    ctx: typer.Context,
    name: NameArgument,
    fault_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Only this fault (default: all).")
    ] = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Remove one fault (by id) or all of a sandbox's faults."""
    with open_api(ctx) as api:
        current = api.get(name)
        faults = stored_faults(current)
        kept = _without(faults, fault_id, sandbox=name)
        sandbox = api.patch(name, _patch(current, kept))
    if output is not Output.TABLE:
        show(sandbox, output)
        return
    gone = f"fault {fault_id}" if fault_id else f"{len(faults)} faults"
    typer.echo(f"{gone} removed from sandbox {name}")


def _patch(current: Json, faults: list[Json]) -> Json:
    """The new list, applied only if nobody changed the sandbox since `current` was read."""
    generation = current.get("generation")
    return {"faults": faults, **({"generation": generation} if generation else {})}


def _without(faults: list[Json], fault_id: str | None, *, sandbox: str) -> list[Json]:
    if fault_id is None:
        return []
    kept = [f for f in faults if f.get("id") != fault_id]
    if len(kept) == len(faults):
        known = ", ".join(str(f.get("id")) for f in faults) or "none"
        raise NotFound(f"sandbox {sandbox} has no fault {fault_id} (its faults: {known})")
    return kept
