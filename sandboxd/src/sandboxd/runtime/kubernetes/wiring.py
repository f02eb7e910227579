"""The Kubernetes runtime's own wiring: from `Settings` to a started runtime, and back.

The composition root calls `open_runtime` (and, before serving, `check`) and knows nothing
else of this package: the kubeconfig, the client, the catalog from the cluster and the
runtime's settings are made here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from sandboxd.core.catalog import Catalog
from sandboxd.runtime.base import Opened
from sandboxd.runtime.confine import Confinement
from sandboxd.runtime.errors import RuntimeUnavailable
from sandboxd.runtime.kubernetes import config, discover
from sandboxd.runtime.kubernetes.client import KubeClient
from sandboxd.runtime.kubernetes.errors import KubeError
from sandboxd.runtime.kubernetes.render import Quota
from sandboxd.runtime.kubernetes.runtime import MANAGED, KubernetesRuntime, KubeSettings
from sandboxd.settings import Settings

log = logging.getLogger(__name__)


async def check(settings: Settings) -> None:
    """Reach the API once with the configured credentials (raises RuntimeUnavailable)."""
    try:
        client = _client(settings)
    except config.KubeConfigError as e:
        raise RuntimeUnavailable(str(e)) from e
    try:
        await client.list("/api/v1/namespaces", selector=MANAGED)
    except KubeError as e:
        raise RuntimeUnavailable(f"cannot use the Kubernetes API: {e}") from e
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    catalog: Catalog,
    on_change: Callable[[str], None],
    confinement: Confinement | None = None,
) -> AsyncIterator[Opened]:
    """The runtime, started, with the catalog (plus the cluster's labelled Services when
    `catalog_from_cluster`); closed on exit. Forks run in the cluster: `confinement` is not
    theirs to use."""
    client = _client(settings)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(client.close)
        if settings.catalog_from_cluster:
            catalog = await _with_cluster_services(client, catalog)
        runtime = KubernetesRuntime(
            client, catalog=catalog, settings=_kube_settings(settings), on_change=on_change
        )
        stack.push_async_callback(runtime.close)
        await runtime.start()
        yield Opened(runtime, catalog)


def _client(settings: Settings) -> KubeClient:
    connection = config.load(settings.kubeconfig, context=settings.kube_context)
    return KubeClient(connection, max_requests=settings.kube_max_requests)


async def _with_cluster_services(client: KubeClient, catalog: Catalog) -> Catalog:
    found, problems = discover.catalog_services(
        await client.list("/api/v1/services", selector=discover.SELECTOR)
    )
    merged, skipped = discover.merge(catalog, found)
    for problem in [*problems, *skipped]:
        log.warning("catalog from the cluster: %s", problem)
    log.info("catalog: %d services (%d from the cluster)", len(merged.services), len(found))
    return merged


def _kube_settings(settings: Settings) -> KubeSettings:
    return KubeSettings(
        router_namespace=settings.router_namespace,
        egress_allow=tuple(settings.egress_allow),
        quota=Quota(settings.quota_cpu, settings.quota_memory, settings.quota_pods),
        istio=settings.istio,
        progress_deadline=max(1, round(settings.health_timeout)),
        pod_security=settings.pod_security,
    )
