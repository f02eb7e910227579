"""The sandbox spec: what a client asks for (`POST /v1/sandboxes`, `sandbox up -f`).

Field names are camelCase on the wire. Unknown fields are refused rather than ignored, so a typo
such as `fork:` for `forks:` is an error and not a silently empty sandbox. Every collection has a
size limit, because specs arrive from untrusted CI jobs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sandboxd.core.duration import PATTERN as DURATION_PATTERN
from sandboxd.core.duration import format_duration, parse_duration
from sandboxd.core.fault_spec import Faults
from sandboxd.core.labels import (
    LABEL_KEY,
    LABEL_VALUE,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MODEL_VERSION_LABEL,
    PROMPT_VERSION_LABEL,
    TOOL_LABEL_PREFIX,
    TOOL_NAME,
    agent_value,
    check_labels,
    check_tools,
)
from sandboxd.core.model import MAX_STRING, DnsLabel, Model
from sandboxd.core.naming import (
    MAX_SANDBOX_NAME,
    SANDBOX_NAME,
    is_sandbox_name,
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HEALTH_PATH = re.compile(r"^/[!-~]{0,511}$")  # printable ASCII, no spaces
# An OCI image reference: [registry[:port]/]path[:tag][@digest] (distribution's grammar, condensed).
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REGISTRY = (  # a registry has a dot or a port, or is localhost; otherwise it is a path
    r"(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?/|[a-zA-Z0-9-]+:[0-9]+/)"
)
_IMAGE = re.compile(
    rf"^{_IMAGE_REGISTRY}?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
MAX_FORKS = 32
MAX_ARGV = 64
MAX_ENV = 128


def is_image_reference(value: str) -> bool:
    return len(value) <= 512 and bool(_IMAGE.fullmatch(value))


def _image(value: str) -> str:
    if not is_image_reference(value):
        raise ValueError(
            f"{value[:80]!r} is not an image reference ([registry/]path[:tag][@sha256:digest], "
            "lower-case path)"
        )
    return value


def _sandbox_name(value: str) -> str:
    if not is_sandbox_name(value):
        raise ValueError(
            f"{value!r} is not a valid sandbox name: a DNS label of at most {MAX_SANDBOX_NAME} "
            "characters (lower-case letters, digits and '-', starting and ending with a letter "
            "or digit)"
        )
    return value


def _env(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_ENV:
        raise ValueError(f"at most {MAX_ENV} environment variables")
    for key, item in value.items():
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"{key!r} is not an environment variable name")
        if len(item) > MAX_STRING or "\x00" in item:
            raise ValueError(f"env {key!r}: value too long or contains NUL")
    return value


def _argv(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_ARGV:
        raise ValueError(f"at most {MAX_ARGV} arguments")
    if any(len(a) > MAX_STRING or "\x00" in a for a in value):
        raise ValueError("an argument is too long or contains NUL")
    return value


def _health_path(value: str) -> str:
    if not _HEALTH_PATH.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP path (it must start with '/')")
    return value


# The validators give the messages; the JSON schema documents the same rules (for the OpenAPI
# document, which clients and fuzzers read).
SandboxName = Annotated[
    str,
    AfterValidator(_sandbox_name),
    Field(json_schema_extra={"pattern": SANDBOX_NAME.pattern, "maxLength": MAX_SANDBOX_NAME}),
]
_LABEL_VALUE = {"type": "string", "maxLength": MAX_LABEL_VALUE, "pattern": LABEL_VALUE.pattern}
Labels = Annotated[
    dict[str, str],
    AfterValidator(check_labels),
    Field(
        json_schema_extra={
            "propertyNames": {"pattern": LABEL_KEY.pattern},
            "maxProperties": MAX_LABELS,
            "additionalProperties": _LABEL_VALUE,
        }
    ),
]
Env = Annotated[
    dict[str, str],
    AfterValidator(_env),
    Field(
        json_schema_extra={
            "propertyNames": {"pattern": _ENV_NAME.pattern},
            "maxProperties": MAX_ENV,
            "additionalProperties": {
                "type": "string",
                "maxLength": MAX_STRING,
                "pattern": "^[^\x00]*$",
            },
        }
    ),
]
Argv = Annotated[
    list[str],
    AfterValidator(_argv),
    Field(json_schema_extra={"minItems": 1, "maxItems": MAX_ARGV}),
]
HealthPath = Annotated[
    str, AfterValidator(_health_path), Field(json_schema_extra={"pattern": _HEALTH_PATH.pattern})
]


AgentText = Annotated[
    str,
    AfterValidator(agent_value),
    Field(
        min_length=1,
        max_length=MAX_LABEL_VALUE,
        json_schema_extra={"pattern": LABEL_VALUE.pattern},
    ),
]
Tools = Annotated[
    dict[str, AgentText],
    AfterValidator(check_tools),
    Field(
        max_length=MAX_LABELS,
        json_schema_extra={"propertyNames": {"pattern": TOOL_NAME.pattern}},
    ),
]


class AgentVersion(Model):
    """The agent's composite version: what a behaviour change can be pinned to. Each part
    becomes a label (`agent_labels`), so each is held to the rules of labels."""

    prompt_version: AgentText | None = None
    model_version: AgentText | None = None
    tools: Tools = {}


class ForkSpec(Model):
    """One catalog service that this sandbox runs its own copy of."""

    service: DnsLabel
    command: Argv | None = None
    args: Annotated[list[str], Field(max_length=MAX_ARGV)] | None = None
    env: Env = {}
    health: HealthPath | None = None
    image: Annotated[str, AfterValidator(_image)] | None = None


def _ttl(value: object) -> object:
    if value is None or not isinstance(value, str | int):
        return value  # let the declared type report it
    return format_duration(parse_duration(value))


Ttl = Annotated[
    str | None,
    BeforeValidator(_ttl),
    Field(
        description="s/m/h/d units, such as 90m or 2h; a bare number means seconds",
        json_schema_extra={"pattern": DURATION_PATTERN},
    ),
]


class SandboxSpec(Model):
    """A sandbox as asked for. `ttl` is normalised (`120m` → `2h`); the API fills its default."""

    name: SandboxName
    ttl: Ttl = None
    labels: Labels = {}
    agent: AgentVersion | None = None
    forks: Annotated[list[ForkSpec], Field(max_length=MAX_FORKS)] = []
    faults: Faults = []

    @field_validator("agent")
    @classmethod
    def _labels_with_agent(
        cls, agent: AgentVersion | None, info: ValidationInfo
    ) -> AgentVersion | None:
        """The agent's labels count towards the limit on labels, with the spec's own."""
        derived = agent_labels(agent)
        given = len(info.data.get("labels") or {})
        if given + len(derived) > MAX_LABELS:
            raise ValueError(
                f"the agent's version makes {len(derived)} labels; with the {given} in `labels` "
                f"that is over the limit of {MAX_LABELS} labels"
            )
        return agent

    @field_validator("forks")
    @classmethod
    def _one_fork_per_service(cls, forks: list[ForkSpec]) -> list[ForkSpec]:
        seen: set[str] = set()
        for fork in forks:
            if fork.service in seen:
                raise ValueError(f"service {fork.service!r} is forked twice")
            seen.add(fork.service)
        return forks

    @property
    def ttl_seconds(self) -> int | None:
        return None if self.ttl is None else parse_duration(self.ttl)

    def canonical(self) -> dict[str, Any]:
        """The comparable form: what decides 'same spec' for an idempotent create."""
        return self.as_json()


class SandboxPatch(Model):
    """`PATCH /v1/sandboxes/{name}`: a new TTL counted from now, label changes, new faults.

    `labels` is a JSON merge patch: a key set to null is removed. `generation`, when given, is a
    precondition: the change applies only while the sandbox's generation (shown by GET, raised
    by every PATCH) still is that number, so a read-modify-write of the faults loses no update.
    """

    ttl: Ttl = None
    labels: Annotated[dict[str, str | None], Field(max_length=MAX_LABELS)] | None = None
    faults: Faults | None = None
    generation: Annotated[int, Strict(), Field(ge=1, le=2**53)] | None = None

    @field_validator("labels")
    @classmethod
    def _label_rules(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if value is not None:
            check_labels({k: v or "" for k, v in value.items()})
        return value

    @model_validator(mode="after")
    def _something(self) -> SandboxPatch:
        if self.ttl is None and self.labels is None and self.faults is None:
            raise ValueError("nothing to change: give ttl, labels or faults")
        return self


def agent_labels(agent: AgentVersion | None) -> dict[str, str]:
    """The composite version as labels, so sandboxes can be listed by prompt or model version."""
    if agent is None:
        return {}
    labels: dict[str, str] = {}
    if agent.prompt_version:
        labels[PROMPT_VERSION_LABEL] = agent.prompt_version
    if agent.model_version:
        labels[MODEL_VERSION_LABEL] = agent.model_version
    for tool, version in agent.tools.items():
        labels[f"{TOOL_LABEL_PREFIX}{tool}"] = version
    return labels
