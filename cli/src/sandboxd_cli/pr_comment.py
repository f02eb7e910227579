"""The pull request's sandbox comment: what it says, and which existing comment is it.

Exactly one comment per sandbox lives on a PR. It is found again by a hidden marker, an HTML
comment GitHub does not show, that ends the body and records which run wrote it: the PR's head
commit and the PR's `updated_at` from that run's event. Only comments by the action's own
author count (`github-actions[bot]` for the job's token): anyone may write a comment that ends
like ours. A run whose event is older than the comment's leaves the comment (and the sandbox)
alone, so a re-run of an old workflow — a push's, or a `closed` one after a reopen — cannot roll
the sandbox or the comment back. When two runs race and both create a comment, the oldest
marked comment is kept and the others are deleted (`plan`).

The body is rendered from a Jinja2 template (`templates/github/comment.md.j2` by default; a
user's own can replace it). The marker is appended by this module, not by the template, so an
overriding template cannot lose it. A body never exceeds GitHub's 65,536 characters: forks are
left out from the end (the template is told how many) until it fits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from sandboxd_cli.errors import BadInput

LIMIT = 65_536
"""The most characters GitHub accepts in a comment's body."""
_MARKER = re.compile(
    r"<!-- sandboxd:comment sandbox=(?P<name>[a-z0-9-]{1,63}) head=(?P<head>[0-9a-f]{0,64}) "
    r"updated=(?P<updated>[0-9A-Za-z:.+-]{0,40}) -->\s*\Z"
)
"""The marker ends the body: one quoted inside the text (a fork's message) does not count."""
_CUT_NOTE = "\n\n… (cut to GitHub's comment limit)\n"


@dataclass(frozen=True)
class Stamp:
    """Which run wrote a comment: the sandbox, the PR's head commit and the PR's `updated_at`."""

    name: str
    head: str
    updated: str

    def marker(self) -> str:
        fields = f"sandbox={self.name} head={self.head} updated={self.updated}"
        return f"<!-- sandboxd:comment {fields} -->"

    def newer_than(self, other: Stamp) -> bool:
        """Whether this stamp is from a later event than `other` (the PR's `updated_at` moves
        on every event a run is for; a re-run of the same event has the same one)."""
        mine, theirs = _instant(self.updated), _instant(other.updated)
        return mine is not None and theirs is not None and mine > theirs


def stamp_of(body: str) -> Stamp | None:
    found = _MARKER.search(body)
    return Stamp(found["name"], found["head"], found["updated"]) if found else None


def _instant(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# which comment ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Marked:
    id: int
    stamp: Stamp


@dataclass(frozen=True)
class Plan:
    keep: Marked | None
    """The comment to edit; None: there is none, create one."""
    extra: tuple[int, ...] = ()
    """Other comments of this sandbox (a race's leftovers), to delete."""

    def stale(self, run: Stamp) -> bool:
        """Whether the kept comment was written for a newer event than `run`'s."""
        return self.keep is not None and self.keep.stamp.newer_than(run)


AUTHOR = "github-actions[bot]"
"""Who writes the comment with a job's `GITHUB_TOKEN`."""


def marked(
    comments: Iterable[Mapping[str, Any]], name: str, *, author: str = AUTHOR
) -> list[Marked]:
    """`author`'s comments carrying this sandbox's marker, oldest (lowest id) first."""
    found = []
    for comment in comments:
        body, cid, user = comment.get("body"), comment.get("id"), comment.get("user")
        login = user.get("login") if isinstance(user, Mapping) else None
        stamp = stamp_of(body) if isinstance(body, str) and login == author else None
        if stamp is not None and stamp.name == name and isinstance(cid, int):
            found.append(Marked(cid, stamp))
    return sorted(found, key=lambda m: m.id)


def plan(comments: Iterable[Mapping[str, Any]], name: str, *, author: str = AUTHOR) -> Plan:
    found = marked(comments, name, author=author)
    if not found:
        return Plan(keep=None)
    return Plan(keep=found[0], extra=tuple(m.id for m in found[1:]))


# what it says ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fork:
    service: str
    phase: str
    message: str = ""
    protocol: str = "http"
    url: str = ""
    """The service's address on the router ("" when the router has no public address)."""
    preview: str = ""
    """A preview link: opened in a browser, it routes that browser to the sandbox."""


@dataclass(frozen=True)
class Facts:
    """Everything a comment can show; the template picks."""

    name: str
    state: str
    """`Ready`, `Failed`, `Starting` (not Ready in time), `Deleted` or the phase."""
    head: str
    commit_url: str = ""
    reason: str = ""
    message: str = ""
    page_url: str = ""
    routing_key: str = ""
    baggage: str = ""
    expires_at: str = ""
    deleted_at: str = ""
    forks: Sequence[Fork] = ()
    run_url: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def context(self, shown: int) -> dict[str, Any]:
        forks = list(self.forks[:shown])
        return {
            "name": self.name,
            "state": self.state,
            "head": self.head,
            "short_head": self.head[:7],
            "commit_url": self.commit_url,
            "reason": self.reason,
            "message": self.message,
            "page_url": self.page_url,
            "routing_key": self.routing_key,
            "baggage": self.baggage,
            "expires_at": self.expires_at,
            "deleted_at": self.deleted_at,
            "forks": forks,
            "forks_left_out": len(self.forks) - len(forks),
            "mcp_forks": [f for f in forks if f.protocol == "mcp" and f.url],
            "run_url": self.run_url,
            **self.extra,
        }


def load_template(path: Path) -> jinja2.Template:
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"cannot read the comment template {path}: {e.strerror or e}") from e
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise BadInput(f"comment template {path}, line {e.lineno}: {e.message}") from e


