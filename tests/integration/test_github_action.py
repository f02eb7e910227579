"""The GitHub Action as a workflow runs it: the real `action.yml` steps (tests/support/workflow.py)
installing the CLI from this checkout into a fresh venv and running `sandbox github sync`
against a real sandboxd with its router and real forks, and a fake GitHub
(tests/support/fake_github.py), with a scoped token, through a pull request's life:
opened → synchronize (a new head, a changed fork) → closed."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandboxd_cli.github import pr_name
from tests.conftest import fork_command
from tests.integration.test_tokens import token
from tests.integration.test_with_router import embedded
from tests.support import fake_github
from tests.support.fake_github import FakeGitHub
from tests.support.server import Sandboxd
from tests.support.workflow import Result, run_action

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
REPO = "acme/agents"
SHA1, SHA2 = "1" * 40, "2" * 40


@dataclass
class System:
    sandboxd: Sandboxd
    router: str
    token: str
    github: FakeGitHub
    runner_temp: Path


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("action")
    env = {"SANDBOXD_HEALTH_TIMEOUT": "4", "SANDBOXD_STOP_GRACE": "1"}
    with embedded(root, env=env) as (server, router), fake_github.running() as github:
        scoped = token(server, "ci-acme", f"github.repo={REPO}")
        temp = root / "runner-temp"
        temp.mkdir()
        yield System(server, router, scoped, github, temp)


def event(action: str, number: int, sha: str, updated: str, **head: Any) -> dict[str, Any]:
    """A `pull_request` payload; `repo=` the head's repository (None: a deleted fork's)."""
    full_name = head.get("repo", REPO)
    repo = {"full_name": full_name} if full_name is not None else None
    pull_request = {"number": number, "updated_at": updated, "state": "open",
                    "head": {"sha": sha, "repo": repo}, "base": {"repo": {"full_name": REPO}}}  # fmt: skip
    return {"action": action, "number": number, "pull_request": pull_request}


def spec(work: Path, greeting: str, command: list[str] | None = None) -> str:
    fork = {"service": "echo", "command": command or fork_command(), "env": {"GREETING": greeting}}
    work.mkdir(parents=True, exist_ok=True)
    (work / "sandbox.json").write_text(json.dumps({"ttl": "30m", "forks": [fork]}))
    return "sandbox.json"


def job(system: System, payload: dict[str, Any], work: Path, **inputs: str) -> Result:
    """One run of the action in a job for `payload`, as GitHub's runner would run it."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "event.json").write_text(json.dumps(payload))
    keep = ("PATH", "HOME", "LANG", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST",
            "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
            "SSL_CERT_FILE", "PIP_CERT", "PIP_CONFIG_FILE")  # fmt: skip
    env = {key: os.environ[key] for key in keep if key in os.environ}
    # python3 on the PATH is the runner's, not this test venv's: drop the venv from PATH.
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env |= {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(work / "event.json"),
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_SHA": "f" * 40,  # the merge commit GitHub makes, not the head
        "GITHUB_API_URL": system.github.url,
        "GITHUB_SERVER_URL": "https://github.test",
        "GITHUB_RUN_ID": "7",
        "GITHUB_WORKSPACE": str(work),
        "GITHUB_TOKEN": fake_github.TOKEN,  # what `${{ github.token }}` gives
        "RUNNER_TEMP": str(system.runner_temp),
    }
    defaults = {"url": system.sandboxd.url, "token": system.token}
    return run_action(ROOT, inputs={**defaults, **inputs}, env=env, work=work)


def greeting(system: System, baggage: str) -> tuple[str, str]:
    answer = httpx.get(system.router, headers={"baggage": baggage}, timeout=5)
    return answer.json()["env"].get("GREETING", ""), answer.headers["sandboxd-route"]


def marked(github: FakeGitHub, number: int) -> list[dict[str, Any]]:
    return [c for c in github.pr_comments(number) if "<!-- sandboxd:comment" in c["body"]]


