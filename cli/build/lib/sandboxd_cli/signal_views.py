"""How a sandbox's signals look in `-o table`: metrics beside the baseline's, the verdicts of
the comparison, request records and trace trees. Pure functions of the API's objects, read
defensively (`.get`): a field a newer server drops shows as `-`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sandboxd_cli.render import table, text, timestamp

Json = Mapping[str, Any]
SIDES = ("sandbox", "baseline")


def items_of(value: object) -> list[Json]:
    return [i for i in value if isinstance(i, Mapping)] if isinstance(value, list) else []


def ms(value: object) -> str:
    """`0.412ms`, `12.3ms`, `1.52s`; `-` for no value."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if value >= 1000:
        return f"{value / 1000:.3g}s"
    return f"{value:.3g}ms" if value >= 1 else f"{value:.3f}ms"


def percent(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value * 100:.1f}%"


def metrics_table(body: Json) -> str:
    """One row per service and side: requests, errors, error rate, p50/p95/p99, faults."""
    rows = []
    for service in items_of(body.get("services")):
        for side in SIDES:
            figures = service.get(side)
            figures = figures if isinstance(figures, Mapping) else {}
            rows.append(
                [
                    text(service.get("service")) if side == "sandbox" else "",
                    side,
                    text(figures.get("requests")),
                    text(figures.get("errors")),
                    percent(figures.get("errorRate")),
                    ms(figures.get("p50Ms")),
                    ms(figures.get("p95Ms")),
                    ms(figures.get("p99Ms")),
                    text(figures.get("faultsInjected")),
                ]
            )
    if not rows:
        sandbox, window = text(body.get("sandbox")), text(body.get("window"))
        return f"(no traffic of sandbox {sandbox} in the last {window})"
    headers = ["SERVICE", "SIDE", "REQUESTS", "ERRORS", "ERROR RATE", "P50", "P95", "P99"]
    return table([*headers, "INJECTED"], rows) + _tools(body)


def _tools(body: Json) -> str:
    rows = []
    for service in items_of(body.get("services")):
        figures = service.get("sandbox")
        tools = items_of(figures.get("tools")) if isinstance(figures, Mapping) else []
        for tool in tools:
            rows.append(
                [
                    text(service.get("service")),
                    text(tool.get("tool")),
                    text(tool.get("calls")),
                    text(tool.get("jsonrpcErrors")),
                    text(tool.get("toolErrors")),
                ]
            )
    if not rows:
        return ""
    headers = ["SERVICE", "TOOL", "CALLS", "JSON-RPC ERRORS", "TOOL ERRORS"]
    return "\n\nMCP tools (the sandbox's traffic)\n" + table(headers, rows)


FIGURES = ("errorRate", "latency", "p99")


def compare_table(body: Json) -> str:
    """The verdict of each figure of each service, and the overall one."""
    summary = body.get("compare")
    summary = summary if isinstance(summary, Mapping) else {}
    rows = []
    for service in items_of(body.get("services")):
        compare = service.get("compare")
        if not isinstance(compare, Mapping):
            continue
        for figure in FIGURES:
            verdict = compare.get(figure)
            if isinstance(verdict, Mapping):
                rows.append(
                    [
                        text(service.get("service")),
                        figure,
                        text(verdict.get("verdict")),
                        _detail(figure, verdict),
                    ]
                )
    head = (
        f"compared with the baseline (alpha {text(summary.get('alpha'))}, effect "
        f"{percent(summary.get('effect'))}, at least {text(summary.get('minSamples'))} "
        "samples a side; injected faults "
        f"{'left out' if body.get('excludeInjected', True) else 'counted'})"
    )
    lines = [head]
    if rows:
        lines.append(table(["SERVICE", "FIGURE", "VERDICT", "DETAIL"], rows))
    lines.append(f"overall: {text(summary.get('overall'))}")
    return "\n".join(lines)


