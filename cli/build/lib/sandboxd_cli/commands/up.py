"""`sandbox up`: create a sandbox or update it in place to the spec, and wait until it is
Ready."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from sandboxd_cli import github
from sandboxd_cli.client import Api, Json
from sandboxd_cli.errors import EXIT_CODES_HELP, CliError, SandboxFailed, TimedOut, reports_errors
from sandboxd_cli.options import OutputOption, now, open_api, show
from sandboxd_cli.render import Output, text
from sandboxd_cli.spec import Flags, build_spec, read_spec_file
from sandboxd_cli.views import fork_states, forks_of, summary
from sandboxd_cli.wait import poll, reporter

app = typer.Typer()

SETTLED = frozenset({"Ready", "Failed", "Terminating", "Deleted"})
"""Phases after which waiting for Ready is pointless."""

EPILOG = (
    "Flags given with -f override the file (name, ttl) or extend it (labels, forks, env). "
    "In GitHub Actions the name defaults to <repo>-pr-<number>-<hash> and the labels "
    f"{github.REPO_LABEL}, {github.PR_LABEL} and {github.SHA_LABEL} are added (explicit labels "
    "win).\n\n" + EXIT_CODES_HELP
)


@app.command(epilog=EPILOG)
@reports_errors
def up(
    ctx: typer.Context,
    file: Annotated[
        str | None,
        typer.Option(
            "-f", "--file", metavar="PATH", help="Spec file, YAML or JSON; - reads stdin."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Sandbox name: a DNS label of at most 40 characters."),
    ] = None,
    fork: Annotated[
        list[str] | None,
        typer.Option(metavar="SERVICE", help="Run a copy of SERVICE in the sandbox (repeatable)."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SERVICE:KEY=VALUE", help="Set KEY in a forked SERVICE's env (repeatable)."
        ),
    ] = None,
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime such as 90m or 2h (server default: 2h).")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="Add a label (repeatable).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the sandbox is Ready.")
    ] = True,
    timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for Ready before exit code 3.")
    ] = 180,
    create_only: Annotated[
        bool,
        typer.Option(
            "--create-only",
            help="Only create: a sandbox of that name with another spec is a conflict (exit 7) "
            "instead of being updated.",
        ),
    ] = False,
    output: OutputOption = Output.TABLE,
) -> None:
    """Create a sandbox, or update the one of that name in place to the spec (its routing key
    stays), and wait until it is Ready."""
    flags = Flags(name=name, ttl=ttl, forks=fork or (), env=env or (), labels=label or ())
    base = read_spec_file(file, stdin=sys.stdin) if file else {}
    spec = build_spec(base=base, flags=flags, github=github.defaults(os.environ))
    with open_api(ctx) as api:
        sandbox = api.create(spec) if create_only else api.apply(spec)
        error: CliError | None = None
        if wait:
            sandbox, error = wait_ready(api, sandbox, timeout=timeout)
        services = api.services() if output is Output.TABLE and error is None else None
    if output is not Output.TABLE:
        show(sandbox, output)
    elif error is None:
        typer.echo(summary(sandbox, services=services, now=now()))
    if error is not None:
        raise error


def wait_ready(api: Api, sandbox: Json, *, timeout: float) -> tuple[Json, CliError | None]:
    """Poll until the sandbox settles; the last sandbox seen and the error to report, if any."""
    name = str(sandbox.get("name"))
    with reporter() as report:
        sandbox, settled = poll(
            fetch=lambda: api.get(name),
            done=lambda s: s.get("phase") in SETTLED,
            timeout=timeout,
            report=report,
        )
    return sandbox, outcome(sandbox, settled=settled, timeout=timeout)


def outcome(sandbox: Json, *, settled: bool, timeout: float) -> CliError | None:
    """None when Ready; otherwise the error that says what happened."""
    name, phase = text(sandbox.get("name")), text(sandbox.get("phase"))
    if not settled:
        return TimedOut(
            f"sandbox {name} is not Ready after {timeout:g}s "
            f"(phase {phase}, forks: {fork_states(sandbox)})"
        )
    if phase == "Ready":
        return None
    if phase == "Failed":
        reason, message = text(sandbox.get("reason")), text(sandbox.get("message"))
        return SandboxFailed(f"sandbox {name} failed: {reason}: {message}", details=_forks(sandbox))
    return SandboxFailed(f"sandbox {name} is being deleted (phase {phase})")


def _forks(sandbox: Json) -> list[str]:
    return [_fork_line(fork) for fork in forks_of(sandbox)]


def _fork_line(fork: Any) -> str:
    line = f"fork {text(fork.get('service'))}: {text(fork.get('phase'))}"
    return f"{line} — {text(fork.get('message'))}" if fork.get("message") else line
