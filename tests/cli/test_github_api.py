"""The CLI's GitHub client (`sandboxd_cli.github_api`) against the fake GitHub on loopback:
every page of a PR's comments, comments and deployments made and changed, retries on what
GitHub asks to retry, and a refusal that names the permission to grant."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandboxd_cli.errors import BadInput
from sandboxd_cli.github_api import GitHub, GitHubError
from tests.support.fake_github import TOKEN, FakeGitHub, running

REPO = "acme/agents"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with running() as server:
        yield server


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def github(fake: FakeGitHub, waits: list[float]) -> Iterator[GitHub]:
    env = {"GITHUB_API_URL": fake.url, "GITHUB_REPOSITORY": REPO}
    client = GitHub.from_env(env, token=TOKEN)
    client.sleep = waits.append  # (the waits GitHub asked for, not slept)
    yield client
    client.close()


def test_every_page_of_a_prs_comments_is_read(fake: FakeGitHub, github: GitHub) -> None:
    for n in range(250):
        fake.add_comment(42, f"comment {n}")
    fake.add_comment(7, "another PR's")

    bodies = [c["body"] for c in github.comments(42)]

    assert bodies == [f"comment {n}" for n in range(250)]
    pages = [t for m, t, _ in fake.seen if m == "GET"]
    assert len(pages) == 3 and "per_page=100" in pages[0] and "page=3" in pages[2]


def test_comments_are_made_changed_and_deleted(fake: FakeGitHub, github: GitHub) -> None:
    made = github.create_comment(42, "<!-- sandboxd -->\nfirst")
    github.update_comment(made["id"], "<!-- sandboxd -->\nsecond")
    other = github.create_comment(42, "to delete")
    github.delete_comment(other["id"])

    assert [c["body"] for c in fake.pr_comments(42)] == ["<!-- sandboxd -->\nsecond"]


def test_a_deployment_and_its_statuses(fake: FakeGitHub, github: GitHub) -> None:
    made = github.create_deployment(sha="abc123", environment="sandbox/pr-42", description="x")
    github.deployment_status(made["id"], state="success", environment_url="https://s/pr-42")
    github.create_deployment(sha="def456", environment="elsewhere", description="y")

    listed = list(github.deployments("sandbox/pr-42"))

    assert [d["id"] for d in listed] == [made["id"]]
    assert fake.deployments[made["id"]]["required_contexts"] == []
    assert fake.deployments[made["id"]]["transient_environment"] is True
    assert fake.statuses[made["id"]] == [
        {"state": "success", "auto_inactive": False, "environment_url": "https://s/pr-42"}
    ]


def test_a_5xx_and_a_secondary_rate_limit_are_retried_after_the_wait_asked(
    fake: FakeGitHub, github: GitHub, waits: list[float]
) -> None:
    fake.refuse("POST", "/comments$", 502)
    fake.refuse("POST", "/comments$", 403, headers={"Retry-After": "7"},
                message="You have exceeded a secondary rate limit")  # fmt: skip

    made = github.create_comment(42, "hello")

    assert made["body"] == "hello" and len(fake.pr_comments(42)) == 1
    assert waits == [1.0, 7.0]


def test_a_refusal_names_the_missing_permission(fake: FakeGitHub, github: GitHub) -> None:
    fake.refuse("POST", "/comments$", 403, message="Resource not accessible by integration",
                headers={"x-accepted-github-permissions": "issues=write; pull_requests=write"})  # fmt: skip

    with pytest.raises(GitHubError) as refused:
        github.create_comment(42, "hello")

    assert refused.value.status == 403
    assert "Resource not accessible by integration" in refused.value.message
    assert "it needs issues=write or pull_requests=write" in refused.value.message
    assert fake.pr_comments(42) == []


def test_retries_stop_and_say_so(fake: FakeGitHub, github: GitHub, waits: list[float]) -> None:
    fake.refuse("GET", "/comments$", 503, times=10)

    with pytest.raises(GitHubError, match=r"\(503: refused\)"):
        list(github.comments(42))

    assert waits == [1.0, 2.0, 4.0]


def test_a_wrong_token_or_repository_is_a_clear_error(fake: FakeGitHub) -> None:
    client = GitHub.from_env({"GITHUB_API_URL": fake.url, "GITHUB_REPOSITORY": REPO}, token="x")
    with pytest.raises(GitHubError, match=r"\(401: Bad credentials\)"):
        list(client.comments(1))
    client.close()
    with pytest.raises(BadInput, match="not owner/name"):
        GitHub.from_env({"GITHUB_REPOSITORY": "nope"}, token="x")
