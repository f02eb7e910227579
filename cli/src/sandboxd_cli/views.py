"""How sandboxes, events and the "ready" summary look in `-o table`. Pure functions of API objects.

The API's objects are read defensively (`.get`): a field a newer server drops or renames should
show as `-`, not crash the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sandboxd_cli.render import labels, relative, table, text, timestamp, when

Json = Mapping[str, Any]


def forks_of(sandbox: Json) -> list[Json]:
    forks = sandbox.get("forks")
    return [f for f in forks if isinstance(f, Mapping)] if isinstance(forks, list) else []


def fork_states(sandbox: Json) -> str:
    """`echo=Ready, mcp=Starting`, or `-` without forks."""
    states = [f"{text(f.get('service'))}={text(f.get('phase'))}" for f in forks_of(sandbox)]
    return ", ".join(states) or "-"


def sandbox_list(items: Sequence[Json], *, now: datetime) -> str:
    rows = [
        [
            text(item.get("name")),
            text(item.get("phase")),
            ",".join(text(f.get("service")) for f in forks_of(item)) or "-",
            relative(item.get("expiresAt"), now=now),
            labels(item.get("labels")),
        ]
        for item in items
    ]
    return table(["NAME", "PHASE", "FORKS", "EXPIRES", "LABELS"], rows)


def link(sandbox: Json) -> str:
    links = sandbox.get("links")
    if not isinstance(links, Mapping):
        return "-"
    return text(links.get("web") or links.get("self"))


def details(sandbox: Json, *, now: datetime) -> str:
    fields = [
        ("Name", text(sandbox.get("name"))),
        ("Phase", text(sandbox.get("phase"))),
        ("Reason", text(sandbox.get("reason"))),
        ("Message", text(sandbox.get("message"))),
        ("Routing key", text(sandbox.get("routingKey"))),
        ("Baggage", text(sandbox.get("baggage"))),
        ("Created", timestamp(sandbox.get("createdAt"))),
        ("Expires", when(sandbox.get("expiresAt"), now=now)),
        ("Labels", labels(sandbox.get("labels"))),
    ]
    links = sandbox.get("links")
    if isinstance(links, Mapping):
        fields += [(_link_label(key), text(value)) for key, value in links.items()]
    width = max(len(label) for label, _ in fields) + 1
    lines = [f"{(label + ':').ljust(width)} {value}" for label, value in fields]
    return "\n".join([*lines, "Forks:", _indent(fork_table(sandbox))])


def fork_table(sandbox: Json) -> str:
    rows = [
        [
            text(f.get("service")),
            text(f.get("phase")),
            text(f.get("upstream")),
            text(f.get("message")),
        ]
        for f in forks_of(sandbox)
    ]
    if not rows:
        return "(none: every request goes to the baseline)"
    return table(["SERVICE", "PHASE", "UPSTREAM", "MESSAGE"], rows)


def _indent(block: str) -> str:
    return "\n".join(f"  {line}" for line in block.splitlines())


def event_table(items: Sequence[Json]) -> str:
    rows = [
        [
            timestamp(item.get("time")),
            text(item.get("type")),
            text(item.get("reason")),
            text(item.get("message")),
        ]
        for item in items
    ]
    return table(["TIME", "TYPE", "REASON", "MESSAGE"], rows)


def progress(sandbox: Json) -> str:
    """One line of `up --wait` progress: phase, reason and each fork's state."""
    parts = [f"{text(sandbox.get('name'))}: {text(sandbox.get('phase'))}"]
    if sandbox.get("reason"):
        parts.append(f"({text(sandbox.get('reason'))})")
    if forks_of(sandbox):
        parts.append(f"forks: {fork_states(sandbox)}")
    return " ".join(parts)


def try_url(sandbox: Json, services: Json) -> str | None:
    """The router address of the first forked service, else of the first catalog service."""
    catalog = [s for s in services.get("items") or [] if isinstance(s, Mapping)]
    forked = [f.get("service") for f in forks_of(sandbox)]
    chosen = next((s for s in catalog if forked and s.get("name") == forked[0]), None)
    chosen = chosen or (catalog[0] if catalog else None)
    if chosen is None:
        return None
    port = chosen.get("routerPort")
    if isinstance(port, int):
        return f"http://127.0.0.1:{port}/"
    url = chosen.get("routerUrl")
    return url if isinstance(url, str) and url else None


def summary(sandbox: Json, *, services: Json | None, now: datetime) -> str:
    """What `up` prints: the key, the exact header line, a curl to paste, expiry and link.

    The header and the curl command stand alone on their lines so they can be copied whole.
    """
    baggage = text(sandbox.get("baggage"))
    lines = [
        f"Sandbox {text(sandbox.get('name'))} is {text(sandbox.get('phase'))}.",
        f"  routing key: {text(sandbox.get('routingKey'))}",
        f"  expires:     {when(sandbox.get('expiresAt'), now=now)}",
        f"  link:        {link(sandbox)}",
        "",
        "Send this header to reach the sandbox's forks:",
        f"baggage: {baggage}",
    ]
    url = try_url(sandbox, services) if services is not None else None
    if url:
        lines += ["", "Try it:", f"curl -H 'baggage: {baggage}' {url}"]
    return "\n".join(lines)


def stored_faults(sandbox: Json) -> list[dict[str, Any]]:
    """The faults as the spec stores them (no counts): what a PATCH of the list sends back."""
    spec = sandbox.get("spec")
    faults = spec.get("faults") if isinstance(spec, Mapping) else None
    return [dict(f) for f in faults if isinstance(f, Mapping)] if isinstance(faults, list) else []


_MATCHERS = ("tool", "method", "path", "httpMethod")
_SCHEDULE = ("probability", "seed", "nth", "after", "times")


def fault_table(items: Sequence[Json]) -> str:
    """One row per fault, in the order they apply, with its counts: UNREAD are requests whose
    body was too large to read the JSON-RPC method the fault needs, UNREWRITTEN firings whose
    response was too large to rewrite (passed through as it came)."""
    rows = [
        [
            text(item.get("id")),
            text(item.get("service")),
            text(item.get("kind")),
            _pairs(item, _MATCHERS) or "any request",
            _pairs(item, _SCHEDULE, skip={"probability": 1.0}) or "always",
            text(item.get("matched")),
            text(item.get("injected")),
            text(item.get("unread")),
            text(item.get("unrewritten")),
        ]
        for item in items
    ]
    if not rows:
        return "(no faults)"
    headers = ["ID", "SERVICE", "KIND", "MATCH", "SCHEDULE"]
    headers += ["MATCHED", "INJECTED", "UNREAD", "UNREWRITTEN"]
    return table(headers, rows)


def _pairs(item: Json, keys: Sequence[str], *, skip: Mapping[str, object] = {}) -> str:
    shown = [(k, item.get(k)) for k in keys if item.get(k) is not None]
    return " ".join(f"{k}={text(v)}" for k, v in shown if skip.get(k) != v)


def _link_label(key: str) -> str:
    """`preview:<service>` links (the router's preview links) read as "Preview (<service>)"."""
    service = key.removeprefix("preview:")
    return f"Preview ({service})" if service != key else f"Link ({key})"
