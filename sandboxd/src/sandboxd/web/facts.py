"""What a sandbox's page shows, read with the same functions the API answers with: the
sandbox as `GET /v1/sandboxes/{name}` shows it, the router URLs of `GET /v1/services`, the fork
logs of `/logs/{service}`, the figures of `/metrics`, the records of `/requests` and
`/traces`, the event log of `/events`."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandboxd.api.deps import AppState
from sandboxd.api.observe import metrics_of, recent_requests, recent_traces
from sandboxd.api.sandboxes import views
from sandboxd.api.schemas import EventOut, MetricsOut, SandboxOut
from sandboxd.api.system import router_url
from sandboxd.api.views import event_view
from sandboxd.core.records import ForkRecord
from sandboxd.core.signals import Trace
from sandboxd.core.spec import AgentVersion
from sandboxd.errors import NotFound
from sandboxd.store.tables import SandboxRow

LOG_LINES = 20
MAX_LOG_CHARS = 8192
RECENT_REQUESTS = 20
RECENT_TRACES = 10
RECENT_EVENTS = 50
_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
_PR = re.compile(r"^[0-9]{1,10}$")
_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")


@dataclass(frozen=True, slots=True)
class GitHub:
    """The pull request and commit, linked only when the labels are well formed (a label is
    free text: it must not make a link to anywhere else)."""

    repo: str | None
    pr: str | None
    sha: str | None
    pr_url: str | None
    commit_url: str | None


@dataclass(frozen=True, slots=True)
class Fork:
    record: ForkRecord
    log: str | None
    """The last lines of its output; None when there is none (`no_log` says why)."""
    no_log: str


@dataclass(frozen=True, slots=True)
class Reach:
    """How to reach one service with this sandbox's key."""

    service: str
    protocol: str
    url: str
    curl: str
    preview: str | None = None
    """The service's preview link: it routes the browser that opens it to this sandbox."""


@dataclass(frozen=True, slots=True)
class Facts:
    sandbox: SandboxOut
    agent: AgentVersion | None
    github: GitHub
    forks: list[Fork]
    reach: list[Reach]
    mcp_config: str | None
    metrics: MetricsOut | None
    requests: Sequence[Mapping[str, Any]]
    traces: list[Trace]
    events: list[EventOut]


def github(labels: Mapping[str, str]) -> GitHub:
    repo, pr, sha = labels.get("github.repo"), labels.get("github.pr"), labels.get("github.sha")
    base = f"https://github.com/{repo}" if repo and _REPO.fullmatch(repo) else None
    pr_url = f"{base}/pull/{pr}" if base and pr and _PR.fullmatch(pr) else None
    commit_url = f"{base}/commit/{sha}" if base and sha and _SHA.fullmatch(sha) else None
    return GitHub(repo, pr, sha, pr_url, commit_url)


def curl_line(url: str, baggage: str) -> str:
    return f"curl -H {shlex.quote('baggage: ' + baggage)} {shlex.quote(url + '/')}"


def mcp_config(reach: Sequence[Reach], baggage: str) -> str | None:
    """An MCP client's server entries (the `mcpServers` shape most clients read), as the pull
    request's comment gives them."""
    servers = {
        r.service: {"type": "http", "url": r.url, "headers": {"baggage": baggage}}
        for r in reach
        if r.protocol == "mcp"
    }
    return json.dumps({"mcpServers": servers}, indent=2) if servers else None


async def gather(state: AppState, row: SandboxRow) -> Facts:
    """Everything the page of the live sandbox `row` shows."""
    (sandbox,) = await views(state, [row])
    reach = [
        Reach(
            s.name,
            s.protocol,
            url,
            curl_line(url, sandbox.baggage),
            sandbox.links.get(f"preview:{s.name}"),
        )
        for s in state.catalog.services
        if (url := router_url(state.settings, s)) is not None
    ]
    try:
        metrics: MetricsOut | None = await metrics_of(state, row.name, allow=lambda _: None)
    except NotFound:
        metrics = None  # deleted meanwhile
    events = await state.store.events(row.name, uid=row.uid)
    return Facts(
        sandbox=sandbox,
        agent=row.spec.agent,
        github=github(row.labels),
        forks=[await _fork(state, row.name, f) for f in row.forks],
        reach=reach,
        mcp_config=mcp_config(reach, sandbox.baggage),
        metrics=metrics,
        requests=await recent_requests(state, row, limit=RECENT_REQUESTS),
        traces=await recent_traces(state, row, limit=RECENT_TRACES),
        events=[event_view(e) for e in events[-RECENT_EVENTS:]][::-1],
    )


async def _fork(state: AppState, name: str, record: ForkRecord) -> Fork:
    chunk = await state.logs.read_log(name, record.service, offset=None, tail=LOG_LINES)
    text = None if chunk is None else chunk.data.decode("utf-8", "replace")[-MAX_LOG_CHARS:]
    return Fork(record, text, state.logs.no_log(name, record.service))
