"""`sandbox github sync`: what the GitHub Action runs — a pull request's sandbox, comment and
deployment brought in line with the job's event. Every option can come from the environment,
so the action's step passes its inputs through `env:` and nothing else."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from sandboxd_cli import github
from sandboxd_cli.actions import Job
from sandboxd_cli.client import Api, Json
from sandboxd_cli.commands.down import wait_deleted
from sandboxd_cli.commands.up import wait_ready
from sandboxd_cli.errors import BadInput, CliError, SandboxFailed, TimedOut, reports_errors
from sandboxd_cli.github_api import GitHub
from sandboxd_cli.options import open_api
from sandboxd_cli.pr_comment import load_template
from sandboxd_cli.pr_sync import Sync, read_run, template_path
from sandboxd_cli.spec import read_spec_file

app = typer.Typer(
    name="github",
    help="What the GitHub Action runs, from the job's event payload.",
    no_args_is_help=True,
)


@app.command(epilog="Run by the action `uses: <owner>/sandboxd@<ref>`; see templates/github/.")
@reports_errors
def sync(
    ctx: typer.Context,
    command: Annotated[
        str | None,
        typer.Option(
            metavar="up|down",
            envvar="SANDBOX_COMMAND",
            help="up: apply the spec and wait for Ready; down: delete. Default: down when "
            "the PR was closed, else up.",
        ),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("-f", "--file", metavar="PATH", envvar="SANDBOX_SPEC", help="Spec file."),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(min=0, envvar="SANDBOX_TIMEOUT", help="Seconds to wait for Ready/Deleted."),
    ] = 300,
    comment: Annotated[
        bool,
        typer.Option(
            "--comment/--no-comment", envvar="SANDBOX_COMMENT", help="Keep the PR comment."
        ),
    ] = True,
    template: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            envvar="SANDBOXD_COMMENT_TEMPLATE",
            help="The comment's Jinja2 template (the action passes its own by default).",
        ),
    ] = None,
    github_token: Annotated[
        str | None,
        typer.Option(
            metavar="TOKEN",
            envvar="GITHUB_TOKEN",
            help="The job's GitHub token (comments, deployments); without it neither is made.",
        ),
    ] = None,
) -> None:
    """Bring a pull request's sandbox, its comment and its deployment in line with the event."""
    env = os.environ
    job = Job(env, sys.stdout)
    for secret in (env.get("SANDBOXD_TOKEN"), github_token):
        if secret:
            job.mask(secret)
    try:
        _sync(ctx, job, env, command, file, timeout, comment, template, github_token)
    except SandboxFailed:
        raise  # its annotations, one per failed fork, are written
    except CliError as error:
        job.error(error.message, title="sandboxd")
        raise


def _sync(
    ctx: typer.Context,
    job: Job,
    env: os._Environ[str],
    command: str | None,
    file: str | None,
    timeout: float,
    comment: bool,
    template: str | None,
    github_token: str | None,
) -> None:
    event_path = env.get("GITHUB_EVENT_PATH")
    if not event_path:
        raise BadInput("GITHUB_EVENT_PATH is not set: `sandbox github sync` runs in a GitHub job")
    run = read_run(env, github.load_event(Path(event_path)), command)
    if not env.get("SANDBOXD_TOKEN") and not (ctx.obj and getattr(ctx.obj, "token", None)):
        if run.from_fork:
            job.notice(
                "this pull request comes from a fork, and GitHub gives such runs no secrets: "
                "no sandbox for it (a maintainer can push the branch to this repository)",
                title="sandboxd: no sandbox for a fork's PR",
            )
            return
        raise BadInput(
            "the action's `token` input is empty: set it to a secret holding a sandboxd token "
            "(sandboxd token create NAME --label github.repo=OWNER/REPO)"
        )
    spec = read_spec_file(file, stdin=sys.stdin) if file else {}
    chosen = load_template(template_path(template, env)) if comment else None
    hub = GitHub.from_env(env, token=github_token) if github_token else None
    try:
        with open_api(ctx) as api:
            sync_ = Sync(run=run, api=api, hub=hub, job=job, template=chosen)
            if run.command == "down":
                sync_.down(timeout=timeout, wait=_wait_deleted)
                return
            error = sync_.up(spec, timeout=timeout, wait=_wait_ready)
    finally:
        if hub is not None:
            hub.close()
    if error is not None:
        raise error
    job.notice(f"sandbox {run.name} is Ready", title="sandboxd")


def _wait_ready(api: Api, sandbox: Json, timeout: float) -> tuple[Json, CliError | None]:
    return wait_ready(api, sandbox, timeout=timeout)


def _wait_deleted(api: Api, name: str, timeout: float) -> Json | None:
    try:
        return wait_deleted(api, name, timeout=timeout)
    except TimedOut:
        return api.get(name)
