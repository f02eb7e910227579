"""The model call at the workflow's one leverage point, behind a small interface.

The agent owns the control flow (which tools, in which order, what counts as evidence); the
model only turns the gathered `Findings` into a diagnosis. `RuleDiagnoser`, the default, is
deterministic so that tests and demos need no model. `ChatDiagnoser` asks any OpenAI-compatible
`/chat/completions` endpoint instead:

    AGENT_MODEL_URL=http://127.0.0.1:11434/v1  AGENT_MODEL=llama3.1  [AGENT_MODEL_API_KEY=…]
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Protocol

import httpx2

RULES_VERSION = "rules-1"


@dataclass(frozen=True)
class Findings:
    """What the workflow established about the failing pod, in the agent's own terms."""

    pod: str
    status: str
    container: str
    restart_count: int
    exit_code: int | None
    termination_reason: str | None
    log_errors: list[str]


class Diagnoser(Protocol):
    version: str
    """Reported as the agent's model version."""

    async def diagnose(self, findings: Findings) -> str: ...


_MISSING_ENV = re.compile(r"environment variable (\w+) is not set", re.IGNORECASE)
_REFUSED = re.compile(r"connection refused|could not connect|ECONNREFUSED", re.IGNORECASE)


class RuleDiagnoser:
    """Reads the cause off the log errors and the last termination; never guesses beyond them."""

    version = RULES_VERSION

    async def diagnose(self, findings: Findings) -> str:
        f = findings
        crash = (
            f"Container {f.container} of pod {f.pod} is in {f.status} after "
            f"{f.restart_count} restarts; its last run exited with code {f.exit_code} "
            f"({f.termination_reason})"
        )
        logs = " ".join(f.log_errors)
        if missing := _MISSING_ENV.search(logs):
            var = missing.group(1)
            return (
                f"{crash} because the required environment variable {var} is not set. "
                f"Set {var} in the Deployment (for example from a Secret) and roll it out."
            )
        if _REFUSED.search(logs):
            return f"{crash} because it cannot connect to a dependency: {f.log_errors[-1]}"
        if f.exit_code == 137 or f.termination_reason == "OOMKilled":
            return f"{crash}: it was killed for exceeding its memory limit; raise the limit."
        if f.log_errors:
            return f"{crash}; the last error it logged: {f.log_errors[-1]}"
        return f"{crash}; its logs show no error, so the cause is not in the evidence."


class ChatDiagnoser:
    """One call to an OpenAI-compatible chat endpoint; the findings are the whole prompt."""

    def __init__(self, *, url: str, model: str, api_key: str | None, timeout: float = 60) -> None:
        self.version = model
        self._url = url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout

    async def diagnose(self, findings: Findings) -> str:
        prompt = (
            "You diagnose a failing Kubernetes pod. Use only these findings; if they do not "
            "show the cause, say so. Answer in two sentences: the cause, then the fix.\n"
            + json.dumps(asdict(findings), indent=2)
        )
        body = {"model": self.version, "messages": [{"role": "user", "content": prompt}]}
        async with httpx2.AsyncClient(timeout=self._timeout) as http:
            response = await http.post(self._url, json=body, headers=self._headers)
            response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"]).strip()


def diagnoser_from_env() -> Diagnoser:
    url = os.environ.get("AGENT_MODEL_URL")
    if not url:
        return RuleDiagnoser()
    model = os.environ.get("AGENT_MODEL", "gpt-4o-mini")
    return ChatDiagnoser(url=url, model=model, api_key=os.environ.get("AGENT_MODEL_API_KEY"))
