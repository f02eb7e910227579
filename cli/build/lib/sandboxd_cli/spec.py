"""Building the spec that `sandbox up` posts, from a file, flags and GitHub Actions defaults.

Precedence, lowest first: GitHub Actions defaults, the spec file, the flags. `--name` and `--ttl`
replace the file's values; labels are merged key by key; `--fork` adds forks the file does not
have; `--env SERVICE:KEY=VALUE` sets a variable on a fork that the file or a `--fork` names.
Only the CLI's own syntax is checked here; the server validates the spec itself and its 422
reaches the user field by field.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from sandboxd_cli.documents import DocumentError, load_json, load_yaml
from sandboxd_cli.errors import BadInput
from sandboxd_cli.github import Defaults

Json = dict[str, Any]
MAX_SPEC_BYTES = 1 << 20


@dataclass(frozen=True)
class Flags:
    """What `sandbox up` was given on the command line (unparsed, as typed)."""

    name: str | None = None
    ttl: str | None = None
    forks: Sequence[str] = ()
    env: Sequence[str] = ()
    labels: Sequence[str] = ()


def parse_label(text: str) -> tuple[str, str]:
    """`k=v` → (k, v); the value may be empty or contain '='."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"--label {text!r}: expected KEY=VALUE")
    return key.strip(), value


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    return dict(parse_label(item) for item in items)


def parse_env(text: str) -> tuple[str, str, str]:
    """`SERVICE:KEY=VALUE` → (service, key, value); the value may contain ':' and '='."""
    service, colon, assignment = text.partition(":")
    key, equals, value = assignment.partition("=")
    if not colon or not equals or not service.strip() or not key.strip():
        raise BadInput(f"--env {text!r}: expected SERVICE:KEY=VALUE")
    return service.strip(), key.strip(), value


def parse_spec_text(text: str, *, source: str) -> Json:
    """A spec document: JSON when it looks like a JSON object, YAML otherwise (safe loader,
    bounded: see `sandboxd_cli.documents`)."""
    try:
        data = load_json(text) if text.lstrip().startswith("{") else load_yaml(text)
    except DocumentError as e:
        raise BadInput(f"{source}: {e}") from e
    except (ValueError, yaml.YAMLError) as e:
        raise BadInput(f"{source}: not valid YAML or JSON: {_first_line(e)}") from e
    if data is None:
        raise BadInput(f"{source}: the spec is empty")
    if not isinstance(data, dict):
        raise BadInput(f"{source}: the spec must be a mapping (name, ttl, labels, forks, ...)")
    return data


def read_spec_file(path: str, *, stdin: IO[str]) -> Json:
    """The spec in file `path`, or on standard input when `path` is `-`."""
    source = "standard input" if path == "-" else path
    try:
        text = stdin.read(MAX_SPEC_BYTES + 1) if path == "-" else _read_limited(Path(path))
    except OSError as e:
        raise BadInput(f"cannot read {source}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise BadInput(f"{source}: not UTF-8 text") from e
    if len(text) > MAX_SPEC_BYTES:
        raise BadInput(f"{source}: larger than {MAX_SPEC_BYTES} bytes")
    return parse_spec_text(text, source=source)


def _read_limited(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(MAX_SPEC_BYTES + 1).decode("utf-8")


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())


def build_spec(*, base: Mapping[str, Any], flags: Flags, github: Defaults) -> Json:
    """The spec to post: `base` (a file's spec, or empty) with defaults and flags applied."""
    spec: Json = copy.deepcopy(dict(base))
    name = flags.name or spec.get("name") or github.name
    if not name:
        raise BadInput(
            "no sandbox name: give --name NAME or `name:` in the spec file "
            "(in GitHub Actions it defaults to <repo>-pr-<number>-<hash> for pull request events)"
        )
    spec["name"] = name
    if flags.ttl:
        spec["ttl"] = flags.ttl
    labels = {**github.labels, **_mapping(spec, "labels"), **parse_labels(flags.labels)}
    if labels or "labels" in spec:
        spec["labels"] = labels
    forks = _with_forks(_forks(spec), flags.forks)
    _apply_env(forks, [parse_env(item) for item in flags.env])
    if forks or "forks" in spec:
        spec["forks"] = forks
    return spec


def _mapping(spec: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = spec.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"`{key}` in the spec must be a mapping")
    return value


def _forks(spec: Mapping[str, Any]) -> list[Json]:
    forks = spec.get("forks")
    if forks is None:
        return []
    if not isinstance(forks, list) or not all(isinstance(f, dict) for f in forks):
        raise BadInput("`forks` in the spec must be a list of mappings with a `service`")
    return forks


def _with_forks(forks: list[Json], services: Sequence[str]) -> list[Json]:
    known = {fork.get("service") for fork in forks}
    for service in services:
        if not service.strip():
            raise BadInput("--fork needs a service name")
        if service not in known:
            forks.append({"service": service})
            known.add(service)
    return forks


def _apply_env(forks: list[Json], assignments: Sequence[tuple[str, str, str]]) -> None:
    by_service = {fork.get("service"): fork for fork in forks}
    for service, key, value in assignments:
        fork = by_service.get(service)
        if fork is None:
            raise BadInput(
                f"--env {service}:{key}=...: {service} is not forked; add --fork {service}"
            )
        env = _mapping(fork, "env")
        fork["env"] = {**env, key: value}
