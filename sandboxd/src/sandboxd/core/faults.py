"""The rules of faults that the model alone cannot state: which fields each kind takes, which
protocol it applies to, what a glob is, and how a fault without an `id` gets a stable one.

Globs (`tool`, `method`, `path`) are matched against the whole string, case-sensitively, with
the semantics of Python's `fnmatch.fnmatchcase`: `*` any run of characters (`/` included), `?`
one character, `[abc]`, `[a-z]` and `[!abc]` one character of (or not of) a class. There is no
escape character: a literal `*`, `?` or `[` is written `[*]`, `[?]`, `[[]`. A `[` that opens no
class is refused here (fnmatch would quietly read it as a literal), so every stored glob means
the same to every router.

Ids: a fault given without one gets `f-` and 8 hex digits of a hash of its content (every other
field, as stored) and of how many identical faults come before it in the list. So the same list
always gets the same ids (an idempotent create stays idempotent), a fault keeps its id when the
list around it changes, and two identical faults still differ.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from sandboxd.core.fault_spec import FaultSpec

FAULT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""Letters, digits, `.`, `_` and `-`: a token, so it fits the `sandboxd-fault` header as is."""
HTTP_METHOD = re.compile(r"^[A-Z]{1,20}$")
GLOB_CHARS = re.compile(r"^[!-~]{1,256}$")  # printable ASCII, no spaces
TOOLS_CALL = "tools/call"
TOOLS_LIST = "tools/list"


class FaultKind(StrEnum):
    LATENCY = "latency"
    HTTP_ERROR = "http_error"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    RESET = "reset"
    SLOW_STREAM = "slow_stream"
    MALFORMED = "malformed"
    EMPTY_RESULT = "empty_result"
    DROP_FIELDS = "drop_fields"
    JSONRPC_ERROR = "jsonrpc_error"
    TOOL_ERROR = "tool_error"
    INJECT = "inject"
    HIDE_TOOL = "hide_tool"


MCP_ONLY = frozenset(
    {FaultKind.JSONRPC_ERROR, FaultKind.TOOL_ERROR, FaultKind.INJECT, FaultKind.HIDE_TOOL}
)
PARAMETERS = ("latencyMs", "status", "code", "message", "text", "fields", "retryAfter",
              "chunkDelayMs")  # fmt: skip
"""The kind-specific fields; matchers and schedules apply to every kind."""
TAKES: Mapping[FaultKind, tuple[frozenset[str], frozenset[str]]] = {
    # kind: (required, optional) parameters; any other parameter is refused
    FaultKind.LATENCY: (frozenset({"latencyMs"}), frozenset()),
    FaultKind.HTTP_ERROR: (frozenset(), frozenset({"status"})),
    FaultKind.RATE_LIMIT: (frozenset(), frozenset({"retryAfter"})),
    FaultKind.TIMEOUT: (frozenset(), frozenset({"latencyMs"})),
    FaultKind.RESET: (frozenset(), frozenset()),
    FaultKind.SLOW_STREAM: (frozenset({"chunkDelayMs"}), frozenset()),
    FaultKind.MALFORMED: (frozenset(), frozenset()),
    FaultKind.EMPTY_RESULT: (frozenset(), frozenset()),
    FaultKind.DROP_FIELDS: (frozenset({"fields"}), frozenset()),
    FaultKind.JSONRPC_ERROR: (frozenset(), frozenset({"code", "message"})),
    FaultKind.TOOL_ERROR: (frozenset(), frozenset({"message"})),
    FaultKind.INJECT: (frozenset({"text"}), frozenset()),
    FaultKind.HIDE_TOOL: (frozenset(), frozenset()),
}


def problem(at: Sequence[int | str], message: str) -> PydanticCustomError:
    """A validation error placed below the model being validated: `at` is appended to its
    location (see `sandboxd.core.errors.describe`), so the 422 names the field itself."""
    return PydanticCustomError("fault", "{message}", {"message": message, "at": tuple(at)})


def check_glob(value: str) -> str:
    if not GLOB_CHARS.fullmatch(value):
        raise ValueError("a glob is 1-256 printable ASCII characters without spaces")
    rest = value
    while "[" in rest:
        rest = rest[rest.index("[") + 1 :]
        body = rest[1:] if rest.startswith("!") else rest
        end = body.find("]", 1)  # a `]` right after `[` or `[!` is a member, as in fnmatch
        if end < 0:
            raise ValueError(
                f"{value!r}: a '[' opens a class that no ']' closes (write [[] for a literal '[')"
            )
        rest = body[end + 1 :]
    return value