def sandbox(system: System, name: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {system.sandboxd.token}"}
    return httpx.get(f"{system.sandboxd.url}/v1/sandboxes/{name}", headers=headers, timeout=5)


@pytest.fixture(scope="module")
def installed(system: System, tmp_path_factory: pytest.TempPathFactory) -> System:
    """The CLI installed once into the module's RUNNER_TEMP, by a `down` of a PR that never had
    a sandbox: nothing to delete, no comment to edit, and not an error."""
    work = tmp_path_factory.mktemp("job-install")
    result = job(system, event("closed", 1, SHA1, "2026-12-06T09:00:00Z"), work)
    assert result.ok, result.log
    assert result.outputs["name"] == pr_name(REPO, 1)
    assert marked(system.github, 1) == []
    return system


def test_a_pull_requests_life(installed: System, tmp_path: Path) -> None:
    system, github, number = installed, installed.github, 42
    name = pr_name(REPO, number)

    # opened: the sandbox is created and Ready, one comment, one deployment
    opened = event("opened", number, SHA1, "2026-12-06T10:00:00Z")
    first = job(system, opened, tmp_path / "opened", spec=spec(tmp_path / "opened", "v1"))
    assert first.ok, first.log
    out = first.outputs
    assert out["name"] == name
    assert out["baggage"] == f"sandbox={out['routing-key']}"
    assert out["expires-at"] and out["page-url"].startswith(f"{system.sandboxd.url}/s/{name}?")
    page = httpx.get(out["page-url"], follow_redirects=True, timeout=10)  # the link works
    assert page.status_code == 200 and name in page.text and out["routing-key"] in page.text
    assert greeting(system, out["baggage"]) == ("v1", f"sandbox={name}")
    comments = marked(github, number)
    assert [str(c["id"]) for c in comments] == [out["comment-id"]]
    body = comments[0]["body"]
    assert "is Ready" in body and SHA1[:7] in body and out["routing-key"] in body
    assert out["page-url"] in body
    preview = sandbox(system, name).json()["links"]["preview:echo"]
    assert f"- `echo`: {preview}" in body
    assert f"baggage: {out['baggage']}" in body and f"curl -H 'baggage: {out['baggage']}'" in body
    assert out["routing-key"] in first.summary and name in first.summary
    [deployment] = github.deployments.values()
    assert deployment["ref"] == SHA1 and deployment["environment"] == f"sandboxd/{name}"
    assert deployment["required_contexts"] == [] and deployment["transient_environment"] is True
    assert [s["state"] for s in github.statuses[deployment["id"]]] == ["success"]
    assert github.statuses[deployment["id"]][0]["environment_url"] == out["page-url"]
    labels = sandbox(system, name).json()["labels"]
    assert labels == {"github.repo": REPO, "github.pr": "42", "github.sha": SHA1}

    # synchronize: a new head with a changed fork: the same comment, the same key, v2 serving
    pushed = event("synchronize", number, SHA2, "2026-12-06T10:05:00Z")
    second = job(system, pushed, tmp_path / "pushed", spec=spec(tmp_path / "pushed", "v2"))
    assert second.ok, second.log
    assert second.outputs["routing-key"] == out["routing-key"]
    assert second.outputs["comment-id"] == out["comment-id"]
    assert greeting(system, out["baggage"]) == ("v2", f"sandbox={name}")
    [comment] = marked(github, number)
    assert SHA2[:7] in comment["body"] and SHA1[:7] not in comment["body"]
    assert sandbox(system, name).json()["labels"]["github.sha"] == SHA2
    first_deployment, second_deployment = sorted(github.deployments)
    # (made inactive by the action: GitHub's auto_inactive skips transient environments)
    assert github.statuses[first_deployment][-1]["state"] == "inactive"
    assert github.statuses[second_deployment][-1]["state"] == "success"

    # a re-run of the opened job (an older head, an older event) leaves everything alone
    again = job(system, opened, tmp_path / "rerun", spec=spec(tmp_path / "rerun", "v1"))
    assert again.ok, again.log
    assert any("newer event" in n.message for n in again.annotations("notice"))
    assert marked(github, number) == [comment]
    assert greeting(system, out["baggage"]) == ("v2", f"sandbox={name}")

    # closed: the sandbox is deleted, the comment says so, the deployments are inactive
    closed = event("closed", number, SHA2, "2026-12-06T10:09:00Z")
    third = job(system, closed, tmp_path / "closed")
    assert third.ok, third.log
    [comment] = marked(github, number)
    assert "was deleted" in comment["body"] and str(comment["id"]) == out["comment-id"]
    assert sandbox(system, name).json()["phase"] == "Deleted"
    assert greeting(system, out["baggage"]) == ("", "baseline")
    for did in github.deployments:
        assert github.statuses[did][-1]["state"] == "inactive"

    # reopened, then a re-run of the closed job: the older event leaves the sandbox alone
    reopened = event("reopened", number, SHA2, "2026-12-06T10:12:00Z")
    fourth = job(system, reopened, tmp_path / "reopened", spec=spec(tmp_path / "reopened", "v3"))
    assert fourth.ok, fourth.log
    assert greeting(system, fourth.outputs["baggage"]) == ("v3", f"sandbox={name}")
    late = job(system, closed, tmp_path / "closed-again")
    assert late.ok, late.log
    assert any("newer event" in n.message for n in late.annotations("notice"))
    assert sandbox(system, name).json()["phase"] == "Ready"
    assert "is Ready" in marked(github, number)[0]["body"]
    final = job(system, event("closed", number, SHA2, "2026-12-06T10:15:00Z"), tmp_path / "end")
    assert final.ok, final.log
    assert sandbox(system, name).json()["phase"] == "Deleted"

    # the scoped token never shows in the job's log; it was masked before anything else
    for result in (first, second, again, third, fourth, late, final):
        assert system.token not in result.log
        assert result.raw_stdout.startswith(f"::add-mask::{system.token}\n")


def test_the_marker_is_found_past_150_comments(installed: System, tmp_path: Path) -> None:
    system, github, number = installed, installed.github, 43
    for i in range(150):
        github.add_comment(number, f"review remark {i}")
    # a stranger's comment that ends like ours, from a far future: not the sandbox's
    forged = f"<!-- sandboxd:comment sandbox={pr_name(REPO, number)} head={'f' * 40} updated=9999-12-31T00:00:00Z -->"
    github.add_comment(number, forged, login="stranger")
    opened = event("opened", number, SHA1, "2026-12-06T11:00:00Z")
    first = job(system, opened, tmp_path / "a", spec=spec(tmp_path / "a", "v1"), comment="true")
    assert first.ok, first.log
    calls = len(github.seen)
    pushed = event("synchronize", number, SHA2, "2026-12-06T11:01:00Z")
    second = job(system, pushed, tmp_path / "b", spec=spec(tmp_path / "b", "v2"))
    assert second.ok, second.log
    during = github.seen[calls:]
    assert any("page=2" in target for method, target, _ in during if method == "GET")
    assert not any(m == "POST" and "/comments" in t for m, t, _ in during)
    ours = [c for c in marked(github, number) if c["user"]["login"] != "stranger"]
    assert [str(c["id"]) for c in ours] == [first.outputs["comment-id"]]
    assert second.outputs["comment-id"] == first.outputs["comment-id"]
    assert greeting(system, second.outputs["baggage"])[0] == "v2"  # not frozen by the forgery
    assert job(system, event("closed", number, SHA2, "2026-12-06T11:02:00Z"), tmp_path / "c").ok


def test_two_racing_runs_leave_one_comment(installed: System, tmp_path: Path) -> None:
    system, github, number = installed, installed.github, 44
    # Both runs list the comments before either has created one: both create.
    github.hold("GET", rf"/issues/{number}/comments$", parties=2)
    opened = event("opened", number, SHA1, "2026-12-06T12:00:00Z")
    results: dict[str, Result] = {}

    def run(key: str) -> None:
        work = tmp_path / key
        results[key] = job(system, opened, work, spec=spec(work, "v1"))

    threads = [threading.Thread(target=run, args=(key,)) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.ok for r in results.values()), [r.log for r in results.values()]
    posts = [t for m, t, _ in github.seen if m == "POST" and f"/issues/{number}/comments" in t]
    assert len(posts) == 2  # the race happened
    [kept] = marked(github, number)
    assert kept["id"] == min(int(r.outputs["comment-id"]) for r in results.values())
    assert job(system, event("closed", number, SHA1, "2026-12-06T12:01:00Z"), tmp_path / "c").ok


@pytest.mark.parametrize(
    ("number", "method", "path", "permission"),
    [
        (45, "GET", r"/issues/45/comments$", "pull_requests=read"),
        (48, "POST", r"/issues/48/comments$", "pull_requests=write"),
        (49, "POST", r"/deployments$", "deployments=write"),
    ],
    ids=["list-comments", "comment", "deploy"],
)
def test_what_github_refuses_is_a_warning(
    installed: System, tmp_path: Path, number: int, method: str, path: str, permission: str
) -> None:
    system, github = installed, installed.github
    github.refuse(method, path, 403, headers={"x-accepted-github-permissions": permission},
                  message="Resource not accessible by integration")  # fmt: skip
    opened = event("opened", number, SHA1, "2026-12-06T13:00:00Z")
    result = job(system, opened, tmp_path / "a", spec=spec(tmp_path / "a", "v1"))
    assert result.ok, result.log
    [warning] = result.annotations("warning")
    assert permission in warning.message and "Resource not accessible" in warning.message
    assert greeting(system, result.outputs["baggage"])[0] == "v1"
    assert sandbox(system, pr_name(REPO, number)).json()["phase"] == "Ready"
    if path.endswith("comments$"):
        assert result.outputs["comment-id"] == "" and marked(github, number) == []
    else:
        assert str(marked(github, number)[0]["id"]) == result.outputs["comment-id"]
    assert job(system, event("closed", number, SHA1, "2026-12-06T13:01:00Z"), tmp_path / "b").ok


@pytest.mark.parametrize("head_repo", ["stranger/agents", None], ids=["fork", "deleted-fork"])
def test_a_forks_pull_request_gets_a_notice(
    installed: System, tmp_path: Path, head_repo: str | None
) -> None:
    system, github, number = installed, installed.github, 46
    calls = len(github.seen)
    opened = event("opened", number, SHA1, "2026-12-06T14:00:00Z", repo=head_repo)
    result = job(system, opened, tmp_path / "a", spec=spec(tmp_path / "a", "v1"), token="")
    assert result.ok, result.log
    [notice] = result.annotations("notice")
    assert "fork" in notice.message and not result.annotations("error")
    assert sandbox(system, pr_name(REPO, number)).status_code == 404
    assert github.seen[calls:] == []


def test_a_failed_fork_is_an_error_with_its_log(installed: System, tmp_path: Path) -> None:
    system, github, number = installed, installed.github, 47
    crash = [
        sys.executable,
        "-c",
        "import sys; print('boom: DATABASE_URL is not set'); sys.exit(3)",
    ]
    opened = event("opened", number, SHA1, "2026-12-06T15:00:00Z")
    work = tmp_path / "a"
    result = job(system, opened, work, spec=spec(work, "v1", crash), timeout="60")
    assert not result.ok
    name = pr_name(REPO, number)
    [error] = result.annotations("error")
    assert error.properties["title"] == f"sandbox {name}: fork echo"
    sandbox_now = sandbox(system, name).json()
    assert sandbox_now["phase"] == "Failed"
    assert error.message.startswith(
        f"sandbox {name} is Failed ({sandbox_now['reason']}); fork echo is Exited: "
    )
    assert "boom: DATABASE_URL is not set" in error.message
    [comment] = marked(github, number)
    assert "is Failed" in comment["body"]
    failed = [d for d in github.deployments.values() if d["environment"] == f"sandboxd/{name}"]
    assert [s["state"] for s in github.statuses[failed[0]["id"]]] == ["failure"]
    assert job(system, event("closed", number, SHA1, "2026-12-06T15:01:00Z"), tmp_path / "b").ok
