"""The composition root: `create_app(settings)` wires store, catalog, runtime, reconciler and API.

Everything long-lived is made in the lifespan and torn down there; nothing at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from fastapi import FastAPI

from sandboxd import tracing
from sandboxd.api import audit, errors, observe, reports, sandboxes, signals, system
from sandboxd.api.audit import AuditCalls, AuditTrail
from sandboxd.api.deps import AppState
from sandboxd.api.middleware import BodyLimit, RequestMetrics
from sandboxd.core.catalog import Catalog, load_catalog
from sandboxd.core.plan import ProcessPlan, plan_baselines, reachable_host
from sandboxd.core.preview import preview_key
from sandboxd.core.tokens import hash_token
from sandboxd.metrics import Metrics
from sandboxd.reconciler.controller import Reconciler, ReconcilerConfig
from sandboxd.reconciler.queue import Backoff
from sandboxd.routebook import RouteBook
from sandboxd.runtime import local
from sandboxd.runtime.base import Opened
from sandboxd.runtime.confine import Confinement, no_dumps
from sandboxd.runtime.kubernetes import wiring as kubernetes
from sandboxd.runtime.supervisor import Supervisor, check_port_free
from sandboxd.settings import Settings
from sandboxd.store.engine import make_engine
from sandboxd.store.repository import Store
from sandboxd.web import routes as web

log = logging.getLogger(__name__)
SWITCH_INTERVAL = 0.001
"""Seconds a thread holds the GIL while another waits for it (Python's default: 0.005). A
post of router signals is tens of milliseconds of Python on the loop and in a store thread;
a metrics call waits for the GIL at each of its few thread hops and shares it meanwhile:
each wait and each turn is a fifth of the default (`benchmarks/metrics_api.py`)."""


def admin_token(settings: Settings) -> str:
    """The configured admin token, else the one in `<data dir>/admin-token`, made on first start."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    return _token_file(settings.data_path / "admin-token")


def view_key(settings: Settings) -> bytes:
    """The key of the web page's links and sessions: the configured one, else the one in
    `<data dir>/view-key`, made on first start (as the admin token is)."""
    if settings.view_key is not None:
        return settings.view_key.get_secret_value().encode()
    return _token_file(settings.data_path / "view-key").encode()


def router_token(settings: Settings) -> str:
    """The token that may only read the route table: the embedded router's, and the one to
    give routers run apart (`--token-file <data dir>/router-token`) instead of the admin's."""
    return _token_file(settings.data_path / "router-token")


def _token_file(path: Path) -> str:
    if path.exists():
        _private(path, 0o600)
        if token := path.read_text().strip():
            return token
        path.unlink()  # an empty token would let an empty bearer in
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.info("generated a token into %s", path)
    return token


def _private(path: Path, mode: int) -> None:
    """Tighten a file or directory that others could read (made before, or by hand)."""
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; setting mode %o", path, mode)
        path.chmod(mode)


def hidden_from_forks(settings: Settings) -> list[Path]:
    """What forks and baselines must not see: the data dir (admin token, database, seal key,
    every log) and the admin token's default directory, which the CLI reads."""
    default = Settings.model_fields["data_dir"].default.expanduser().resolve()
    return sorted({settings.data_path, default})


def confinement(settings: Settings) -> Confinement:
    """How forks and baselines start here (raises ConfinementUnavailable); confinement is only
    tried where sandboxd runs processes of its own."""
    hide = hidden_from_forks(settings)
    if settings.runtime != "local" and not settings.start_baseline:
        return Confinement(tuple(hide), unconfined="no local processes")
    settings.data_path.mkdir(mode=0o700, parents=True, exist_ok=True)  # so the probe covers it
    found = Confinement.detect(hide, allow_unconfined=settings.allow_unconfined_forks)
    workdir = settings.catalog.resolve().parent if settings.catalog else None
    covering = [h for h in hide if workdir is not None and workdir.is_relative_to(h)]
    if found.unconfined is None and covering:  # a command with absolute paths still runs
        log.warning(
            "the catalog's directory %s is inside %s, which forks and baselines cannot see "
            "(it holds sandboxd's secrets): they start in an empty directory; use another "
            "--data-dir if they read files beside the catalog",
            workdir,
            covering[0],
        )
    if found.unconfined is not None:
        log.warning(
            "forks and baselines run UNCONFINED (%s): PR code can read the admin token, the "
            "database and sandboxd's memory; allowed by --allow-unconfined-forks",
            found.unconfined,
        )
    return found


def preflight(settings: Settings) -> Confinement:
    """What can be checked before serving, so that `sandboxd serve` fails with one clear line
    (raises CatalogError, SupervisorError, RuntimeUnavailable or ConfinementUnavailable);
    before anything is stopped. Returns how processes start here."""
    no_dumps()  # secrets are about to enter this process's memory
    catalog = load_catalog(settings.catalog) if settings.catalog else Catalog()
    confined = confinement(settings)
    if settings.runtime == "kubernetes":
        asyncio.run(kubernetes.check(settings))
    if settings.start_baseline:
        workdir = str(settings.catalog.resolve().parent) if settings.catalog else None
        plans = plan_baselines(catalog, router_host=settings.router_host, workdir=workdir)
        leftovers = Supervisor(
            role="baseline", data_dir=settings.data_path, plans=[], stop_grace=settings.stop_grace
        )
        asyncio.run(leftovers.stop_leftovers())  # our own, from a run that was killed
        for plan in plans:
            check_port_free(plan)
    return confined


def create_app(settings: Settings, *, confined: Confinement) -> FastAPI:
    file_catalog = load_catalog(settings.catalog) if settings.catalog else Catalog()
    workdir = str(settings.catalog.resolve().parent) if settings.catalog else None
    metrics = Metrics()
    traced = tracing.from_env(metrics.registry)  # None unless OTEL_* asks for traces

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Each resource is closed by the stack as soon as it is made, so a start that fails
        half way (a baseline or the router not coming up) leaves nothing running."""
        async with contextlib.AsyncExitStack() as stack:
            if traced is not None:
                traced.start()
                stack.callback(traced.close)
            settings.data_path.mkdir(mode=0o700, parents=True, exist_ok=True)
            _private(settings.data_path, 0o700)
            engine = make_engine(settings.effective_database_url)
            stack.callback(engine.dispose)
            store = Store(engine)
            stack.push_async_callback(store.close)  # (before the engine's dispose)
            await store.migrate()
            ready = asyncio.create_task(store.keep_baseline_ready(), name="baseline-sides")
            stack.push_async_callback(_cancel, ready)
            token = admin_token(settings)
            await store.put_token(name="admin", token_hash=hash_token(token))
            reader = router_token(settings)
            trail = AuditTrail(store)
            writing = asyncio.create_task(trail.run(), name="audit-log")
            stack.push_async_callback(trail.flush)  # (after the writer stops: the last calls)
            stack.push_async_callback(_cancel, writing)
            kick = _Deferred()
            opened = await stack.enter_async_context(
                open_runtime(settings, catalog=file_catalog, on_change=kick, confined=confined)
            )
            runtime, catalog = opened.runtime, opened.catalog
            keyed = view_key(settings)
            routes = RouteBook(catalog=catalog, preview_key=preview_key(keyed))
            reconciler = Reconciler(
                store=store,
                runtime=runtime,
                catalog=catalog,
                routes=routes,
                metrics=metrics,
                config=ReconcilerConfig(
                    router_host=settings.router_host,
                    workdir=workdir,
                    health_timeout=settings.health_timeout,
                    sweep_interval=settings.reaper_interval,
                    workers=settings.workers,
                    drain=settings.drain,
                    backoff=Backoff(settings.retry_base, settings.retry_cap),
                ),
                spans=traced.internal if traced is not None else None,
            )
            kick.target = reconciler.kick
            if settings.start_baseline:
                plans = plan_baselines(catalog, router_host=settings.router_host, workdir=workdir)
                baseline = Supervisor(
                    role="baseline",
                    data_dir=settings.data_path,
                    plans=plans,
                    stop_grace=settings.stop_grace,
                    confinement=confined,
                )
                stack.push_async_callback(baseline.close)
                await baseline.start()
            app.state.sandboxd = AppState(
                settings=settings,
                store=store,
                catalog=catalog,
                routes=routes,
                metrics=metrics,
                kicker=reconciler,
                logs=runtime,
                reconciler_alive=reconciler.alive,
                admin_hashes={hash_token(token)},
                route_reader_hashes={hash_token(reader)},
                audit=trail,
                view_key=keyed,
                preview_key=preview_key(keyed),
            )
            task = asyncio.create_task(reconciler.run(), name="reconciler")
            stack.push_async_callback(_cancel, task)
            router = Supervisor(
                role="router",
                data_dir=settings.data_path,
                plans=[router_plan(settings)] if settings.with_router else [],
                stop_grace=settings.stop_grace,
                stdin=reader.encode(),
            )
            stack.push_async_callback(router.close)
            await router.start()
            # What start-up made (the app, its routes and models, the imported modules) lives
            # as long as the process: out of the cyclic collector's sight, its full passes
            # shrink from about 60 ms (seen as an API call's p99) to what requests leave.
            gc.collect()
            gc.freeze()
            stack.callback(sys.setswitchinterval, sys.getswitchinterval())
            sys.setswitchinterval(SWITCH_INTERVAL)
            yield

    app = FastAPI(
        title="sandboxd",
        version="0.1.0",
        summary="Per-pull-request sandboxes for AI agents and their MCP tool servers.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(sandboxes.router)
    app.include_router(system.v1)
    app.include_router(reports.router)
    app.include_router(signals.router)
    app.include_router(observe.router)
    app.include_router(audit.router)
    app.include_router(system.ops)
    web.install(app)
    signals_limit = {"/v1/router-signals": max(signals.MAX_POST_BYTES, settings.max_request_bytes)}
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, larger=signals_limit)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(AuditCalls)
    if traced is not None:
        app.add_middleware(tracing.TraceRequests, tracing=traced)
    return app


def open_runtime(
    settings: Settings, *, catalog: Catalog, on_change: Callable[[str], None], confined: Confinement
) -> AbstractAsyncContextManager[Opened]:
    """The runtime `settings.runtime` names, built, started and (on exit) closed by itself."""
    opener = kubernetes.open_runtime if settings.runtime == "kubernetes" else local.open_runtime
    return opener(settings, catalog=catalog, on_change=on_change, confinement=confined)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def router_plan(settings: Settings) -> ProcessPlan:
    """The embedded router: long-polls this control plane and listens on the catalog's router
    ports. Its token (which only reads routes) comes on stdin: an environ or argv is readable
    by more processes than its memory is."""
    host = reachable_host(settings.host)
    argv: tuple[str, ...] = (
        sys.executable, "-m", "sandboxd_router",
        "--control-url", f"http://{host}:{settings.port}",
        "--token-file", "-",
        "--host", settings.router_host,
        "--access-log", str(settings.data_path / "router" / "access.log"),
    )  # fmt: skip
    if settings.router_metrics_port is not None:
        argv += ("--metrics-port", str(settings.router_metrics_port))
    return ProcessPlan("router", argv, {}, None, None)


class _Deferred:
    """The runtime's change callback, pointed at the reconciler once both exist."""

    def __init__(self) -> None:
        self.target: object = None

    def __call__(self, name: str) -> None:
        if callable(self.target):
            self.target(name)


__all__ = ["create_app"]
