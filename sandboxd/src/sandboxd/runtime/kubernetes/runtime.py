"""The Kubernetes runtime: a sandbox is a namespace holding its forks, everything else is shared.

`apply` reads each forked service's baseline Deployment and Service, renders the sandbox's
objects (`render.py`) and server-side applies them — only when they differ from what this process
last applied for the sandbox; otherwise it only reads the forks' Deployments — and reports each
fork's state from its Deployment's status. `stop` deletes the namespace (and the Istio routes)
and is done once the namespace controller has finalized it. What exists is read from the
cluster, so a restarted sandboxd converges on what an earlier one left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from sandboxd.core.catalog import Catalog, KubernetesRef
from sandboxd.core.plan import RuntimeKind, SandboxPlan
from sandboxd.runtime.base import ForkStatus, LogChunk
from sandboxd.runtime.errors import PermanentError, TemporaryError
from sandboxd.runtime.kubernetes import render
from sandboxd.runtime.kubernetes.client import KubeClient, Obj, collection_path, object_path
from sandboxd.runtime.kubernetes.errors import (
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    NamespaceTerminating,
)
from sandboxd.runtime.kubernetes.informer import DeploymentInformer
from sandboxd.runtime.kubernetes.rollout import failed, fork_status, waiting

log = logging.getLogger(__name__)
MANAGED = render.MANAGED
BASELINE_TTL = 5.0  # seconds a baseline Deployment and Service are reused before a fresh read
UID = "sandboxd.dev/uid"


@dataclass(frozen=True, slots=True)
class KubeSettings:
    router_namespace: str = "sandboxd"
    egress_allow: tuple[str, ...] = ()
    quota: render.Quota = field(default_factory=render.Quota)
    istio: bool = False
    pod_security: str = "baseline"
    progress_deadline: int = 600
    """Seconds a fork's rollout may make no progress before it fails (the health timeout)."""


class BaselineMissing(Exception):
    """A forked service's baseline Deployment or Service is not in the cluster."""


