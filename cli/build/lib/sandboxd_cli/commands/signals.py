"""`sandbox metrics`, `requests` and `traces`: what a sandbox's traffic did, as the routers saw
it (issue 13's signals).

`metrics --compare` is made for CI: it prints the verdicts and exits 1 when any figure of any
service regressed against the baseline, so a job fails on a regression with one line.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sandboxd_cli.errors import Regressed, reports_errors
from sandboxd_cli.options import OutputOption, open_api, show
from sandboxd_cli.render import Output
from sandboxd_cli.signal_views import (
    compare_table,
    items_of,
    metrics_table,
    regressions,
    requests_table,
    traces_text,
)

app = typer.Typer()

NameArgument = Annotated[str, typer.Argument(help="The sandbox's name.")]


@app.command()
@reports_errors
def metrics(
    ctx: typer.Context,
    name: NameArgument,
    window: Annotated[str, typer.Option(help="How far back: 30s, 5m, 1h (at most 1h).")] = "5m",
    compare: Annotated[
        bool,
        typer.Option(
            "--compare", help="Judge each figure against the baseline; exit 1 on a regression."
        ),
    ] = False,
    effect: Annotated[
        float | None,
        typer.Option(help="The smallest change that counts, as a fraction (0.2: 20 %)."),
    ] = None,
    min_samples: Annotated[
        int | None, typer.Option(help="Fewer requests on a side: inconclusive.")
    ] = None,
    include_injected: Annotated[
        bool,
        typer.Option(
            "--include-injected", help="Count requests a fault was injected into (left out)."
        ),
    ] = False,
    output: OutputOption = Output.TABLE,
) -> None:
    """Per service: requests, error rate and latency percentiles beside the baseline's."""
    params = {"window": window, "excludeInjected": "false" if include_injected else "true"}
    if effect is not None:
        params["effect"] = str(effect)
    if min_samples is not None:
        params["minSamples"] = str(min_samples)
    with open_api(ctx) as api:
        body = api.metrics(name, params)
    if output is not Output.TABLE:
        show(body, output)
    else:
        typer.echo(metrics_table(body))
        if compare:
            typer.echo("\n" + compare_table(body))
    regressed = regressions(body)
    if compare and regressed:
        raise Regressed(f"sandbox {name} regressed against the baseline: {', '.join(regressed)}")


@app.command()
@reports_errors
def requests(
    ctx: typer.Context,
    name: NameArgument,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only this status or class: 503, 5xx, 4xx, 2xx.")
    ] = None,
    fault: Annotated[str | None, typer.Option(help="Only requests this fault (id) hit.")] = None,
    error: Annotated[
        str | None, typer.Option(help="Only this error: http_5xx, jsonrpc, tool_error, transport.")
    ] = None,
    trace: Annotated[str | None, typer.Option("--trace", help="Only this trace id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    output: OutputOption = Output.TABLE,
) -> None:
    """The sandbox's most recent requests, newest first, each with its trace id."""
    given = {"service": service, "status": status, "fault": fault, "error": error,
             "traceId": trace, "limit": str(limit)}  # fmt: skip
    params = {key: value for key, value in given.items() if value is not None}
    with open_api(ctx) as api:
        body = api.requests(name, params)
    if output is not Output.TABLE:
        show(body, output)
        return
    typer.echo(requests_table(items_of(body.get("items"))))


@app.command()
@reports_errors
def traces(
    ctx: typer.Context,
    name: NameArgument,
    trace: Annotated[str | None, typer.Option("--trace", help="Only this trace id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="At most this many traces.")] = 10,
    output: OutputOption = Output.TABLE,
) -> None:
    """The recent traces through the sandbox's routes, as trees of spans."""
    params = {"limit": str(limit), **({"traceId": trace} if trace else {})}
    with open_api(ctx) as api:
        body = api.traces(name, params)
    if output is not Output.TABLE:
        show(body, output)
        return
    typer.echo(traces_text(items_of(body.get("items"))))
