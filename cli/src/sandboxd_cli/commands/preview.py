"""`sandbox preview`: a service's preview link, for a browser (which cannot send `baggage`).

The link is the router's: opening it sets a cookie that routes that browser's requests into the
sandbox, then lands on `--next`. sandboxd gives one per service with a router URL in the
sandbox's `links` (`preview:<service>`); this command picks it and sets the landing path.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from sandboxd_cli.errors import BadInput, reports_errors
from sandboxd_cli.options import OutputOption, open_api, show
from sandboxd_cli.render import Output

app = typer.Typer()

PREFIX = "preview:"


@app.command()
@reports_errors
def preview(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The sandbox's name.")],
    service: Annotated[str, typer.Argument(help="The service to open in a browser.")],
    next_path: Annotated[
        str, typer.Option("--next", metavar="PATH", help="Where the link lands (a path).")
    ] = "/",
    output: OutputOption = Output.TABLE,
) -> None:
    """Print the URL that opens SERVICE as sandbox NAME's in a browser."""
    if not next_path.startswith("/") or next_path.startswith(("//", "/\\")):
        raise BadInput(f"--next must be a path on the service, such as /app: not {next_path!r}")
    with open_api(ctx) as api:
        sandbox = api.get(name)
    links = {
        key[len(PREFIX) :]: url
        for key, url in (sandbox.get("links") or {}).items()
        if key.startswith(PREFIX)
    }
    if service not in links:
        raise BadInput(_missing(name, service, sorted(links)))
    url = f"{links[service].split('?', 1)[0]}?next={quote(next_path, safe='/')}"
    if output is Output.TABLE:
        typer.echo(url)
    else:
        show({"sandbox": name, "service": service, "url": url}, output)


def _missing(name: str, service: str, have: list[str]) -> str:
    if have:
        return f"sandbox {name} has no preview link for {service!r} (it has: {', '.join(have)})"
    return f"sandbox {name} has no preview links: it is not live, or no service has a router URL"
