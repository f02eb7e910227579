"""Labels: the rules a sandbox's labels follow, and the labels its agent's version becomes.

Labels select sandboxes (`GET /v1/sandboxes?label=k=v`) and are shown in tables, so keys are
short and plain, and values carry no control characters (C0, DEL, C1: escape sequences). The
agent's composite version becomes labels too (`sandboxd.dev/tool.<name>` and so on), so those
parts follow the same rules and count towards the same limit.
"""

from __future__ import annotations

import re

LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^[^\x00-\x1f\x7f-\x9f]*$")
PROMPT_VERSION_LABEL = "sandboxd.dev/prompt-version"
MODEL_VERSION_LABEL = "sandboxd.dev/model-version"
TOOL_LABEL_PREFIX = "sandboxd.dev/tool."
TOOL_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,43}[A-Za-z0-9])?$")  # prefix + 45 = 63
MAX_LABELS = 64
MAX_LABEL_VALUE = 256


def check_labels(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    for key, item in value.items():
        if not LABEL_KEY.fullmatch(key):
            raise ValueError(
                f"label key {key[:80]!r} must be 1-63 characters of letters, digits, '.', '_', "
                "'/' or '-', starting and ending with a letter or digit"
            )
        label_value(item, what=f"label {key!r}")
    return value


def label_value(value: str, *, what: str) -> str:
    if len(value) > MAX_LABEL_VALUE or not LABEL_VALUE.fullmatch(value):
        raise ValueError(
            f"{what}: value must have no control characters, at most {MAX_LABEL_VALUE} characters"
        )
    return value


def agent_value(value: str) -> str:
    return label_value(value, what="this version becomes a label; its")


def check_tools(value: dict[str, str]) -> dict[str, str]:
    """Each tool becomes the label `sandboxd.dev/tool.<name>`, so its name must make a valid
    label key whole (never cut: two long names would collide) and its version a label value."""
    for name, version in value.items():
        if not TOOL_NAME.fullmatch(name):
            raise ValueError(
                f"tool name {name[:80]!r} becomes the label key {TOOL_LABEL_PREFIX}<name>: "
                "1-45 characters of letters, digits, '.', '_' or '-', starting and ending with a "
                "letter or digit"
            )
        label_value(version, what=f"tool {name!r}")
    return value
