"""One topology for the package: a baseline, two sandboxes' forks and the real router.

    routing key   sandbox  forks `tools`?   expected upstream
    KEYS["pr-1"]  pr-1     yes              fork-pr-1
    KEYS["pr-2"]  pr-2     yes              fork-pr-2
    KEYS["pr-3"]  pr-3     no (other svc)   baseline
    (none/other)  -        -                baseline

Routing keys differ from sandbox names on purpose: the router must look the key up, and report
the sandbox's *name* in `sandboxd-route`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.router.mcp.processes import (
    Router,
    Upstream,
    mcp_service,
    sandboxd_router,
    version_server,
)

KEYS = {"pr-1": "rk-7f3a9c", "pr-2": "rk-0b41de", "pr-3": "rk-5c2e88"}


@dataclass(frozen=True)
class Topology:
    baseline: Upstream
    forks: dict[str, Upstream]
    router: Router
    log_dir: Path

    @property
    def url(self) -> str:
        """The `tools` service's MCP endpoint on the router."""
        return self.router.mcp_url("tools")

    def upstream(self, instance: str) -> Upstream:
        return self.baseline if instance == "baseline" else self.forks[instance]


def route(sandbox: str, **forks: str) -> dict[str, Any]:
    return {"sandbox": sandbox, "forks": forks, "faults": []}


@pytest.fixture(scope="package")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Upstream]]:
    log_dir = tmp_path_factory.mktemp("mcp-upstreams")
    with (
        version_server("baseline", log_dir=log_dir) as baseline,
        version_server("fork-pr-1", log_dir=log_dir) as fork1,
        version_server("fork-pr-2", log_dir=log_dir) as fork2,
    ):
        yield {u.name: u for u in (baseline, fork1, fork2)}


@pytest.fixture(scope="package")
def topology(
    upstreams: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    log_dir = tmp_path_factory.mktemp("mcp-router")
    baseline = upstreams["baseline"]
    forks = {"fork-pr-1": upstreams["fork-pr-1"], "fork-pr-2": upstreams["fork-pr-2"]}
    routes = {
        "baggageKey": "sandbox",
        "services": [
            mcp_service("tools", baseline=baseline.root),
            # pr-3 forks only this one, so its key must leave `tools` on the baseline.
            mcp_service("other", baseline=baseline.root),
        ],
        "routes": {
            KEYS["pr-1"]: route("pr-1", tools=forks["fork-pr-1"].root),
            KEYS["pr-2"]: route("pr-2", tools=forks["fork-pr-2"].root),
            KEYS["pr-3"]: route("pr-3", other=forks["fork-pr-2"].root),
        },
        "version": "mcp-tests",
    }
    with sandboxd_router(routes, log_dir=log_dir) as router:
        yield Topology(baseline=baseline, forks=forks, router=router, log_dir=log_dir)