class KubernetesRuntime:
    kind: ClassVar[RuntimeKind] = "kubernetes"
    poll_interval: ClassVar[float] = 2.0  # a fallback: the informer kicks on every change

    def __init__(
        self,
        client: KubeClient,
        *,
        catalog: Catalog,
        settings: KubeSettings,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._catalog = catalog
        self._settings = settings
        self._applied: dict[str, str] = {}  # sandbox → digest of what this process applied
        self._route_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._baselines: dict[KubernetesRef, tuple[float, tuple[Obj, Obj]]] = {}
        self._informer = DeploymentInformer(client, on_change or (lambda _name: None))
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Reach the API once (a wrong kubeconfig fails `sandboxd serve` at start), then keep
        the fork Deployments in memory."""
        await self._client.list(collection_path("v1", "Namespace"), selector=MANAGED)
        self._watching = asyncio.create_task(self._informer.run(), name="kube-informer")
        try:
            await asyncio.wait_for(self._informer.synced.wait(), timeout=30)
        except TimeoutError:
            log.warning("no list of fork Deployments after 30 s; reading them one by one")

    async def close(self) -> None:
        """Sandboxes outlive this process (the reaper of the next one deletes them)."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        await self._client.close()

    async def sandboxes(self) -> set[str]:
        with _retryable():
            return await self._sandboxes()

    async def _sandboxes(self) -> set[str]:
        found = {
            (ns["metadata"].get("labels") or {}).get(render.SANDBOX, "")
            for ns in await self._client.list(collection_path("v1", "Namespace"), selector=MANAGED)
        }
        if self._settings.istio:
            for ref in self._refs():
                found.update(render.routed_sandboxes(await self._virtual_service(ref) or {}))
        return found - {""}

    async def apply(self, plan: SandboxPlan) -> list[ForkStatus]:
        """Raises PermanentError when the API refuses a rendered object (the same objects would
        be refused again), TemporaryError for any other failure of the API."""
        with _retryable():
            return await self._apply(plan)

    async def _apply(self, plan: SandboxPlan) -> list[ForkStatus]:
        namespace = render.namespace_name(plan.name)
        known = plan.name in self._applied
        existing = None if known else await self._client.get(f"/api/v1/namespaces/{namespace}")
        if existing is not None and _blocking(existing, plan.uid):
            if not existing["metadata"].get("deletionTimestamp"):  # an older sandbox's leftover
                await self._client.delete(f"/api/v1/namespaces/{namespace}")
            why = "the namespace of an earlier sandbox of this name is being deleted"
            return [waiting(p.service, why) for p in plan.forks]
        try:
            objects, forks, routes = await self._render(plan)
            digest = _digest([*objects, *(route for _, route in routes)])
            if self._applied.get(plan.name) != digest:
                self._applied.pop(plan.name, None)
                for obj in await self._apply_all(objects):
                    if obj.get("kind") == "Deployment":
                        self._informer.put(obj)
                if self._settings.istio:
                    await asyncio.gather(
                        *(self._set_route(ref, plan.name, route) for ref, route in routes)
                    )
                self._applied[plan.name] = digest
            observed = [await self._deployment(namespace, service) for service, _ in forks]
        except BaselineMissing as e:
            return [failed(p.service, "BaselineNotFound", str(e)) for p in plan.forks]
        except NamespaceTerminating:
            raise  # a namespace deleted behind our back: gone soon, then made anew
        except (Invalid, Forbidden) as e:
            raise PermanentError(f"Kube{e.reason}", e.message) from e
        if any(obj is None for obj in observed):
            self._applied.pop(plan.name, None)  # deleted behind our back: apply again next time
        now = time.time()
        return [
            fork_status(service, obj, render.fork_upstream(plan.name, service, port), now=now)
            for (service, port), obj in zip(forks, observed, strict=True)
        ]

    async def _deployment(self, namespace: str, name: str) -> Obj | None:
        if self._informer.synced.is_set():
            return self._informer.get(namespace, name)
        return await self._client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    async def stop(self, name: str, *, keep_logs: bool = False) -> bool:
        """Delete the namespace (and the sandbox's Istio routes); True once both are gone."""
        with _retryable():
            return await self._stop(name)

    async def _stop(self, name: str) -> bool:
        self._applied.pop(name, None)
        self._informer.forget(render.namespace_name(name))
        if self._settings.istio:  # routes first: traffic leaves the forks before they go
            await asyncio.gather(*(self._set_route(ref, name, None) for ref in self._refs()))
        return not await self._client.delete(f"/api/v1/namespaces/{render.namespace_name(name)}")

    async def read_log(
        self, name: str, service: str, *, offset: int | None, tail: int | None
    ) -> LogChunk | None:
        return None  # pods' logs are the cluster's

    def no_log(self, name: str, service: str) -> str:
        namespace = render.namespace_name(name)
        return f"fork logs are the cluster's: kubectl logs -n {namespace} deployment/{service}"

    async def _render(
        self, plan: SandboxPlan
    ) -> tuple[list[Obj], list[tuple[str, int]], list[tuple[KubernetesRef, Obj]]]:
        """Every object of the sandbox, namespace first; each fork's name and port; and for
        Istio, each fork's rule in its baseline Service's VirtualService."""
        spec = plan.spec
        assert spec is not None  # the reconciler sets both
        assert plan.expires_at is not None
        refs = {fork.service: self._ref(fork.service) for fork in spec.forks}
        baselines = await asyncio.gather(*(self._baseline(ref) for ref in refs.values()))
        env = {p.service: p.env for p in plan.forks}
        namespace = render.namespace(
            plan.name, expires_at=plan.expires_at, pod_security=self._settings.pod_security
        )
        namespace["metadata"]["annotations"][UID] = plan.uid
        objects = [
            namespace,
            render.resource_quota(plan.name, self._settings.quota),
            render.limit_range(plan.name),
            *render.network_policies(
                plan.name,
                router_namespace=self._settings.router_namespace,
                baseline_namespaces=self._baseline_namespaces(),
                allow_cidrs=list(self._settings.egress_allow),
            ),
        ]
        for fork, (deployment, service) in zip(spec.forks, baselines, strict=True):
            objects.append(
                render.fork_deployment(
                    deployment,
                    sandbox=plan.name,
                    service=fork.service,
                    fork=fork.model_copy(update={"env": dict(env.get(fork.service, fork.env))}),
                    agent=spec.agent,
                    progress_deadline=self._settings.progress_deadline,
                )
            )
            objects.append(render.fork_service(service, sandbox=plan.name, service=fork.service))
        routes = [
            (
                refs[fork.service],
                render.sandbox_route(
                    sandbox=plan.name,
                    service=fork.service,
                    port=refs[fork.service].port,
                    baggage_key=self._catalog.baggage_key,
                    routing_key=plan.routing_key,
                ),
            )
            for fork in spec.forks
        ]
        forks = [(fork.service, refs[fork.service].port) for fork in spec.forks]
        return objects, forks, routes

    async def _apply_all(self, objects: list[Obj]) -> list[Obj]:
        """In three waves: the namespace (everything lives in it); its quota, limits and
        policies (a pod admitted before the LimitRange exists would be refused by the quota);
        then the forks."""
        forks = [o for o in objects[1:] if o["kind"] in ("Deployment", "Service")]
        guards = [o for o in objects[1:] if o["kind"] not in ("Deployment", "Service")]
        stored = [await self._client.apply(objects[0])]
        for wave in (guards, forks):
            stored += await asyncio.gather(*(self._client.apply(o) for o in wave))
        return stored

    async def _baseline(self, ref: KubernetesRef) -> tuple[Obj, Obj]:
        """The baseline Deployment and Service, read at most every BASELINE_TTL seconds."""
        cached = self._baselines.get(ref)
        if cached is not None and time.monotonic() - cached[0] < BASELINE_TTL:
            return cached[1]
        deployment, service = await asyncio.gather(
            self._client.get(
                f"/apis/apps/v1/namespaces/{ref.namespace}/deployments/{ref.deployment}"
            ),
            self._client.get(f"/api/v1/namespaces/{ref.namespace}/services/{ref.service}"),
        )
        if deployment is None:
            raise BaselineMissing(f"baseline Deployment {ref.namespace}/{ref.deployment} not found")
        if service is None:
            raise BaselineMissing(f"baseline Service {ref.namespace}/{ref.service} not found")
        self._baselines[ref] = (time.monotonic(), (deployment, service))
        return deployment, service

    def _ref(self, service: str) -> KubernetesRef:
        entry = self._catalog.get(service)
        if entry is None or entry.kubernetes is None:
            raise BaselineMissing(f"service {service!r} has no kubernetes reference")
        return entry.kubernetes

    def _baseline_namespaces(self) -> list[str]:
        return sorted({s.kubernetes.namespace for s in self._catalog.services if s.kubernetes})

    def _refs(self) -> list[KubernetesRef]:
        return [s.kubernetes for s in self._catalog.services if s.kubernetes is not None]

    async def _virtual_service(self, ref: KubernetesRef) -> Obj | None:
        path = collection_path("networking.istio.io/v1", "VirtualService", ref.namespace)
        return await self._client.get(f"{path}/{render.virtual_service_name(ref.service)}")

    async def _set_route(self, ref: KubernetesRef, sandbox: str, route: Obj | None) -> None:
        """Put (or, with None, take out) one sandbox's rule in the service's VirtualService.

        Read, change, write with the resourceVersion read: another writer in between gives 409
        and the change is made again on what it wrote. One lock per service in this process."""
        lock = self._route_locks.setdefault((ref.namespace, ref.service), asyncio.Lock())
        path = collection_path("networking.istio.io/v1", "VirtualService", ref.namespace)
        async with lock:
            for _ in range(10):
                current = await self._virtual_service(ref)
                rules = render.routed_sandboxes(current or {})
                if rules.get(sandbox) == route:
                    return  # already as wanted (and None when absent)
                if route is None:
                    del rules[sandbox]
                else:
                    rules[sandbox] = route
                version = current["metadata"]["resourceVersion"] if current else None
                wanted = render.virtual_service(
                    namespace=ref.namespace,
                    service=ref.service,
                    port=ref.port,
                    routes=list(rules.values()),
                    resource_version=version,
                )
                try:
                    if current is not None and not rules:  # the last sandbox's rule went
                        await self._client.delete(object_path(wanted), resource_version=version)
                    else:
                        await self._client.write(wanted, create=current is None)
                    return
                except Conflict:
                    continue  # written by another in between: change what it wrote
            raise Conflict("Conflict", f"{path}: changed by others 10 times in a row")


@contextlib.contextmanager
def _retryable() -> Iterator[None]:
    """Any failure of the API not classified before: the next try may well succeed."""
    try:
        yield
    except KubeError as e:
        raise TemporaryError(str(e)) from e


def _blocking(namespace: Obj, uid: str) -> bool:
    """Being deleted, or left by an earlier sandbox of the same name."""
    meta = namespace["metadata"]
    owner = (meta.get("annotations") or {}).get(UID)
    return bool(meta.get("deletionTimestamp")) or (owner is not None and owner != uid)


def _digest(objects: list[Obj]) -> str:
    blob = json.dumps(objects, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


__all__ = ["KubeSettings", "KubernetesRuntime"]
