"""`sandbox github sync`: what the GitHub Action runs — a pull request's sandbox, comment and
deployment brought in line with the job's event. Every option can come from the environment,
so the action's step passes its inputs through `env:` and nothing else."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from sandboxd_cli import github
from sandboxd_cli.actions import Job
from sandboxd_cli.client import Api, Json
from sandboxd_cli.commands.down import wait_deleted
from sandboxd_cli.commands.up import wait_ready
from sandboxd_cli.errors import BadInput, CliError, SandboxFailed, TimedOut, exit_code
from sandboxd_cli.github_api import GitHub
from sandboxd_cli.options import open_api
from sandboxd_cli.pr_comment import AUTHOR, load_template
from sandboxd_cli.pr_sync import Run, Sync, read_run, template_path
from sandboxd_cli.render import printable
from sandboxd_cli.spec import read_spec_file

app = typer.Typer(
    name="github",
    help="What the GitHub Action runs, from the job's event payload.",
    no_args_is_help=True,
)


@app.command(epilog="Run by the action `uses: <owner>/sandboxd@<ref>`; see templates/github/.")
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
    comment_author: Annotated[
        str,
        typer.Option(
            metavar="LOGIN",
            envvar="SANDBOX_COMMENT_AUTHOR",
            help="Who the GitHub token comments as: only that author's comments are the "
            "sandbox's (set it when the token is not the job's).",
        ),
    ] = AUTHOR,
) -> None:
    """Bring a pull request's sandbox, its comment and its deployment in line with the event."""
    env = os.environ
    job = Job(env, sys.stdout)
    for secret in (env.get("SANDBOXD_TOKEN"), github_token):
        if secret:
            job.mask(secret)
    given = Given(command, file, timeout, comment, template, github_token, comment_author)
    name = ""
    try:
        run = _read_run(env, given)
        name = run.name
        _sync(ctx, job, env, given, run)
    except CliError as error:
        # One escaped annotation, and one line on stderr: the runner reads workflow commands
        # on both streams, so server text must not reach either with its line breaks.
        if not isinstance(error, SandboxFailed):  # (a failed fork has its own annotations)
            lines = [error.message, *error.details]
            job.error("\n".join(lines), title=f"sandbox {name}" if name else "sandboxd")
        said = printable(" ".join([error.message, *error.details]).replace("\n", " "))
        typer.echo(f"sandbox: {said}", err=True)
        raise typer.Exit(exit_code(error)) from None


@dataclass(frozen=True)
class Given:
    command: str | None
    file: str | None
    timeout: float
    comment: bool
    template: str | None
    github_token: str | None
    comment_author: str


def _read_run(env: Mapping[str, str], given: Given) -> Run:
    event_path = env.get("GITHUB_EVENT_PATH")
    if not event_path:
        raise BadInput("GITHUB_EVENT_PATH is not set: `sandbox github sync` runs in a GitHub job")
    return read_run(env, github.load_event(Path(event_path)), given.command)


def _sync(ctx: typer.Context, job: Job, env: Mapping[str, str], given: Given, run: Run) -> None:
    if not env.get("SANDBOXD_URL") and not (ctx.obj and getattr(ctx.obj, "url", None)):
        raise BadInput("the action's `url` input is empty: set it to sandboxd's address")
    if not env.get("SANDBOXD_TOKEN") and not (ctx.obj and getattr(ctx.obj, "token", None)):
        if run.from_fork:
            job.notice(
                "this pull request comes from a fork (or from Dependabot), and GitHub gives "
                "such runs no secrets: no sandbox for it (a maintainer can push the branch to "
                "this repository)",
                title="sandboxd: no sandbox for a fork's PR",
            )
            return
        raise BadInput(
            "the action's `token` input is empty: set it to a secret holding a sandboxd token "
            "(sandboxd token create NAME --label github.repo=OWNER/REPO)"
        )
    spec = read_spec_file(given.file, stdin=sys.stdin) if given.file else {}
    chosen = load_template(template_path(given.template, env)) if given.comment else None
    token = given.github_token
    hub = GitHub.from_env(env, token=token) if token else None
    try:
        with open_api(ctx) as api:
            sync_ = Sync(
                run=run, api=api, hub=hub, job=job, template=chosen, author=given.comment_author
            )
            if run.command == "down":
                error = sync_.down(timeout=given.timeout, wait=_wait_deleted)
            else:
                error = sync_.up(spec, timeout=given.timeout, wait=_wait_ready)
    finally:
        if hub is not None:
            hub.close()
    if error is not None:
        raise error
    if not sync_.left_alone:
        state = "deleted" if run.command == "down" else "Ready"
        job.notice(f"sandbox {run.name} is {state}", title="sandboxd")


def _wait_ready(api: Api, sandbox: Json, timeout: float) -> tuple[Json, CliError | None]:
    return wait_ready(api, sandbox, timeout=timeout)


def _wait_deleted(api: Api, name: str, timeout: float) -> tuple[Json | None, CliError | None]:
    try:
        return wait_deleted(api, name, timeout=timeout), None
    except TimedOut as error:
        return api.get(name), error
