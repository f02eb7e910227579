"""The troubleshooting workflow: list pods → pick the failing one → describe it → read its
logs → one diagnosis call. The agent owns this control flow; only the last step is a "model".

The prompt version decides how the agent reads `describe_pod`: v1 knows the v1 schema
(`containerStatuses[].lastState.terminated`); v2 knows v2's `lastTermination` and still accepts
`lastState`. A field the prompt version relies on but the tool did not return is a
`SchemaMismatch` naming that field — the agent stops there instead of diagnosing from a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diagnoser import Diagnoser, Findings
from tools import ToolServer

HEALTHY = {"Running", "Completed", "Succeeded"}
LAST_RUN_FIELDS = {"v1": ("lastState",), "v2": ("lastTermination", "lastState")}
"""Per prompt version, where a container status keeps its last run, in order of preference."""


class WorkflowError(Exception):
    """The workflow cannot reach a diagnosis from what the tools returned."""


class SchemaMismatch(WorkflowError):
    """A field this prompt version reads is missing from a tool's result."""

    def __init__(self, *, tool: str, path: str, missing: str, present: list[str]) -> None:
        super().__init__(
            f"{tool} result has no field '{missing}' in {path} (fields present: "
            f"{', '.join(present)}); this prompt version reads {path}.{missing}, so the tool's "
            "schema changed and the agent will not diagnose without it"
        )
        self.missing = missing


@dataclass
class Evidence:
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, service: str, tool: str, facts: dict[str, Any]) -> None:
        self.items.append({"service": service, "tool": tool, "facts": facts})


@dataclass
class Outcome:
    pod: str | None
    diagnosis: str | None


def pick_failing(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod most in trouble: an unhealthy status first, then the most restarts."""
    failing = [p for p in pods if p.get("status") not in HEALTHY]
    if not failing:
        return None
    return max(failing, key=lambda p: int(p.get("restarts", 0)))


def last_run(status: dict[str, Any], *, prompt_version: str, index: int) -> dict[str, Any]:
    """The container's last termination, read the way this prompt version knows to."""
    names = LAST_RUN_FIELDS[prompt_version]
    for name in names:
        if name in status:
            last = status[name]
            return dict(last.get("terminated", last)) if isinstance(last, dict) else {}
    raise SchemaMismatch(
        tool="describe_pod",
        path=f"containerStatuses[{index}]",
        missing=names[0],
        present=sorted(status),
    )


def failing_container(pod: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    statuses = pod.get("containerStatuses")
    if not isinstance(statuses, list) or not statuses:
        present = ", ".join(sorted(pod))
        raise WorkflowError(
            f"describe_pod result has no field 'containerStatuses' (fields present: {present})"
        )
    for index, status in enumerate(statuses):
        if not status.get("ready", False):
            return index, status
    return 0, statuses[0]


def waiting_reason(status: dict[str, Any]) -> str:
    state = status.get("state", {})
    for kind in ("waiting", "terminated"):
        if kind in state:
            return str(state[kind].get("reason", kind))
    return "Running"


async def diagnose(
    namespace: str,
    *,
    cluster: ToolServer,
    logs: ToolServer,
    diagnoser: Diagnoser,
    prompt_version: str,
    evidence: Evidence,
) -> Outcome:
    listing = await cluster.call("list_pods", {"namespace": namespace})
    pods = listing.get("pods", [])
    failing = pick_failing(pods)
    evidence.add(
        cluster.service,
        "list_pods",
        {"pods": len(pods), "failing": failing and {k: failing.get(k) for k in ("name", "status")}},
    )
    if failing is None:
        return Outcome(pod=None, diagnosis=f"No failing pod in namespace {namespace}.")
    name = str(failing["name"])

    described = await cluster.call("describe_pod", {"namespace": namespace, "name": name})
    index, status = failing_container(described)
    last = last_run(status, prompt_version=prompt_version, index=index)
    evidence.add(
        cluster.service,
        "describe_pod",
        {
            "phase": described.get("phase"),
            "container": status.get("name"),
            "state": waiting_reason(status),
            "restartCount": status.get("restartCount"),
            "exitCode": last.get("exitCode"),
            "reason": last.get("reason"),
            "warnings": [
                e["reason"] for e in described.get("events", []) if e.get("type") == "Warning"
            ],
        },
    )

    logged = await logs.call("get_logs", {"namespace": namespace, "pod": name, "tail": 50})
    errors = [line for line in logged.get("lines", []) if " ERROR " in line or " FATAL " in line]
    evidence.add(
        logs.service, "get_logs", {"lines": len(logged.get("lines", [])), "errors": errors}
    )

    findings = Findings(
        pod=name,
        status=waiting_reason(status),
        container=str(status.get("name")),
        restart_count=int(status.get("restartCount", 0)),
        exit_code=last.get("exitCode"),
        termination_reason=last.get("reason"),
        log_errors=errors,
    )
    return Outcome(pod=name, diagnosis=await diagnoser.diagnose(findings))
