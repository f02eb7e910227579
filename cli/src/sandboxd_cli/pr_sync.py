"""One GitHub Actions run for a pull request's sandbox: `sandbox github sync`.

It reads the run from the event payload (`GITHUB_EVENT_PATH`) and the job's variables, then
brings three things in line with the PR:

- the sandbox: `up` applies the spec (created on the first run, updated in place on a push, so
  its routing key and links stay) and waits until it is Ready; `down` deletes it;
- the PR's sticky comment (`pr_comment`): created once, edited afterwards, deduplicated after a
  race, never overwritten by an older run;
- a GitHub deployment whose environment URL is the sandbox's page (the PR's "View deployment"
  button); `down` marks the environment's deployments inactive.

What GitHub refuses (a token without `pull-requests: write` or `deployments: write`) is a
warning: the sandbox is what the run is for. What the run produced goes to the step's outputs
and job summary; a failed sandbox is an error annotation with the fork's reason and log tail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from sandboxd_cli import github
from sandboxd_cli.actions import Job
from sandboxd_cli.client import Api, Json
from sandboxd_cli.errors import BadInput, CliError, NotFound
from sandboxd_cli.github_api import GitHub, GitHubError
from sandboxd_cli.pr_comment import (
    AUTHOR,
    Facts,
    Fork,
    Plan,
    Stamp,
    load_template,
    plan,
    render,
)
from sandboxd_cli.render import text
from sandboxd_cli.spec import Flags, build_spec
from sandboxd_cli.views import forks_of

LOG_LINES = 20
"""How much of a failed fork's log an error annotation quotes."""
Wait = Callable[[Api, Json, float], tuple[Json, CliError | None]]
WaitDeleted = Callable[[Api, str, float], tuple[Json | None, CliError | None]]


@dataclass(frozen=True)
class Run:
    """What the event payload and the job's variables say this run is."""

    command: str
    """`up` or `down`."""
    repository: str
    number: int
    head: str
    updated: str
    """The PR's `updated_at` as this run's event saw it: orders runs for different heads."""
    name: str
    server_url: str
    run_url: str
    from_fork: bool
    """The job gets no secrets: the PR's head lives in another repository (or in one since
    deleted: `head.repo` is null), or Dependabot opened it."""

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.name, self.head, self.updated)

    @property
    def environment(self) -> str:
        return f"sandboxd/{self.name}"

    @property
    def commit_url(self) -> str:
        return f"{self.server_url}/{self.repository}/commit/{self.head}"


def read_run(env: Mapping[str, str], event: Mapping[str, Any], command: str | None) -> Run:
    """The run, or a `BadInput` saying why this job cannot have a PR sandbox."""
    pull_request = event.get("pull_request")
    number = github.pr_number(event)
    head = github.head_sha(event)
    repository = env.get("GITHUB_REPOSITORY", "")
    if not isinstance(pull_request, dict) or number is None or head is None:
        kind = env.get("GITHUB_EVENT_NAME") or "this event"
        raise BadInput(
            f"sandbox github sync needs a pull_request event with the PR in its payload, not "
            f"{kind}: run it `on: pull_request` (types opened, synchronize, reopened, closed)"
        )
    if repository.count("/") != 1:
        raise BadInput(f"GITHUB_REPOSITORY {repository!r} is not owner/name")
    if command is None:
        command = "down" if event.get("action") == "closed" else "up"
    if command not in ("up", "down"):
        raise BadInput(f"command {command!r}: expected up or down")
    head_repo = _dig(pull_request, "head", "repo", "full_name")
    server = env.get("GITHUB_SERVER_URL") or "https://github.com"
    run_id = env.get("GITHUB_RUN_ID", "")
    return Run(
        command=command,
        repository=repository,
        number=number,
        head=head,
        updated=str(pull_request.get("updated_at") or ""),
        name=github.pr_name(repository, number),
        server_url=server.rstrip("/"),
        run_url=f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}" if run_id else "",
        from_fork=(
            not isinstance(head_repo, str)
            or head_repo.lower() != repository.lower()
            or env.get("GITHUB_ACTOR") == "dependabot[bot]"
        ),
    )


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