def _detail(figure: str, verdict: Json) -> str:
    reason = verdict.get("reason")
    if verdict.get("verdict") == "inconclusive" and reason:
        return text(reason)
    p = verdict.get("pValue")
    p_text = f", p={p:.3g}" if isinstance(p, int | float) and not isinstance(p, bool) else ""
    if figure == "errorRate":
        return f"{percent(verdict.get('sandbox'))} vs {percent(verdict.get('baseline'))}{p_text}"
    if figure == "latency":
        ratio = verdict.get("ratio")
        times = f" (x{ratio:.3g})" if isinstance(ratio, int | float) else ""
        return (
            f"median {ms(verdict.get('sandboxMedianMs'))} vs "
            f"{ms(verdict.get('baselineMedianMs'))}{times}{p_text}"
        )
    return (
        f"p99 {ms(verdict.get('sandboxMs', verdict.get('sandboxP99Ms')))} vs "
        f"{ms(verdict.get('baselineMs', verdict.get('baselineP99Ms')))}{p_text}"
    )


def regressions(body: Json) -> list[str]:
    """`service figure` for every regressed figure (empty: none)."""
    summary = body.get("compare")
    found = items_of(summary.get("regressed")) if isinstance(summary, Mapping) else []
    return [f"{text(r.get('service'))} {text(r.get('figure'))}" for r in found]


def requests_table(items: Sequence[Json]) -> str:
    rows = [
        [
            timestamp(_iso(item.get("start"))),
            text(item.get("service")),
            text(item.get("route")),
            text(item.get("method")),
            text(item.get("status") or "reset"),
            ms(item.get("durationMs")),
            text(item.get("error")),
            _faults(item),
            _call(item),
            text(item.get("traceId")),
        ]
        for item in items
    ]
    if not rows:
        return "(no requests)"
    headers = ["TIME", "SERVICE", "ROUTE", "METHOD", "STATUS", "DURATION", "ERROR", "FAULT"]
    return table([*headers, "MCP", "TRACE"], rows)


def _iso(value: object) -> object:
    """A record's `start` is epoch seconds on the wire and an ISO time in the API: both show."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat()
    return value


def _faults(item: Json) -> str:
    faults = items_of(item.get("faults"))
    return ",".join(f"{text(f.get('kind'))}:{text(f.get('id'))}" for f in faults) or "-"


def _call(item: Json) -> str:
    method, tool = item.get("rpcMethod"), item.get("tool")
    if not method:
        return "-"
    return f"{text(method)} {text(tool)}" if tool else text(method)


def traces_text(items: Sequence[Json]) -> str:
    """Each trace as a tree: one line per span, children indented under their parent."""
    if not items:
        return "(no traces)"
    blocks = []
    for trace in items:
        lines = [
            f"trace {text(trace.get('traceId'))}  {timestamp(trace.get('start'))}  "
            f"{ms(trace.get('durationMs'))}"
        ]
        spans = items_of(trace.get("spans"))
        for i, span in enumerate(spans):
            _span_lines(span, "", i == len(spans) - 1, lines, depth=0)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


MAX_DEPTH = 64  # a tree deeper than this (a server bug, or a cycle) is cut, not recursed into


def _span_lines(span: Json, indent: str, last: bool, lines: list[str], *, depth: int) -> None:
    branch = "└─ " if last else "├─ "
    lines.append(f"{indent}{branch}{_span_line(span)}")
    children = items_of(span.get("children"))
    if depth >= MAX_DEPTH:
        if children:
            lines.append(f"{indent}   └─ … ({len(children)} more, too deep to show)")
        return
    inner = indent + ("   " if last else "│  ")
    for i, child in enumerate(children):
        _span_lines(child, inner, i == len(children) - 1, lines, depth=depth + 1)


def _span_line(span: Json) -> str:
    parts = [
        text(span.get("name")),
        text(span.get("service")),
        text(span.get("route")),
        text(span.get("status") or "reset"),
        ms(span.get("durationMs")),
    ]
    error = span.get("error")
    if error:
        parts.append(f"error={text(error)}")
    attributes = span.get("attributes")
    attributes = attributes if isinstance(attributes, Mapping) else {}
    kind, fault = attributes.get("sandboxd.fault.kind"), attributes.get("sandboxd.fault.id")
    if kind:
        parts.append(f"fault={text(kind)}:{text(fault)}")
    parts.append(f"span {text(span.get('spanId'))}")
    return "  ".join(parts)
