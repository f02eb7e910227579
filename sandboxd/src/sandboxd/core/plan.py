"""What the local runtime runs: a sandbox's spec and the catalog turned into process plans.

A fork runs its own `command` (plus `args`), or else the catalog's baseline command; its env is
the catalog's baseline env, then the fork's overrides, then sandboxd's own variables, which
nothing can override: `PORT`, `SANDBOXD_SANDBOX`, `SANDBOXD_ROUTING_KEY` and, for every catalog
service, `SANDBOXD_SERVICE_<NAME>_URL` (its router address), so services call each other
through the router and a sandbox's traffic stays in the sandbox.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from sandboxd.core.catalog import Catalog, Service
from sandboxd.core.naming import service_url_env
from sandboxd.core.spec import ForkSpec, SandboxSpec

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
RuntimeKind = Literal["local", "kubernetes"]


class PlanError(ValueError):
    """The spec cannot run against this catalog (unknown service, nothing to run)."""


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    service: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    health: str | None
    workdir: str | None
    port: int | None = None  # fixed for baselines; forks get a free one

    @property
    def digest(self) -> str:
        """Changes whenever what would run changes; a running fork with another digest is
        replaced."""
        blob = json.dumps([self.argv, sorted(self.env.items()), self.health, self.workdir])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SandboxPlan:
    name: str
    uid: str
    routing_key: str
    forks: tuple[ProcessPlan, ...]
    spec: SandboxSpec | None = None  # what was asked for: images and versions for kubernetes
    expires_at: str | None = None  # RFC 3339, UTC


def reachable_host(host: str) -> str:
    """Where to connect to a listener bound to `host`: a wildcard address is not a destination."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def router_urls(catalog: Catalog, *, router_host: str) -> dict[str, str]:
    host = reachable_host(router_host)
    return {
        service_url_env(s.name): f"http://{host}:{s.router_port}"
        for s in catalog.services
        if s.router_port is not None
    }


def expand(argv: tuple[str, ...], env: Mapping[str, str]) -> tuple[str, ...]:
    """`${VAR}` in a command from the process env; unknown variables stay as written."""
    return tuple(_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), arg) for arg in argv)


def check_forks(spec: SandboxSpec, catalog: Catalog, *, runtime: RuntimeKind = "local") -> None:
    """Raise PlanError for a fork the catalog cannot back on this runtime; run by the API
    before storing."""
    for index, fork in enumerate(spec.forks):
        service = catalog.get(fork.service)
        if service is None:
            known = ", ".join(s.name for s in catalog.services) or "none"
            raise PlanError(
                f"forks[{index}].service: {fork.service!r} is not in the catalog "
                f"(services: {known})"
            )
        if runtime == "kubernetes":
            if service.kubernetes is None:
                raise PlanError(
                    f"forks[{index}].service: service {fork.service!r} has no `kubernetes` "
                    "reference (namespace, deployment, service, port) in the catalog"
                )
        elif fork.command is None and service.baseline.command is None:
            raise PlanError(
                f"forks[{index}].command: service {fork.service!r} has no baseline command to "
                "reuse, so the fork needs a command"
            )


def plan_sandbox(
    spec: SandboxSpec,
    *,
    uid: str,
    routing_key: str,
    catalog: Catalog,
    router_host: str,
    workdir: str | None,
    runtime: RuntimeKind = "local",
    expires_at: str | None = None,
) -> SandboxPlan:
    check_forks(spec, catalog, runtime=runtime)
    urls = router_urls(catalog, router_host=router_host)
    forks = []
    for fork in spec.forks:
        service = catalog.get(fork.service)
        assert service is not None  # check_forks said so
        own = {"SANDBOXD_SANDBOX": spec.name, "SANDBOXD_ROUTING_KEY": routing_key, **urls}
        forks.append(_fork_plan(fork, service, own=own, workdir=workdir))
    return SandboxPlan(spec.name, uid, routing_key, tuple(forks), spec, expires_at)


def _fork_plan(
    fork: ForkSpec, service: Service, *, own: dict[str, str], workdir: str | None
) -> ProcessPlan:
    command = fork.command or service.baseline.command or []
    argv = (*command, *(fork.args or []))
    env = {**service.baseline.env, **fork.env, **own}
    health = fork.health or service.baseline.health
    return ProcessPlan(fork.service, argv, env, health, workdir)


def plan_baselines(catalog: Catalog, *, router_host: str, workdir: str | None) -> list[ProcessPlan]:
    """The catalog's baseline services that have a command, each on its URL's port."""
    urls = router_urls(catalog, router_host=router_host)
    plans = []
    for service in catalog.services:
        if service.baseline.command is None:
            continue
        port = urlsplit(service.baseline.url).port or 80
        env = {**service.baseline.env, "SANDBOXD_SANDBOX": "", **urls}
        argv = tuple(service.baseline.command)
        plans.append(
            ProcessPlan(service.name, argv, env, service.baseline.health, workdir, port=port)
        )
    return plans
