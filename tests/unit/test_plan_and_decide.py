"""Process plans for the local runtime and the reconciler's pure decisions."""

from __future__ import annotations

import pytest

from sandboxd.core.catalog import parse_catalog
from sandboxd.core.phases import Phase
from sandboxd.core.plan import PlanError, check_forks, expand, plan_baselines, plan_sandbox
from sandboxd.core.records import ForkRecord
from sandboxd.core.spec import SandboxSpec
from sandboxd.reconciler.decide import UPDATE_FAILED, fork_events, fork_record, verdict
from sandboxd.runtime.base import ForkState, ForkStatus

CATALOG = parse_catalog(
    """
services:
  - name: agent
    routerPort: 7300
    baseline:
      url: http://127.0.0.1:7400
      command: [python3, agent.py, --port, "${PORT}"]
      env: {MODEL: m-1, SANDBOXD_SANDBOX: spoofed}
      health: /healthz
  - name: cluster-mcp
    protocol: mcp
    routerPort: 7301
    baseline: {url: "http://127.0.0.1:7401"}
""",
    source="t",
)


def plan(forks: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    spec = SandboxSpec.model_validate({"name": "pr-7", "forks": forks})
    return plan_sandbox(
        spec, uid="u1", routing_key="k1", catalog=CATALOG, router_host="127.0.0.1", workdir="/w"
    )


def test_fork_env_layers_baseline_then_fork_then_sandboxd() -> None:
    (fork,) = plan(
        [{"service": "agent", "env": {"MODEL": "m-2", "SANDBOXD_ROUTING_KEY": "evil"}}]
    ).forks
    assert fork.env["MODEL"] == "m-2"
    assert fork.env["SANDBOXD_SANDBOX"] == "pr-7" and fork.env["SANDBOXD_ROUTING_KEY"] == "k1"
    assert fork.env["SANDBOXD_SERVICE_AGENT_URL"] == "http://127.0.0.1:7300"
    assert fork.env["SANDBOXD_SERVICE_CLUSTER_MCP_URL"] == "http://127.0.0.1:7301"
    assert fork.argv == ("python3", "agent.py", "--port", "${PORT}")  # the baseline command
    assert fork.health == "/healthz" and fork.workdir == "/w"


def test_fork_command_args_and_health_override_the_catalog() -> None:
    (fork,) = plan(
        [{"service": "cluster-mcp", "command": ["srv"], "args": ["--v2"], "health": "/h"}]
    ).forks
    assert fork.argv == ("srv", "--v2") and fork.health == "/h"


def test_digest_changes_with_what_would_run() -> None:
    one = plan([{"service": "agent"}]).forks[0].digest
    assert one == plan([{"service": "agent"}]).forks[0].digest
    assert one != plan([{"service": "agent", "env": {"X": "1"}}]).forks[0].digest


def test_expand_substitutes_known_variables_only() -> None:
    assert expand(("a${PORT}", "${NOPE}", "$PORT"), {"PORT": "8"}) == ("a8", "${NOPE}", "$PORT")


def test_unknown_service_and_nothing_to_run_are_plan_errors() -> None:
    with pytest.raises(PlanError, match=r"forks\[0\].service: 'nope' is not in the catalog"):
        check_forks(
            SandboxSpec.model_validate({"name": "x", "forks": [{"service": "nope"}]}), CATALOG
        )
    with pytest.raises(PlanError, match="needs a command"):
        check_forks(
            SandboxSpec.model_validate({"name": "x", "forks": [{"service": "cluster-mcp"}]}),
            CATALOG,
        )


def test_baselines_run_on_their_url_port() -> None:
    (agent,) = plan_baselines(CATALOG, router_host="127.0.0.1", workdir=None)
    assert agent.port == 7400 and agent.env["SANDBOXD_SANDBOX"] == ""


def status(
    state: ForkState, *, started: float = 100.0, service: str = "agent", pid: int = 1
) -> ForkStatus:
    return ForkStatus(service, state, "http://127.0.0.1:1", pid, started, "exited with code 3")


def test_verdicts() -> None:
    now = 110.0
    assert verdict([], now=now, health_timeout=60).phase == Phase.READY
    assert verdict([status(ForkState.READY)], now=now, health_timeout=60).phase == Phase.READY
    starting = verdict([status(ForkState.STARTING)], now=now, health_timeout=60)
    assert (starting.phase, starting.reason) == (Phase.PROVISIONING, "ForksStarting")
    late = verdict([status(ForkState.STARTING, started=0)], now=now, health_timeout=60)
    assert (late.phase, late.reason) == (Phase.FAILED, "HealthCheckTimeout")
    mixed = [status(ForkState.READY), status(ForkState.EXITED, service="b")]
    exited = verdict(mixed, now=now, health_timeout=60)
    assert (exited.phase, exited.reason) == (
        Phase.FAILED,
        "ForkExited",
    ) and "fork b" in exited.message


def test_a_fork_being_replaced_waits_then_fails_the_update_keeping_the_old_copy() -> None:
    now = 110.0

    def serving(new: ForkStatus) -> list[ForkStatus]:
        return [ForkStatus("agent", ForkState.READY, "http://127.0.0.1:1", 1, 50.0, replacing=new)]

    waiting = verdict(serving(status(ForkState.STARTING, pid=2)), now=now, health_timeout=60)
    assert (waiting.phase, waiting.reason) == (Phase.PROVISIONING, "ForksUpdating")
    crashed = verdict(serving(status(ForkState.EXITED, pid=2)), now=now, health_timeout=60)
    assert (crashed.phase, crashed.reason) == (Phase.FAILED, UPDATE_FAILED)
    assert crashed.message == (
        "fork agent's new copy ForkExited: exited with code 3; the old copy keeps serving"
    )
    late = verdict(serving(status(ForkState.STARTING, started=0)), now=now, health_timeout=60)
    assert (late.phase, late.reason) == (Phase.FAILED, UPDATE_FAILED)
    record = fork_record(serving(status(ForkState.STARTING, pid=2))[0])
    assert (record.pid, record.ready) == (1, True)  # routes keep the old copy
    assert record.message == "serving while its new copy (pid 2) starts"


def test_fork_events_follow_changes_only() -> None:
    starting = status(ForkState.STARTING)
    first = fork_events([], [starting])
    assert [e.reason for e in first] == ["ForkStarted"]
    assert fork_events([fork_record(starting)], [starting]) == []
    ready = fork_events([fork_record(starting)], [status(ForkState.READY)])
    assert [e.reason for e in ready] == ["ForkReady"]
    replaced = fork_events(
        [fork_record(status(ForkState.READY))], [status(ForkState.STARTING, pid=2)]
    )
    assert [e.reason for e in replaced] == ["ForkStarted"]
    promoted = fork_events([fork_record(status(ForkState.READY))], [status(ForkState.READY, pid=2)])
    assert [(e.reason, e.message) for e in promoted] == [
        ("ForkReplaced", "fork agent replaced (pid 1 → pid 2, http://127.0.0.1:1)")
    ]
    died = fork_events([fork_record(status(ForkState.READY))], [status(ForkState.EXITED)])
    assert [(e.reason, e.type) for e in died] == [("ForkExited", "Warning")]


def test_a_fork_record_is_the_json_the_api_shows_and_the_store_keeps() -> None:
    ready = status(ForkState.READY, started=1767261600.123456)
    assert fork_record(ready).model_dump(mode="json", by_alias=True) == {
        "service": "agent",
        "phase": "Ready",
        "ready": True,
        "upstream": "http://127.0.0.1:1",
        "pid": 1,
        "message": "exited with code 3",
        "startedAt": "2026-01-01T10:00:00.123Z",
    }


def test_a_fork_record_read_back_equals_the_one_written() -> None:
    """Kept to the millisecond the JSON holds, so an unchanged fork is never written again."""
    record = fork_record(status(ForkState.STARTING, started=1767261600.123456))
    assert ForkRecord.model_validate(record.model_dump(mode="json", by_alias=True)) == record
    assert fork_events([record], [status(ForkState.STARTING, started=1767261600.123456)]) == []


def test_a_wildcard_router_host_gives_processes_a_loopback_url() -> None:
    spec = SandboxSpec.model_validate({"name": "pr-7", "forks": [{"service": "agent"}]})
    plan = plan_sandbox(
        spec, uid="u", routing_key="k", catalog=CATALOG, router_host="0.0.0.0", workdir=None
    )
    assert plan.forks[0].env["SANDBOXD_SERVICE_AGENT_URL"] == "http://127.0.0.1:7300"