def check_kind(fault: FaultSpec) -> None:
    """The parameters `fault.kind` needs and takes, and the matchers that fit it."""
    wire = fault.as_json()  # (once: per parameter, it was most of the cost of reading rows)
    given = {name for name in PARAMETERS if wire.get(name) is not None}
    required, optional = TAKES[fault.kind]
    missing, extra = sorted(required - given), sorted(given - required - optional)
    if missing:
        raise problem([missing[0]], f"kind {fault.kind} needs {missing[0]}")
    if extra:
        takes = ", ".join(sorted(required | optional)) or "no parameters"
        raise problem([extra[0]], f"kind {fault.kind} does not use {extra[0]} (it takes: {takes})")
    if fault.kind is FaultKind.HIDE_TOOL and fault.tool is None:
        raise problem(["tool"], "kind hide_tool needs tool: a glob of the tools to hide")


def default_method(data: Any) -> Any:
    """Store `method` resolved: with a `tool`, `tools/call` (`tools/list` for `hide_tool`,
    which filters the listing); without one, absent (any method). The router reads it as is."""
    if isinstance(data, dict) and data.get("tool") is not None and data.get("method") is None:
        method = TOOLS_LIST if data.get("kind") == FaultKind.HIDE_TOOL else TOOLS_CALL
        return {**data, "method": method}
    return data


def check_method(fault: FaultSpec) -> None:
    """`tool` matches `tools/call`'s params.name (or, for hide_tool, the names in `tools/list`):
    a `method` glob that cannot match that method would make the fault never fire."""
    if fault.tool is None or fault.method is None:
        return
    wanted = TOOLS_LIST if fault.kind is FaultKind.HIDE_TOOL else TOOLS_CALL
    if not _glob(fault.method).fullmatch(wanted):
        raise problem(["method"], f"with tool given, method must match {wanted!r}")


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def with_ids(faults: list[FaultSpec]) -> list[FaultSpec]:
    """Every fault with an id: given ones kept (each at most once), the others generated."""
    taken: dict[str, int] = {}
    for index, fault in enumerate(faults):
        if fault.id is None:
            continue
        if fault.id in taken:
            raise problem(
                [index, "id"], f"id {fault.id!r} is already used by faults[{taken[fault.id]}]"
            )
        taken[fault.id] = index
    seen: dict[str, int] = {}
    out = []
    for fault in faults:
        if fault.id is None:
            content = json.dumps(fault.as_json(), sort_keys=True)
            fault = fault.model_copy(update={"id": _new_id(content, seen, taken)})
        out.append(fault)
    return out


def _new_id(content: str, seen: dict[str, int], taken: Mapping[str, int]) -> str:
    while True:
        occurrence = seen.get(content, 0)
        seen[content] = occurrence + 1
        digest = hashlib.sha256(f"{content}#{occurrence}".encode()).hexdigest()[:8]
        if f"f-{digest}" not in taken:
            return f"f-{digest}"


def catalog_problems(
    faults: Sequence[FaultSpec], *, protocols: Mapping[str, str], at: str = "faults"
) -> list[dict[str, str]]:
    """What the catalog refuses: an unknown service, a kind or a matcher for the other
    protocol. `protocols`: service name → `http` or `mcp`. One `{field, problem}` each."""
    problems = []
    for index, fault in enumerate(faults):
        where = f"{at}[{index}]"
        protocol = protocols.get(fault.service)
        if protocol is None:
            known = ", ".join(sorted(protocols)) or "none"
            message = f"{fault.service!r} is not in the catalog (services: {known})"
            problems.append({"field": f"{where}.service", "problem": message})
            continue
        for field, why in _misfits(fault, protocol):
            problems.append({"field": f"{where}.{field}", "problem": why})
    return problems


def _misfits(fault: FaultSpec, protocol: str) -> list[tuple[str, str]]:
    other = "mcp" if protocol == "http" else "http"
    misfits = []
    if protocol == "http" and fault.kind in MCP_ONLY:
        misfits.append(("kind", f"{fault.kind} applies to mcp services; {fault.service} is http"))
    for field in ("tool", "method") if protocol == "http" else ("path", "httpMethod"):
        if fault.as_json().get(field) is not None:
            misfits.append(
                (field, f"{field} matches {other} requests; {fault.service} is {protocol}")
            )
    return misfits


def changes(old: Sequence[FaultSpec], new: Sequence[FaultSpec]) -> str | None:
    """What a change of the list did, by id (`added a, b; removed c; changed d`), for the
    `FaultsChanged` event; None when the list is the same."""
    if list(old) == list(new):
        return None
    before, after = {f.id: f for f in old}, {f.id: f for f in new}
    parts = [
        (verb, [str(i) for i in ids])
        for verb, ids in (
            ("added", [i for i in after if i not in before]),
            ("removed", [i for i in before if i not in after]),
            ("changed", [i for i in after if i in before and after[i] != before[i]]),
        )
    ]
    said = "; ".join(f"{verb} {', '.join(ids)}" for verb, ids in parts if ids)
    return f"faults {said}" if said else "faults reordered"