def render(template: jinja2.Template, facts: Facts, stamp: Stamp) -> str:
    """The comment's body: the template's text and the marker, at most `LIMIT` characters."""
    marker = "\n" + stamp.marker() + "\n"
    room = LIMIT - len(marker)
    low, high = 0, len(facts.forks)
    body = _text(template, facts, high)
    if len(body) > room:  # the most forks that fit (a body grows with its forks)
        while low < high:
            middle = (low + high + 1) // 2
            if len(_text(template, facts, middle)) <= room:
                low = middle
            else:
                high = middle - 1
        body = _text(template, facts, low)
    if len(body) > room:  # not even without forks: a huge message or template
        body = close_fences(body[: room - len(_CUT_NOTE) - 40]) + _CUT_NOTE
    return body.rstrip("\n") + marker


def _text(template: jinja2.Template, facts: Facts, shown: int) -> str:
    try:
        return template.render(facts.context(shown))
    except jinja2.TemplateError as e:
        raise BadInput(f"the comment template failed: {e}") from e


def _environment() -> jinja2.Environment:
    # Markdown, not HTML (GitHub sanitises the HTML in a comment): nothing is escaped
    # implicitly. `code` and `block` show any text verbatim (a server's message may hold
    # backticks or a closing fence).
    env = jinja2.Environment(
        autoescape=False,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["code"] = inline_code
    env.filters["block"] = code_block
    env.filters["cell"] = table_cell
    env.filters["json"] = lambda value: json.dumps(value, indent=2)
    env.globals["mcp_config"] = mcp_config
    return env


def inline_code(value: object) -> str:
    """`value` as inline code whatever backticks it holds (CommonMark: a longer fence)."""
    text = " ".join(str(value).splitlines())
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table_cell(value: object) -> str:
    """`value` inside a Markdown table's cell: one line, its pipes escaped (also in code)."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def close_fences(text: str) -> str:
    """`text` with a code block it leaves open closed, so what follows is not shown as code."""
    open_fence = ""
    for line in text.split("\n"):
        found = re.match(r" {0,3}(`{3,})", line)
        if found is None:
            continue
        fence = found.group(1)
        if not open_fence:
            open_fence = fence
        elif len(fence) >= len(open_fence) and not line.strip().strip("`"):
            open_fence = ""
    return f"{text}\n{open_fence}\n" if open_fence else text


def code_block(value: object, language: str = "") -> str:
    """`value` as a fenced block whatever fences it holds (CommonMark ends a line at LF, CR
    or CRLF: each is made a LF first, or a CR could close the block early)."""
    text = re.sub(r"\r\n?", "\n", str(value)).rstrip("\n")
    run = max((len(m) for m in re.findall(r"^\s*(`{3,})", text, re.M)), default=0)
    fence = "`" * max(3, run + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def mcp_config(forks: Sequence[Fork], baggage: str) -> str:
    """An MCP client's server entries (the `mcpServers` shape most clients read)."""
    servers = {
        f.service: {"type": "http", "url": f.url, "headers": {"baggage": baggage}} for f in forks
    }
    return json.dumps({"mcpServers": servers}, indent=2)
