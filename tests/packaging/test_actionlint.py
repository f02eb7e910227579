"""actionlint (github.com/rhysd/actionlint, built and cached by scripts/actionlint-assets) on the
workflow users copy, templates/github/sandbox.yml, and on this repository's own workflows, one of
which runs the Action as `uses: ./` so that actionlint reads action.yml as well: it checks the
inputs each step passes against the ones action.yml declares, and reports an action.yml it cannot
parse or that lacks required keys. It does not lint the composite steps inside action.yml.

actionlint resolves `uses: ./` only inside a project, which it recognises by a `.git` next to
`.github/workflows`; elsewhere it passes such a step unchecked. Two negative tests show that it
does flag what is wrong here, so a clean run means something.

shellcheck and pyflakes are turned off: actionlint would run them on `run:` scripts wherever
they happen to be installed (GitHub's runners have shellcheck, this machine kind has neither),
and the same files must get the same verdict on every machine.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "templates" / "github" / "sandbox.yml"
WORKFLOWS = ROOT / ".github" / "workflows"
ACTION = ROOT / "action.yml"

# A cold build of actionlint (outside scripts/test, which builds it first) takes under a minute.
pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    column: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message} [{self.kind}]"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    result = subprocess.run(
        [str(ROOT / "scripts" / "actionlint-assets")], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/actionlint-assets failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1]) / "actionlint"


def lint(actionlint: Path, *files: Path, cwd: Path) -> list[Finding]:
    command = [str(actionlint), "-no-color", "-shellcheck=", "-pyflakes=", "-format", "{{json .}}"]
    result = subprocess.run(
        [*command, *map(str, files)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    # 0: nothing found; 1: findings (as JSON on stdout); 2 and 3: a bad call or a fatal error.
    assert result.returncode in (0, 1), f"actionlint exited {result.returncode}:\n{result.stderr}"
    return [
        Finding(item["filepath"], item["line"], item["column"], item["kind"], item["message"])
        for item in json.loads(result.stdout)
    ]


def report(findings: list[Finding]) -> str:
    return "actionlint found:\n" + "\n".join(map(str, findings))


def assert_clean(findings: list[Finding]) -> None:
    if findings:
        pytest.fail(report(findings), pytrace=False)


def test_the_workflow_template_passes_actionlint(actionlint: Path) -> None:
    assert TEMPLATE.is_file(), f"the workflow template users copy is missing: {TEMPLATE}"
    findings = lint(actionlint, TEMPLATE, cwd=ROOT)
    assert_clean(findings)


def test_the_repositorys_workflows_and_the_action_they_use_pass_actionlint(
    actionlint: Path,
) -> None:
    workflows = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    assert workflows, f"no workflow in {WORKFLOWS}"
    assert ACTION.is_file(), f"the Action's metadata is missing: {ACTION}"
    # Without these actionlint would pass action.yml by without reading it.
    assert (ROOT / ".git").exists(), f"{ROOT} is not a Git checkout: `uses: ./` goes unchecked"
    users = [w.name for w in workflows if "./" in step_uses(yaml.safe_load(w.read_text()))]
    assert users, f"no workflow in {WORKFLOWS} runs the Action as `uses: ./`"
    findings = lint(actionlint, *workflows, cwd=ROOT)
    assert_clean(findings)


def test_actionlint_flags_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    workflow = tmp_path / "broken.yml"
    workflow.write_text(
        """\
on:
  pull_request:
    types: [opened]
  pull_requests: {}
  workflow_dispatch:
    inputs:
      url: {description: where, required: true}
jobs:
  up:
    runs-on: ${{ matrix.runner }}
    steps:
      - run: echo "$URL"
        env:
          URL: ${{ inputs.nope }}
"""
    )
    findings = lint(actionlint, workflow, cwd=tmp_path)
    flagged = {(f.line, f.kind) for f in findings}
    # The unknown event, the matrix that no strategy defines, the input that is not declared.
    assert flagged == {(4, "events"), (10, "expression"), (14, "expression")}, report(findings)


def test_a_step_using_the_local_action_is_checked_against_its_action_yml(
    actionlint: Path, tmp_path: Path
) -> None:
    (tmp_path / ".git").mkdir()  # what makes tmp_path a project, as a checkout is
    (tmp_path / "action.yml").write_text(
        """\
name: probe
description: an Action that takes only a URL
inputs:
  url: {description: where, required: true}
runs:
  using: composite
  steps:
    - run: "true"
      shell: bash
"""
    )
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "pr.yml").write_text(
        """\
on: pull_request
jobs:
  sandbox:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./
        with:
          url: https://sandboxd.example
          nope: yes
"""
    )
    findings = lint(actionlint, workflows / "pr.yml", cwd=tmp_path)
    assert [(f.line, f.kind) for f in findings] == [(10, "action")], report(findings)
    assert '"nope" is not defined' in findings[0].message, report(findings)


def step_uses(workflow: Any) -> set[str]:
    """Every `uses:` of the workflow's steps."""
    jobs = workflow.get("jobs", {}) if isinstance(workflow, dict) else {}
    return {
        step["uses"]
        for job in jobs.values()
        for step in job.get("steps", [])
        if isinstance(step, dict) and "uses" in step
    }
