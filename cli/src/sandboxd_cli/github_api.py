"""GitHub's REST API, as much of it as a pull request's sandbox needs: the PR's comments (every
page) and deployments with their statuses.

- `GITHUB_API_URL` (GitHub Enterprise: `https://HOST/api/v3`) and `GITHUB_REPOSITORY` come from
  the job's environment, as Actions sets them.
- Lists follow the `Link: <…>; rel="next"` header until it stops, 100 items a page.
- A 5xx, a 429 and a secondary rate limit (a 403 with `Retry-After`, or with
  `x-ratelimit-remaining: 0`) are retried after the wait GitHub names (`Retry-After` seconds, or
  until `x-ratelimit-reset`), capped at `MAX_WAIT`, at most `RETRIES` times.
- Any other 403 or 404 says which permission the job's token lacks, from GitHub's
  `x-accepted-github-permissions` header when it sends one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandboxd_cli.errors import BadInput, CliError

DEFAULT_API = "https://api.github.com"
RETRIES = 3
MAX_WAIT = 60.0
PAGE = 100
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
Json = dict[str, Any]


class GitHubError(CliError):
    """GitHub refused a call, or could not be reached; `status` is its answer's (0: none)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class GitHub:
    """One repository's side of the API, with the job's token."""

    repository: str
    token: str
    api_url: str = DEFAULT_API
    sleep: Callable[[float], None] = time.sleep
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        if self.repository.count("/") != 1:
            raise BadInput(f"GITHUB_REPOSITORY {self.repository!r} is not owner/name")
        self.client = httpx.Client(
            base_url=self.api_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "sandboxd-cli",
            },
            timeout=30,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, token: str) -> GitHub:
        repository = env.get("GITHUB_REPOSITORY", "")
        return cls(repository, token, env.get("GITHUB_API_URL") or DEFAULT_API)

    def close(self) -> None:
        self.client.close()

    # the pull request's comments ---------------------------------------------------------
    def comments(self, number: int) -> Iterator[Json]:
        """Every comment of issue or PR `number`, oldest first."""
        return self._pages(f"{self._repo}/issues/{number}/comments")

    def create_comment(self, number: int, body: str) -> Json:
        return self._json("POST", f"{self._repo}/issues/{number}/comments", {"body": body})

    def update_comment(self, comment_id: int, body: str) -> Json:
        return self._json("PATCH", f"{self._repo}/issues/comments/{comment_id}", {"body": body})

    def delete_comment(self, comment_id: int) -> None:
        self._call("DELETE", f"{self._repo}/issues/comments/{comment_id}")

    # deployments --------------------------------------------------------------------------
    def create_deployment(self, *, sha: str, environment: str, description: str) -> Json:
        body = {
            "ref": sha,
            "environment": environment,
            "description": description[:140],
            "required_contexts": [],  # (else refused while the PR's checks run)
            "auto_merge": False,
            "transient_environment": True,
            "production_environment": False,
        }
        return self._json("POST", f"{self._repo}/deployments", body)

    def deployments(self, environment: str) -> Iterator[Json]:
        return self._pages(f"{self._repo}/deployments", {"environment": environment})

    def deployment_status(
        self,
        deployment_id: int,
        *,
        state: str,
        environment_url: str | None = None,
        log_url: str | None = None,
        auto_inactive: bool = False,
    ) -> Json:
        """`auto_inactive`: a success makes the environment's earlier deployments inactive."""
        body: Json = {"state": state, "auto_inactive": auto_inactive}
        if environment_url is not None:
            body["environment_url"] = environment_url
        if log_url is not None:
            body["log_url"] = log_url
        return self._json("POST", f"{self._repo}/deployments/{deployment_id}/statuses", body)

    # the transport ------------------------------------------------------------------------
    @property
    def _repo(self) -> str:
        return f"/repos/{self.repository}"

    def _pages(self, path: str, params: Mapping[str, str] | None = None) -> Iterator[Json]:
        url: str | None = path
        query: dict[str, str | int] | None = {**(params or {}), "per_page": PAGE}
        while url is not None:
            response = self._call("GET", url, params=query)
            items = response.json()
            if not isinstance(items, list):
                raise GitHubError(f"GitHub answered GET {path} with no list", status=200)
            yield from (item for item in items if isinstance(item, dict))
            found = _NEXT.search(response.headers.get("link", ""))
            url, query = (found.group(1), None) if found else (None, None)

    def _json(self, method: str, path: str, body: Json) -> Json:
        answer = self._call(method, path, json=body).json()
        if not isinstance(answer, dict):
            raise GitHubError(f"GitHub answered {method} {path} with no object", status=200)
        return answer

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(RETRIES + 1):
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.HTTPError as e:
                if attempt == RETRIES:
                    raise GitHubError(f"cannot reach GitHub at {self.api_url}: {e}") from e
                self.sleep(2.0**attempt)
                continue
            wait = _retry_after(response, attempt)
            if wait is None or attempt == RETRIES:
                break
            self.sleep(wait)
        if response.is_success:
            return response
        raise GitHubError(_refusal(method, url, response), status=response.status_code)


def _retry_after(response: httpx.Response, attempt: int) -> float | None:
    """Seconds to wait before trying again, or None when the answer is final."""
    status, headers = response.status_code, response.headers
    limited = status == 429 or (
        status == 403 and ("retry-after" in headers or headers.get("x-ratelimit-remaining") == "0")
    )
    if not limited and status < 500:
        return None
    if (after := headers.get("retry-after", "")).isdigit():
        return min(float(after), MAX_WAIT)
    if limited and (reset := headers.get("x-ratelimit-reset", "")).isdigit():
        return min(max(0.0, float(reset) - time.time()), MAX_WAIT)
    return min(2.0**attempt, MAX_WAIT)


def _refusal(method: str, url: str, response: httpx.Response) -> str:
    """One line: what GitHub refused, why, and for a 403/404 the permission to grant."""
    path = httpx.URL(url).path
    try:
        said = str(response.json().get("message", ""))[:200]
    except (ValueError, AttributeError):
        said = response.text[:200]
    line = f"GitHub refused {method} {path} ({response.status_code}: {said or 'no message'})"
    if response.status_code == 403:
        # `a=write, b=read; c=write`: `;` separates alternatives, `,` joins a set's members.
        wanted = response.headers.get("x-accepted-github-permissions", "")
        options = [" and ".join(p.strip() for p in o.split(",")) for o in wanted.split(";")]
        options = [o for o in options if o]
        needs = f"it needs {' or '.join(options)}" if options else "it may lack a permission"
        line += (
            f"; {needs} (the workflow's `permissions:` — pull-requests: write for the comment, "
            "deployments: write for the deployment)"
        )
    elif response.status_code == 404:
        line += "; it does not exist, or the token cannot see it"
    return line
