"""Defaults for `sandbox up` inside a GitHub Actions job, so a workflow step needs no flags.

In a job (`GITHUB_ACTIONS=true`) the sandbox is named `pr-<number>` and labelled with the
repository, the PR number and the commit, which is what `sandbox list --label github.pr=42` and
the PR-close cleanup select on. The PR number comes from the event payload at
`GITHUB_EVENT_PATH`: `.pull_request.number` (pull_request events), else `.number`. A job that is
not about a pull request (a push) gets the labels it can and no default name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxd_cli.errors import BadInput

REPO_LABEL = "github.repo"
PR_LABEL = "github.pr"
SHA_LABEL = "github.sha"


@dataclass(frozen=True)
class Defaults:
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def in_actions(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS", "").lower() == "true"


def pr_number(event: Mapping[str, Any]) -> int | None:
    """The pull request's number in an event payload, or None."""
    pull_request = event.get("pull_request")
    candidates = [pull_request.get("number") if isinstance(pull_request, dict) else None]
    candidates.append(event.get("number"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def load_event(path: Path) -> dict[str, Any]:
    """The event payload; a file that is named but unreadable is an error, not a silent default."""
    try:
        event = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BadInput(f"cannot read GITHUB_EVENT_PATH {path}: {e.strerror}") from e
    except (ValueError, RecursionError) as e:  # RecursionError: nested past the parser
        raise BadInput(f"GITHUB_EVENT_PATH {path} is not valid JSON: {e}") from e
    return event if isinstance(event, dict) else {}


def defaults(env: Mapping[str, str]) -> Defaults:
    """The name and labels a GitHub Actions job implies; nothing outside Actions."""
    if not in_actions(env):
        return Defaults()
    event_path = env.get("GITHUB_EVENT_PATH")
    number = pr_number(load_event(Path(event_path))) if event_path else None
    labels = {
        REPO_LABEL: env.get("GITHUB_REPOSITORY", ""),
        PR_LABEL: str(number) if number is not None else "",
        SHA_LABEL: env.get("GITHUB_SHA", ""),
    }
    return Defaults(
        name=f"pr-{number}" if number is not None else None,
        labels={key: value for key, value in labels.items() if value},
    )
