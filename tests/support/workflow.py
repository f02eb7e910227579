"""A small runner for a composite action's steps, as GitHub's runner runs them: each `run:`
step in `bash --noprofile --norc -eo pipefail`, its `env:` evaluated from the `inputs`,
`github`, `steps` and `runner` contexts, with `GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`,
`GITHUB_ENV` and `GITHUB_PATH` files, workflow commands read from stdout (masks applied to the
log as the runner applies them), and the action's outputs evaluated at the end.

It refuses what it cannot do faithfully (a `uses:` step, an `if:`, an expression other than a
context path), so a change to `action.yml` that needs more fails the tests instead of passing
untested.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*$")
_COMMAND = re.compile(r"^::([a-z-]+)(?: ([^:]*))?::(.*)$")


class Unsupported(Exception):
    """`action.yml` uses something this runner does not emulate."""


@dataclass
class Command:
    name: str
    message: str
    properties: dict[str, str]


@dataclass
class Result:
    ok: bool
    outputs: dict[str, str]
    log: str
    """Every step's stdout and stderr as the job's log shows it: masked, commands removed."""
    raw_stdout: str
    """Exactly what the steps printed on stdout (to check what a mask hid)."""
    raw_stderr: str = ""
    commands: list[Command] = field(default_factory=list)
    summary: str = ""
    exit_codes: list[int] = field(default_factory=list)

    def annotations(self, kind: str) -> list[Command]:
        return [c for c in self.commands if c.name == kind]


def unescape(text: str, *, prop: bool = False) -> str:
    if prop:
        text = text.replace("%3A", ":").replace("%2C", ",")
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def run_action(
    action_dir: Path,
    *,
    inputs: Mapping[str, str],
    env: Mapping[str, str],
    work: Path,
    timeout: float = 600,
) -> Result:
    """Run `action_dir/action.yml` with `inputs`; `env` holds the job's `GITHUB_*` variables."""
    action = yaml.safe_load((action_dir / "action.yml").read_text())
    if action["runs"]["using"] != "composite":
        raise Unsupported("only composite actions")
    github = {
        "action_path": str(action_dir),
        "token": env.get("GITHUB_TOKEN", ""),
        "repository": env.get("GITHUB_REPOSITORY", ""),
        "event_name": env.get("GITHUB_EVENT_NAME", ""),
        "workspace": env.get("GITHUB_WORKSPACE", ""),
    }
    runner = {"temp": env.get("RUNNER_TEMP", str(work))}
    context: dict[str, Any] = {"github": github, "runner": runner, "steps": {}}
    declared = action.get("inputs") or {}
    unknown = set(inputs) - set(declared)
    if unknown:
        raise Unsupported(f"inputs the action does not declare: {sorted(unknown)}")
    context["inputs"] = {
        name: inputs[name] if name in inputs else evaluate(str(spec.get("default", "")), context)
        for name, spec in declared.items()
    }
    # (`required:` is not enforced: GitHub's runner does not enforce it for actions either)

    job_env = dict(env)
    masks: list[str] = []
    result = Result(ok=True, outputs={}, log="", raw_stdout="")
    for index, step in enumerate(action["runs"]["steps"]):
        unsupported = set(step) - {"name", "id", "shell", "env", "run", "working-directory"}
        if unsupported or "run" not in step:
            raise Unsupported(f"step {index}: {sorted(unsupported) or 'no run:'}")
        if step.get("shell") != "bash":
            raise Unsupported(f"step {index}: shell {step.get('shell')!r}")
        if "${{" in step["run"]:
            raise Unsupported(f"step {index}: an expression inside run: (inject through env:)")
        files = {
            name: work / f"step{index}-{name.lower()}"
            for name in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV", "GITHUB_PATH")
        }
        for path in files.values():
            path.write_text("")
        script = work / f"step{index}.sh"
        script.write_text(step["run"])
        step_env = {
            **job_env,
            **{
                key: evaluate(str(value), context) for key, value in (step.get("env") or {}).items()
            },
            **{key: str(path) for key, path in files.items()},
        }
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            env=step_env, cwd=env.get("GITHUB_WORKSPACE") or work,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        result.raw_stdout += done.stdout
        result.raw_stderr += done.stderr
        result.exit_codes.append(done.returncode)
        shown = []
        # The runner reads workflow commands on both streams.
        for line in [*done.stdout.splitlines(), *done.stderr.splitlines()]:
            found = _COMMAND.match(line)
            if found is None:
                shown.append(line)
                continue
            name, props, message = found.groups()
            if name == "add-mask":
                masks.append(unescape(message))
                continue
            properties = dict(p.split("=", 1) for p in (props or "").split(",") if "=" in p)
            properties = {k: unescape(v, prop=True) for k, v in properties.items()}
            result.commands.append(Command(name, unescape(message), properties))
        result.log += _masked("\n".join(shown), masks) + "\n"
        outputs = _key_values(files["GITHUB_OUTPUT"].read_text())
        if step.get("id"):
            context["steps"][step["id"]] = {"outputs": outputs}
        job_env.update(_key_values(files["GITHUB_ENV"].read_text()))
        for extra in files["GITHUB_PATH"].read_text().splitlines():
            job_env["PATH"] = f"{extra}{os.pathsep}{job_env.get('PATH', '')}"
        result.summary += files["GITHUB_STEP_SUMMARY"].read_text()
        if done.returncode != 0:
            result.ok = False
            break
    result.outputs = {  # (also after a failed step: what it set stays set)
        name: evaluate(str(spec["value"]), context)
        for name, spec in (action.get("outputs") or {}).items()
    }
    return result


def evaluate(text: str, context: Mapping[str, Any]) -> str:
    """Substitute each `${{ a.b.c }}`; only context paths are supported."""

    def one(found: re.Match[str]) -> str:
        path = found.group(1)
        if not _PATH.match(path):
            raise Unsupported(f"expression {path!r}")
        value: Any = context
        for part in path.split("."):
            value = value.get(part, "") if isinstance(value, Mapping) else ""
        return "" if value is None else str(value)

    return _EXPRESSION.sub(one, text)


def _key_values(text: str) -> dict[str, str]:
    """`name=value` lines and `name<<DELIMITER` blocks, as the runner reads the command files."""
    found: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for body in lines:
                if body == delimiter:
                    break
                value.append(body)
            else:
                raise ValueError(f"{name}: no closing {delimiter}")
            found[name] = "\n".join(value)
        elif "=" in line:
            name, value_ = line.split("=", 1)
            found[name] = value_
    return found


def _masked(text: str, masks: list[str]) -> str:
    for secret in sorted(masks, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
