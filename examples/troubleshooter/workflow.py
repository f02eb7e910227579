"""The troubleshooting workflow: list pods → pick the failing one → describe it → read its
logs → one diagnosis call. The agent owns this control flow; only the last step is a "model".

The prompt version decides how the agent reads `describe_pod`: v1 knows the v1 schema
(`containerStatuses[].lastState.terminated`); v2 knows v2's `lastTermination` and still accepts
`lastState`. A field the workflow relies on but the tool did not return is a `MissingField`
naming the service, the tool and the field (a `SchemaMismatch` for the last run's field) — the
agent stops there instead of diagnosing from a guess or a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diagnoser import Diagnoser, Findings
from failures import ToolCallError
from tools import ToolResult, ToolServer

HEALTHY = {"Running", "Completed", "Succeeded"}
LAST_RUN_FIELDS = {"v1": ("lastState",), "v2": ("lastTermination", "lastState")}
"""Per prompt version, where a container status keeps its last run, in order of preference."""


class WorkflowError(Exception):
    """The workflow cannot reach a diagnosis from what the tools returned."""


class MissingField(WorkflowError):
    """A field the workflow reads is missing from a tool's result, or is not what it reads."""

    def __init__(
        self,
        *,
        service: str,
        tool: str,
        name: str,
        at: str = "",
        present: list[str],
        detail: str = "",
        consequence: str = "the agent will not diagnose without it",
    ) -> None:
        where = f"'{name}' in {at}" if at else f"'{name}'"
        what = f"field {where} {detail}" if detail else f"no field {where}"
        self.service, self.tool, self.missing = service, tool, name
        self.problem = (
            f"the result has {what} (fields present: {', '.join(present) or 'none'}); "
            + consequence
        )
        super().__init__(f"{service} {tool}: {self.problem}")


@dataclass
class Evidence:
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: ToolResult, facts: dict[str, Any]) -> None:
        item: dict[str, Any] = {"service": result.service, "tool": result.tool, "facts": facts}
        if result.retries:
            item["retries"] = result.retries
        if result.warnings:
            item["warnings"] = result.warnings
        self.items.append(item)

    def failed(self, error: ToolCallError | MissingField) -> None:
        """The step that failed, with its retries: what the answer's `error` is about."""
        item: dict[str, Any] = {"service": error.service, "tool": error.tool}
        item["error"] = error.problem
        if isinstance(error, ToolCallError) and error.retries:
            item["retries"] = error.retries
        self.items.append(item)


@dataclass
class Outcome:
    pod: str | None
    diagnosis: str | None


def require(
    result: ToolResult, name: str, kind: type, *, within: dict[str, Any] | None = None, at: str = ""
) -> Any:
    """The field `name` of `within` (default: the result, `at` says where), of type `kind`."""
    data = result.data if within is None else within
    fail = {"service": result.service, "tool": result.tool, "name": name, "at": at}
    if name not in data:
        raise MissingField(**fail, present=sorted(data))
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        detail = f"of type {type(value).__name__}, not {kind.__name__}"
        raise MissingField(**fail, present=sorted(data), detail=detail)
    return value


def items(
    result: ToolResult, name: str, fields: dict[str, type], *, empty_ok: bool
) -> list[dict[str, Any]]:
    """The list `name` of objects that each have `fields` of their types."""
    found: list[dict[str, Any]] = require(result, name, list)
    if not found and not empty_ok:
        raise MissingField(
            service=result.service,
            tool=result.tool,
            name=name,
            present=sorted(result.data),
            detail="that is empty",
        )
    for index, item in enumerate(found):
        at = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise MissingField(
                service=result.service,
                tool=result.tool,
                name=at,
                present=sorted(result.data),
                detail=f"of type {type(item).__name__}, not dict",
            )
        for field_name, kind in fields.items():
            require(result, field_name, kind, within=item, at=at)
    return found


POD_FIELDS = {"name": str, "status": str, "restarts": int}
CONTAINER_FIELDS = {"name": str, "ready": bool, "restartCount": int, "state": dict}
TERMINATION_FIELDS = {"exitCode": int, "reason": str}


def pick_failing(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod most in trouble: an unhealthy status first, then the most restarts."""
    failing = [p for p in pods if p["status"] not in HEALTHY]
    if not failing:
        return None
    return max(failing, key=lambda p: int(p["restarts"]))


def failing_container(described: ToolResult) -> tuple[str, dict[str, Any]]:
    """(where it is, the container status) of the first container that is not ready."""
    statuses = items(described, "containerStatuses", CONTAINER_FIELDS, empty_ok=False)
    for index, status in enumerate(statuses):
        if not status["ready"]:
            return f"containerStatuses[{index}]", status
    return "containerStatuses[0]", statuses[0]


def last_run(
    described: ToolResult, status: dict[str, Any], *, at: str, prompt_version: str
) -> dict[str, Any]:
    """The container's last termination, read the way this prompt version knows to."""
    names = LAST_RUN_FIELDS[prompt_version]
    for name in names:
        if name in status:
            last = require(described, name, dict, within=status, at=at)
            terminated = last.get("terminated", last)
            if not isinstance(terminated, dict):
                return {}
            for field_name, kind in TERMINATION_FIELDS.items() if terminated else ():
                require(described, field_name, kind, within=terminated, at=f"{at}.{name}")
            return dict(terminated)
    raise MissingField(
        service=described.service,
        tool=described.tool,
        name=names[0],
        at=at,
        present=sorted(status),
        consequence=f"this prompt version reads {at}.{names[0]}, so the tool's schema changed "
        "and the agent will not diagnose without it",
    )


def waiting_reason(status: dict[str, Any]) -> str:
    state = status["state"]
    for kind in ("waiting", "terminated"):
        if isinstance(state.get(kind), dict):
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
    pods = items(listing, "pods", POD_FIELDS, empty_ok=True)
    failing = pick_failing(pods)
    summary = failing and {k: failing[k] for k in ("name", "status")}
    evidence.add(listing, {"pods": len(pods), "failing": summary})
    if failing is None:
        return Outcome(pod=None, diagnosis=f"No failing pod in namespace {namespace}.")
    name = failing["name"]

    described = await cluster.call("describe_pod", {"namespace": namespace, "name": name})
    at, status = failing_container(described)
    last = last_run(described, status, at=at, prompt_version=prompt_version)
    events = described.data.get("events", [])
    evidence.add(
        described,
        {
            "phase": described.data.get("phase"),
            "container": status["name"],
            "state": waiting_reason(status),
            "restartCount": status["restartCount"],
            "exitCode": last.get("exitCode"),
            "reason": last.get("reason"),
            "warnings": [
                e.get("reason")
                for e in events
                if isinstance(e, dict) and e.get("type") == "Warning"
            ]
            if isinstance(events, list)
            else [],
        },
    )

    logged = await logs.call("get_logs", {"namespace": namespace, "pod": name, "tail": 50})
    lines = [str(line) for line in require(logged, "lines", list)]
    errors = [line for line in lines if " ERROR " in line or " FATAL " in line]
    evidence.add(logged, {"lines": len(lines), "errors": errors})

    findings = Findings(
        pod=name,
        status=waiting_reason(status),
        container=status["name"],
        restart_count=status["restartCount"],
        exit_code=last.get("exitCode"),
        termination_reason=last.get("reason"),
        log_errors=errors,
    )
    return Outcome(pod=name, diagnosis=await diagnoser.diagnose(findings))
