"""`sandboxd serve` (also `python -m sandboxd serve`): run the control plane."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError

from sandboxd import token_cli
from sandboxd.api.middleware import MAX_REQUEST_HEAD
from sandboxd.app import create_app, preflight
from sandboxd.core.catalog import CatalogError
from sandboxd.core.errors import describe, one_line
from sandboxd.runtime.confine import ConfinementUnavailable
from sandboxd.runtime.errors import RuntimeUnavailable
from sandboxd.runtime.supervisor import SupervisorError
from sandboxd.settings import Settings

cli = typer.Typer(
    help="sandboxd: ephemeral per-PR sandboxes for AI agents and MCP tool servers.",
    no_args_is_help=True,
    add_completion=False,
)


cli.add_typer(token_cli.cli, name="token")


@cli.callback()
def _root() -> None:
    """sandboxd control plane."""


@cli.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (env SANDBOXD_HOST, default 127.0.0.1)")
    ] = None,
    insecure_listen: Annotated[
        bool | None,
        typer.Option(
            "--insecure-listen",
            help="Allow a --host other than loopback: plain HTTP, tokens in clear "
            "(env SANDBOXD_INSECURE_LISTEN)",
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (env SANDBOXD_PORT, default 7070)")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="State directory (env SANDBOXD_DATA_DIR, default ~/.sandboxd)"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL (env SANDBOXD_DATABASE_URL, default SQLite in the data dir)"
        ),
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="Catalog file, sandboxd.yaml (env SANDBOXD_CATALOG)")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="Where forks run: local or kubernetes (env SANDBOXD_RUNTIME)"),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="kubernetes: kubeconfig file (env SANDBOXD_KUBECONFIG; default $KUBECONFIG, "
            "~/.kube/config, else the in-cluster service account)"
        ),
    ] = None,
    kube_context: Annotated[
        str | None, typer.Option(help="kubernetes: kubeconfig context (default: current)")
    ] = None,
    istio: Annotated[
        bool | None,
        typer.Option(
            "--istio/--no-istio",
            help="kubernetes: also write Istio VirtualServices per fork (env SANDBOXD_ISTIO)",
        ),
    ] = None,
    router_namespace: Annotated[
        str | None,
        typer.Option(help="kubernetes: the router's namespace (env SANDBOXD_ROUTER_NAMESPACE)"),
    ] = None,
    catalog_from_cluster: Annotated[
        bool | None,
        typer.Option(
            "--catalog-from-cluster/--no-catalog-from-cluster",
            help="kubernetes: add Services labelled sandboxd.dev/service to the catalog",
        ),
    ] = None,
    egress_allow: Annotated[
        list[str] | None,
        typer.Option(help="kubernetes: a CIDR sandboxes may reach (repeatable)"),
    ] = None,
    start_baseline: Annotated[
        bool | None,
        typer.Option(
            "--start-baseline/--no-start-baseline",
            help="Run the catalog's baseline commands (env SANDBOXD_START_BASELINE)",
        ),
    ] = None,
    with_router: Annotated[
        bool | None,
        typer.Option(
            "--with-router/--no-with-router",
            help="Also run sandboxd-router, wired to this control plane (env SANDBOXD_WITH_ROUTER)",
        ),
    ] = None,
    reaper_interval: Annotated[
        float | None,
        typer.Option(help="Seconds between TTL sweeps (env SANDBOXD_REAPER_INTERVAL, default 10)"),
    ] = None,
    allow_unconfined_forks: Annotated[
        bool | None,
        typer.Option(
            "--allow-unconfined-forks/--no-allow-unconfined-forks",
            help="Run forks where they cannot be confined: PR code can then read the admin "
            "token (env SANDBOXD_ALLOW_UNCONFINED_FORKS)",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run the control plane: REST API, reconciler, TTL reaper and a runtime (local or
    kubernetes)."""
    given: dict[str, Any] = {
        "host": host,
        "insecure_listen": insecure_listen,
        "port": port,
        "data_dir": data_dir,
        "database_url": database_url,
        "catalog": catalog,
        "runtime": runtime,
        "start_baseline": start_baseline,
        "reaper_interval": reaper_interval,
        "with_router": with_router,
        "kubeconfig": kubeconfig,
        "kube_context": kube_context,
        "istio": istio,
        "router_namespace": router_namespace,
        "catalog_from_cluster": catalog_from_cluster,
        "egress_allow": egress_allow or None,
        "allow_unconfined_forks": allow_unconfined_forks,
    }
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
        confined = preflight(settings)
        app = create_app(settings, confined=confined)
    except ValidationError as e:
        _fail(f"invalid setting: {one_line(describe(e.errors()))}")
    except (CatalogError, SupervisorError, RuntimeUnavailable, ConfinementUnavailable) as e:
        _fail(str(e))
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        access_log=False,
        http="h11",
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
    )
    _Server(config).run()


class _Server(uvicorn.Server):
    """Releases the routers' long polls and the web page's streams as soon as a stop is asked
    for; uvicorn would otherwise wait for them (up to the graceful timeout) before it lets the
    app shut down."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        app = self.config.app
        state = getattr(getattr(app, "state", None), "sandboxd", None)
        if state is not None:
            asyncio.get_event_loop().call_soon_threadsafe(state.routes.close)
        web = getattr(getattr(app, "state", None), "web", None)
        if web is not None:  # the web page's live streams
            asyncio.get_event_loop().call_soon_threadsafe(web.close)


def _fail(message: str) -> None:
    typer.echo(f"sandboxd: {message}", err=True)
    raise typer.Exit(2)


def main() -> None:
    cli(prog_name="sandboxd")


if __name__ == "__main__":
    main()
