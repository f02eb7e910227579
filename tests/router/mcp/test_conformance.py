"""The official MCP conformance suite gives the same results through the router as direct.

The suite (`@modelcontextprotocol/conformance`, server scenarios, default "active" suite) runs
against the reference server `@modelcontextprotocol/server-everything`, which fails some
scenarios itself (it lacks some of the suite's test tools); what matters is that exactly the same
checks pass and fail through the router, whether the router sends the traffic to the service's
baseline or, by the baggage header, to a sandbox's fork.

The CLI has no option for extra request headers, so the fork run preloads
tests/fixtures/mcp/baggage.cjs, which adds the `baggage` header to every request the suite makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.router.mcp.conformance import NpmFixtures, Results, describe, install, passed, run_suite
from tests.router.mcp.processes import (
    FIXTURES,
    Router,
    Upstream,
    mcp_service,
    node_server,
    sandboxd_router,
    version_server,
)
from tests.support.server import free_port

KEY = "rk-conformance"


@pytest.fixture(scope="session")
def npm() -> NpmFixtures:
    return install()


@pytest.fixture(scope="module")
def everything(npm: NpmFixtures, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """server-everything over streamable HTTP; its root URL."""
    port = free_port()
    argv = [str(npm.bin("mcp-server-everything")), "streamableHttp"]
    log_dir = tmp_path_factory.mktemp("server-everything")
    with node_server("server-everything", argv, port=port, log_dir=log_dir):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The fork run's baseline: any request that misses the fork lands here, and is counted."""
    with version_server("decoy-baseline", log_dir=tmp_path_factory.mktemp("decoy")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def conformance_router(
    everything: str, decoy: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    routes = {
        "baggageKey": "sandbox",
        "services": [
            mcp_service("everything", baseline=everything),
            mcp_service("forked", baseline=decoy.root),
        ],
        "routes": {KEY: {"sandbox": "conformance", "forks": {"forked": everything}, "faults": []}},
        "version": "conformance",
    }
    with sandboxd_router(routes, log_dir=tmp_path_factory.mktemp("conformance-router")) as r:
        yield r


@pytest.fixture(scope="module")
def direct(npm: NpmFixtures, everything: str, tmp_path_factory: pytest.TempPathFactory) -> Results:
    results = run_suite(npm, f"{everything}/mcp", out_dir=tmp_path_factory.mktemp("direct"))
    assert passed(results), f"nothing passes even direct:\n{describe(results)}"
    return results


def assert_same(routed: Results, direct: Results) -> None:
    report = f"direct:\n{describe(direct)}\n\nthrough the router:\n{describe(routed)}"
    assert passed(routed) == passed(direct), report
    assert routed == direct, report


def mcp_requests(upstream: Upstream) -> int:
    return upstream.process.log.read_text(errors="replace").count(' /mcp HTTP/1.1"')


def test_suite_through_the_router_to_the_baseline_matches_direct(
    npm: NpmFixtures, conformance_router: Router, direct: Results, tmp_path: Path
) -> None:
    routed = run_suite(npm, conformance_router.mcp_url("everything"), out_dir=tmp_path / "out")
    assert_same(routed, direct)


def test_suite_through_the_router_to_a_fork_matches_direct(
    npm: NpmFixtures, conformance_router: Router, direct: Results, decoy: Upstream, tmp_path: Path
) -> None:
    before = mcp_requests(decoy)
    env = {"SANDBOXD_TEST_BAGGAGE": f"sandbox={KEY}", "SANDBOXD_TEST_UNDICI": str(npm.undici)}
    routed = run_suite(
        npm,
        conformance_router.mcp_url("forked"),
        out_dir=tmp_path / "out",
        env=env,
        preload=FIXTURES / "baggage.cjs",
    )
    assert mcp_requests(decoy) == before, "some of the suite's requests reached the baseline"
    assert_same(routed, direct)
