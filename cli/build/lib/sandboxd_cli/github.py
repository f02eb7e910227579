"""Defaults for `sandbox up` inside a GitHub Actions job, so a workflow step needs no flags.

In a job (`GITHUB_ACTIONS=true`) the sandbox is named after the repository and the PR
(`pr_name`) and labelled with the repository, the PR number and the commit, which is what
`sandbox list --label github.pr=42` and the PR-close cleanup select on. The PR number comes from
the event payload at `GITHUB_EVENT_PATH`: `.pull_request.number` (pull_request events), else
`.number`; the commit is the PR's head, `.pull_request.head.sha` (on `pull_request`,
`GITHUB_SHA` is a merge commit GitHub made, which no one pushed), else `GITHUB_SHA`. A job that
is not about a pull request (a push) gets the labels it can and no default name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxd_cli.errors import BadInput

REPO_LABEL = "github.repo"
PR_LABEL = "github.pr"
SHA_LABEL = "github.sha"
NAME_LIMIT = 40  # a sandbox name's length (a DNS label short enough for `<service>-<name>`)
HASH_DIGITS = 8
_NOT_NAME = re.compile(r"[^a-z0-9]+")


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


def pr_name(repository: str, number: int) -> str:
    """`<repo>-pr-<number>-<hash>`: a DNS label of at most `NAME_LIMIT` characters, unique per
    repository and PR. The hash is of the whole `owner/repo` (GitHub compares names without
    case), always there: the repository's name alone is neither unique across owners
    (`acme/shop`, `other/shop`) nor once sanitised (`my.repo`, `my_repo`), and cut when long."""
    digest = hashlib.sha256(repository.lower().encode()).hexdigest()[:HASH_DIGITS]
    tail = f"-pr-{number}-{digest}"
    repo = _NOT_NAME.sub("-", repository.rpartition("/")[2].lower()).strip("-")
    repo = repo[: NAME_LIMIT - len(tail)].rstrip("-") or "repo"
    return f"{repo}{tail}"[-NAME_LIMIT:].lstrip("-")


def head_sha(event: Mapping[str, Any]) -> str | None:
    """The PR's head commit in an event payload, or None."""
    pull_request = event.get("pull_request")
    head = pull_request.get("head") if isinstance(pull_request, dict) else None
    sha = head.get("sha") if isinstance(head, dict) else None
    return sha if isinstance(sha, str) and sha else None


def defaults(env: Mapping[str, str]) -> Defaults:
    """The name and labels a GitHub Actions job implies; nothing outside Actions."""
    if not in_actions(env):
        return Defaults()
    event_path = env.get("GITHUB_EVENT_PATH")
    event = load_event(Path(event_path)) if event_path else {}
    number = pr_number(event)
    repository = env.get("GITHUB_REPOSITORY", "")
    labels = {
        REPO_LABEL: repository,
        PR_LABEL: str(number) if number is not None else "",
        SHA_LABEL: head_sha(event) or env.get("GITHUB_SHA", ""),
    }
    return Defaults(
        name=pr_name(repository, number) if number is not None and repository else None,
        labels={key: value for key, value in labels.items() if value},
    )