@dataclass
class Sync:
    """The run's collaborators; `hub` is None when the job gave no GitHub token."""

    run: Run
    api: Api
    hub: GitHub | None
    job: Job
    template: jinja2.Template | None
    """None: no comment (`comment: false`)."""
    author: str = AUTHOR
    """Whose comments are the action's (others may copy its marker)."""
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    left_alone: bool = False
    """Whether this run found a newer run's comment and changed nothing."""

    # up ----------------------------------------------------------------------------------
    def up(self, spec_base: Mapping[str, Any], *, timeout: float, wait: Wait) -> CliError | None:
        """Apply and wait; the comment, deployment, outputs and summary follow the outcome."""
        existing = self._comments()
        if existing is not None and existing.stale(self.run.stamp):
            self._leave_alone(existing)
            return None
        if spec_base.get("name") not in (None, self.run.name):
            self.job.warning(
                f"the spec's name {spec_base.get('name')!r} is ignored: a pull request's "
                f"sandbox is named after the repository and PR ({self.run.name})"
            )
        base = {key: value for key, value in spec_base.items() if key != "name"}
        spec = build_spec(base=base, flags=Flags(name=self.run.name), github=github.Defaults())
        # The PR's own labels win over a file's: a scoped token allows only its repository.
        spec["labels"] = {**spec.get("labels", {}), **self._labels()}
        sandbox = self.api.apply(spec)
        sandbox, error = wait(self.api, sandbox, timeout)
        facts = self._facts(sandbox, error)
        if error is not None:
            self._annotate_failure(sandbox, error)
        comment_id = self._post(facts, existing)
        self._deploy(facts, failed=error is not None)
        self._report(facts, comment_id)
        return error

    def _labels(self) -> dict[str, str]:
        return {
            github.REPO_LABEL: self.run.repository,
            github.PR_LABEL: str(self.run.number),
            github.SHA_LABEL: self.run.head,
        }

    def _leave_alone(self, existing: Plan) -> None:
        assert existing.keep is not None
        self.left_alone = True
        newer = existing.keep.stamp
        self.job.notice(
            f"a run for a newer event of this pull request (head {newer.head[:7]}, "
            f"{newer.updated}) already updated sandbox {self.run.name}: this run (head "
            f"{self.run.head[:7]}, {self.run.updated}) leaves the sandbox and its comment alone",
            title="sandboxd: older run",
        )
        try:
            sandbox = self.api.get(self.run.name)
        except NotFound:
            return
        facts = self._facts(sandbox, None)
        labels = sandbox.get("labels")
        head = labels.get(github.SHA_LABEL) if isinstance(labels, dict) else None
        self._report(replace(facts, head=str(head or newer.head)), existing.keep.id)

    def _facts(self, sandbox: Json, error: CliError | None) -> Facts:
        phase = text(sandbox.get("phase"))
        state = "Starting" if error is not None and phase not in ("Failed", "Ready") else phase
        catalog = {s.get("name"): s for s in self.api.services().get("items") or []}
        links = sandbox.get("links")
        links = links if isinstance(links, dict) else {}
        forks = []
        for fork in forks_of(sandbox):
            name = text(fork.get("service"))
            service = catalog.get(name) or {}
            url = service.get("routerUrl")
            forks.append(
                Fork(
                    service=name,
                    phase=text(fork.get("phase")),
                    message=str(fork.get("message") or ""),
                    protocol=str(service.get("protocol") or "http"),
                    url=f"{url.rstrip('/')}/" if isinstance(url, str) and url else "",
                    preview=str(links.get(f"preview:{name}") or ""),
                )
            )
        return Facts(
            name=self.run.name,
            state=state,
            head=self.run.head,
            commit_url=self.run.commit_url,
            reason=str(sandbox.get("reason") or ""),
            message=str(sandbox.get("message") or (error.message if error else "")),
            page_url=str(links.get("page") or links.get("self") or ""),
            routing_key=text(sandbox.get("routingKey")),
            baggage=text(sandbox.get("baggage")),
            expires_at=text(sandbox.get("expiresAt")),
            forks=tuple(forks),
            run_url=self.run.run_url,
        )

    def _annotate_failure(self, sandbox: Json, error: CliError) -> None:
        failing = [f for f in forks_of(sandbox) if f.get("phase") != "Ready"]
        if not failing:
            self.job.error(error.message, title=f"sandbox {self.run.name}")
        for fork in failing:
            service = text(fork.get("service"))
            why = str(fork.get("message") or sandbox.get("message") or error.message)
            state = f"{text(sandbox.get('phase'))} ({text(sandbox.get('reason'))})"
            lines = [
                f"sandbox {self.run.name} is {state}; fork {service} is "
                f"{text(fork.get('phase'))}: {why}"
            ]
            tail = self._log_tail(service)
            if tail:
                lines += [f"last lines of {service}'s log:", tail]
            self.job.error("\n".join(lines), title=f"sandbox {self.run.name}: fork {service}")

    def _log_tail(self, service: str) -> str:
        try:
            chunk = self.api.logs(self.run.name, service, tail=LOG_LINES)
        except CliError:
            return ""
        return chunk.data.decode("utf-8", "replace").rstrip("\n")

    # down --------------------------------------------------------------------------------
    def down(self, *, timeout: float, wait: WaitDeleted) -> CliError | None:
        """Delete and wait; the comment says so (or, past `timeout`, that it is still being
        deleted, and the error is returned)."""
        existing = self._comments()
        if existing is not None and existing.stale(self.run.stamp):
            self._leave_alone(existing)
            return None
        try:
            self.api.delete(self.run.name)
            sandbox, error = wait(self.api, self.run.name, timeout)
        except NotFound:
            sandbox, error = None, None
        if error is not None and sandbox is not None:
            facts = self._facts(sandbox, error)
        else:
            deleted = str(sandbox.get("deletedAt") or "") if sandbox else ""
            facts = Facts(
                name=self.run.name,
                state="Deleted",
                head=self.run.head,
                commit_url=self.run.commit_url,
                deleted_at=deleted or self.clock().isoformat(timespec="seconds"),
                run_url=self.run.run_url,
            )
        comment_id = self._post(facts, existing) if existing and existing.keep else None
        self._retire_deployments()
        self._report(facts, comment_id)
        return error

    # the comment -------------------------------------------------------------------------
    def _comments(self) -> Plan | None:
        """The sandbox's comment(s) on the PR; None when there is no comment to keep."""
        if self.hub is None or self.template is None:
            return None
        try:
            return plan(self.hub.comments(self.run.number), self.run.name, author=self.author)
        except GitHubError as e:
            self._refused("read the PR's comments", e)
            return None

    def _post(self, facts: Facts, existing: Plan | None) -> int | None:
        """Create or edit the comment, then clear a race's duplicates; its id, or None."""
        if self.hub is None or self.template is None or existing is None:
            return None
        body = render(self.template, facts, self.run.stamp)
        try:
            if existing.keep is None:
                mine = int(self.hub.create_comment(self.run.number, body)["id"])
                # Another run may have created one at the same moment: keep the oldest.
                existing = plan(
                    self.hub.comments(self.run.number), self.run.name, author=self.author
                )
                if existing.keep is None or existing.keep.id == mine:
                    self._delete(existing.extra)
                    return mine
                self._delete((*existing.extra, mine))
                if existing.keep.stamp.newer_than(self.run.stamp):
                    return existing.keep.id
            self._delete(existing.extra)
            assert existing.keep is not None
            try:
                self.hub.update_comment(existing.keep.id, body)
            except GitHubError as e:
                if e.status != 404:
                    raise
                # Deleted since it was listed (by a person, or a racing run): make it anew.
                return int(self.hub.create_comment(self.run.number, body)["id"])
            return existing.keep.id
        except GitHubError as e:
            self._refused("comment on the PR", e)
            return None

    def _delete(self, ids: tuple[int, ...]) -> None:
        assert self.hub is not None
        for cid in ids:
            try:
                self.hub.delete_comment(cid)
            except GitHubError as e:
                if e.status != 404:  # the other run deleted it first
                    raise

    # the deployment ----------------------------------------------------------------------
    def _deploy(self, facts: Facts, *, failed: bool) -> None:
        if self.hub is None:
            return
        try:
            deployment = self.hub.create_deployment(
                sha=self.run.head,
                environment=self.run.environment,
                description=f"sandboxd sandbox {self.run.name}",
            )
            made = int(deployment["id"])
            self.hub.deployment_status(
                made,
                state="failure" if failed else "success",
                environment_url=facts.page_url or None,
                log_url=self.run.run_url or None,
            )
        except (GitHubError, KeyError, TypeError, ValueError) as e:
            self._refused("create a deployment", e)
            return
        # GitHub's `auto_inactive` skips transient environments: retire the earlier ones here.
        self._retire_deployments(keep=made)

    def _retire_deployments(self, *, keep: int | None = None) -> None:
        if self.hub is None:
            return
        try:
            for deployment in list(self.hub.deployments(self.run.environment)):
                if int(deployment["id"]) != keep:
                    self.hub.deployment_status(int(deployment["id"]), state="inactive")
        except (GitHubError, KeyError, TypeError, ValueError) as e:
            self._refused("mark the sandbox's earlier deployments inactive", e)

    def _refused(self, what: str, e: Exception) -> None:
        self.job.warning(f"could not {what}: {e}", title="sandboxd: GitHub refused")

    # the step's outputs ------------------------------------------------------------------
    def _report(self, facts: Facts, comment_id: int | None) -> None:
        self.job.set_outputs(
            {
                "name": facts.name,
                "routing-key": facts.routing_key if facts.state != "Deleted" else "",
                "baggage": facts.baggage if facts.state != "Deleted" else "",
                "page-url": facts.page_url,
                "expires-at": facts.expires_at if facts.state != "Deleted" else "",
                "comment-id": str(comment_id) if comment_id is not None else "",
            }
        )
        self.job.summarise(summary(facts))


def summary(facts: Facts) -> str:
    """The job summary: the same facts as the outputs, as Markdown."""
    if facts.state == "Deleted":
        return f"### sandboxd: sandbox `{facts.name}` deleted\n\nDeleted at {facts.deleted_at}.\n"
    rows = [
        ("State", facts.state),
        ("Commit", facts.head),
        ("Routing key", f"`{facts.routing_key}`"),
        ("Baggage", f"`baggage: {facts.baggage}`"),
        ("Page", facts.page_url or "-"),
        ("Expires", facts.expires_at),
        ("Forks", ", ".join(f"{f.service} ({f.phase})" for f in facts.forks) or "none"),
    ]
    lines = [f"### sandboxd: sandbox `{facts.name}`", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value.replace('|', '¦')} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def template_path(given: str | None, env: Mapping[str, str]) -> Path:
    chosen = given or env.get("SANDBOXD_COMMENT_TEMPLATE")
    if not chosen:
        raise BadInput(
            "no comment template: give --template PATH (the action passes its "
            "templates/github/comment.md.j2) or --no-comment"
        )
    return Path(chosen)


__all__ = ["Run", "Sync", "load_template", "read_run", "summary", "template_path"]
