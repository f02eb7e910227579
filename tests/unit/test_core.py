"""The pure core: durations, names, specs, the catalog and the route table."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pytest
from pydantic import ValidationError

from sandboxd.core.catalog import CatalogError, load_catalog, parse_catalog
from sandboxd.core.clock import rfc3339
from sandboxd.core.duration import format_duration, parse_duration
from sandboxd.core.fault_spec import FaultSpec
from sandboxd.core.naming import is_sandbox_name, new_routing_key, service_url_env
from sandboxd.core.routes import RoutedSandbox, build_route_table
from sandboxd.core.spec import SandboxPatch, SandboxSpec, agent_labels


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("3d", 259200), ("45", 45), (" 5m ", 300), (7, 7)],
)
def test_durations_parse(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "-1h", "0s", "1.5h", "h", "1h30m", True])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text", ["\u0662h", "\uff12h", "\u0663\u0660m", "1\u00a0h", "1h\n", 10**400, "9" * 13, -5]
)
def test_only_ascii_digits_and_spaces_make_a_duration(text: str | int) -> None:
    """Arabic-Indic and full-width digits, a no-break space, a newline: not durations."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


MAX_SECONDS = 36_500 * 86_400  # about a hundred years


@pytest.mark.parametrize("seconds", [10**9, MAX_SECONDS, MAX_SECONDS - 1, 86400 * 999])
def test_every_duration_parsed_spells_back_and_parses_again(seconds: int) -> None:
    assert parse_duration(format_duration(parse_duration(seconds))) == seconds


def test_a_duration_over_a_hundred_years_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="at most 36500d"):
        parse_duration(MAX_SECONDS + 1)
    with pytest.raises(ValueError, match="at most 36500d"):
        parse_duration("999999999999d")


def test_durations_format_to_the_shortest_exact_unit() -> None:
    assert [format_duration(s) for s in (7200, 5400, 61, 86400)] == ["2h", "90m", "61s", "1d"]


@pytest.mark.parametrize(
    ("name", "valid"),
    [("pr-42", True), ("a", True), ("a" * 40, True), ("a" * 41, False), ("PR-42", False),
     ("-pr", False), ("pr-", False), ("pr_42", False), ("pr.42", False), ("", False)],
)  # fmt: skip
def test_sandbox_names_are_short_dns_labels(name: str, valid: bool) -> None:
    assert is_sandbox_name(name) is valid


def test_routing_keys_are_opaque_and_unique() -> None:
    keys = {new_routing_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(len(k) >= 10 and k.isalnum() and k.islower() | k.isdigit() for k in keys)


def test_service_url_env_names() -> None:
    assert service_url_env("cluster-mcp") == "SANDBOXD_SERVICE_CLUSTER_MCP_URL"


def test_spec_normalises_ttl_and_compares_canonically() -> None:
    a = SandboxSpec.model_validate({"name": "pr-1", "ttl": "120m"})
    b = SandboxSpec.model_validate({"name": "pr-1", "ttl": 7200})
    assert a.ttl == "2h" and a.canonical() == b.canonical()
    assert SandboxSpec.model_validate({"name": "pr-1"}).ttl is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "forks": [{"service": "a"}, {"service": "a"}]}, "forks"),
        ({"name": "x", "labels": {"-bad": "v"}}, "labels"),
        ({"name": "x", "labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
        ({"name": "x", "forks": [{"service": "a", "env": {"1X": "v"}}]}, "forks.0.env"),
        ({"name": "x", "forks": [{"service": "a", "command": []}]}, "forks.0.command"),
        ({"name": "x", "forks": [{"service": "a", "health": "health"}]}, "forks.0.health"),
        ({"name": "x", "forks": [{"service": "Not_DNS"}]}, "forks.0.service"),
        ({"name": "x", "faults": [{"service": "a", "kind": "explode"}]}, "faults.0.kind"),
        ({"name": "x", "faults": [{"service": "a", "kind": "latency", "probability": 2}]},
         "faults.0.probability"),
        ({"name": "x", "surprise": 1}, "surprise"),
    ],
)  # fmt: skip
def test_spec_refuses_bad_fields_by_name(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        SandboxSpec.model_validate(body)
    assert field in {".".join(str(p) for p in err["loc"]) for err in e.value.errors()}


def test_agent_version_becomes_labels() -> None:
    spec = SandboxSpec.model_validate(
        {
            "name": "x",
            "agent": {
                "promptVersion": "v2",
                "modelVersion": "m-1",
                "tools": {"cluster-mcp": "2.0.0"},
            },
        }
    )
    assert agent_labels(spec.agent) == {
        "sandboxd.dev/prompt-version": "v2",
        "sandboxd.dev/model-version": "m-1",
        "sandboxd.dev/tool.cluster-mcp": "2.0.0",
    }


@pytest.mark.parametrize(
    ("agent", "problem"),
    [
        ({"tools": {f"t{i}": "1" for i in range(65)}}, "at most 64 items"),
        ({"tools": {"a b": "1"}}, "becomes the label key"),
        ({"tools": {"a\nb": "1"}}, "becomes the label key"),
        ({"tools": {"x" * 46: "1"}}, "becomes the label key"),
        ({"tools": {"ok": "1\x1b[31m"}}, "no control characters"),
        ({"promptVersion": "v2\x1b]0;pwned\x07"}, "no control characters"),
        ({"modelVersion": "m\x9b31m"}, "no control characters"),
        ({"modelVersion": "m" * 257}, "at most 256 characters"),
    ],
)
def test_agent_fields_are_held_to_the_rules_of_labels(
    agent: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError) as e:
        SandboxSpec.model_validate({"name": "x", "agent": agent})
    assert [err["loc"][0] for err in e.value.errors()] == ["agent"]
    assert problem in str(e.value)


def test_the_agents_labels_count_towards_the_limit() -> None:
    labels = {f"k{i}": "v" for i in range(60)}
    tools = {f"tool{i}": "1.0" for i in range(3)}
    fits = SandboxSpec.model_validate(
        {"name": "x", "labels": labels, "agent": {"promptVersion": "p", "tools": tools}}
    )
    assert len(fits.labels) + len(agent_labels(fits.agent)) == 64
    with pytest.raises(ValidationError, match="over the limit of 64 labels") as e:
        SandboxSpec.model_validate(
            {
                "name": "x",
                "labels": labels,
                "agent": {"promptVersion": "p", "modelVersion": "m", "tools": tools},
            }
        )
    assert e.value.errors()[0]["loc"] == ("agent",)


def test_a_long_tool_name_is_never_cut_into_another_tools_label() -> None:
    long = "t" * 45
    spec = SandboxSpec.model_validate({"name": "x", "agent": {"tools": {long: "1"}}})
    assert agent_labels(spec.agent) == {f"sandboxd.dev/tool.{long}": "1"}
    assert len(f"sandboxd.dev/tool.{long}") == 63


@pytest.mark.parametrize("field", ["code", "nth", "times"])
def test_fault_numbers_are_bounded(field: str) -> None:
    fault = {"service": "a", "kind": "jsonrpc_error", field: 10**30}
    with pytest.raises(ValidationError) as e:
        SandboxSpec.model_validate({"name": "x", "faults": [fault]})
    assert e.value.errors()[0]["loc"] == ("faults", 0, field)


def test_an_empty_patch_is_refused() -> None:
    with pytest.raises(ValidationError, match="nothing to change"):
        SandboxPatch.model_validate({})


CATALOG = """
baggageKey: sandbox
services:
  - name: echo
    protocol: http
    routerPort: 7301
    baseline:
      url: http://127.0.0.1:7401
      command: ["python3", "-m", "http.server", "7401"]
      env: {}
      health: /
"""


def test_catalog_loads(tmp_path: Path) -> None:
    path = tmp_path / "sandboxd.yaml"
    path.write_text(CATALOG)
    catalog = load_catalog(path)
    echo = catalog.get("echo")
    assert echo is not None and echo.router_port == 7301 and echo.baseline.health == "/"
    assert catalog.baggage_key == "sandbox"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services: [", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        (CATALOG.replace("protocol: http", "protocol: grpc"), "services[0].protocol"),
        (CATALOG.replace("routerPort: 7301", "routerPort: 0"), "services[0].routerPort"),
        (
            CATALOG.replace("url: http://127.0.0.1:7401", "url: 127.0.0.1"),
            "services[0].baseline.url",
        ),
        (CATALOG.replace("health: /", "helth: /"), "services[0].baseline.helth"),
        (CATALOG + CATALOG.split("services:\n")[1], "two services share the name echo"),
        (CATALOG.replace("baggageKey: sandbox", "baggageKey: 'a b'"), "baggageKey"),
    ],
)
def test_catalog_errors_name_file_field_and_problem(text: str, expected: str) -> None:
    with pytest.raises(CatalogError) as e:
        parse_catalog(text, source="/etc/sandboxd.yaml")
    assert str(e.value).startswith("/etc/sandboxd.yaml: ")
    assert expected in str(e.value)


LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}' if prev else 'lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LAUGHS + "services: [{name: a, baseline: {url: 'http://x', command: *i}}]\n",
         "more than 200000 values once YAML aliases are expanded"),
        ("services: " + "[" * 1000 + "]" * 1000 + "\n", "nested more than 64 levels deep"),
    ],
)  # fmt: skip
def test_a_catalog_alias_bomb_or_deep_nesting_is_a_catalog_error(text: str, expected: str) -> None:
    """Refused while reading, before validation walks 9**9 strings or recursion runs out."""
    with pytest.raises(CatalogError, match=expected) as e:
        parse_catalog(text, source="/etc/sandboxd.yaml")
    assert str(e.value).startswith("/etc/sandboxd.yaml: ")


def test_a_catalog_may_still_share_blocks_with_aliases() -> None:
    text = (
        CATALOG.replace("env: {}", "env: &shared {A: '1'}")
        + "  - name: other\n    baseline: {url: 'http://127.0.0.1:1', env: *shared}\n"
    )
    catalog = parse_catalog(text, source="t")
    other = catalog.get("other")
    assert other is not None and other.baseline.env == {"A": "1"}


def test_missing_catalog_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        load_catalog(tmp_path / "nope.yaml")


def test_route_table_is_keyed_by_routing_key_with_a_content_etag() -> None:
    catalog = parse_catalog(CATALOG, source="t")
    a = RoutedSandbox("pr-1", "key1", {"echo": "http://127.0.0.1:5000"})
    b = RoutedSandbox("pr-2", "key2", {})
    table = build_route_table(catalog=catalog, sandboxes=[a, b])
    import json

    body = json.loads(table.body)
    assert body["routes"]["key1"] == {
        "sandbox": "pr-1",
        "forks": {"echo": "http://127.0.0.1:5000"},
        "faults": [],
        "rev": body["routes"]["key1"]["rev"],
    }
    # `rev` is a digest of the rest of the entry: the same content, the same rev
    again = json.loads(build_route_table(catalog=catalog, sandboxes=[a]).body)
    moved = RoutedSandbox("pr-1", "key1", {"echo": "http://127.0.0.1:5001"})
    other = json.loads(build_route_table(catalog=catalog, sandboxes=[moved]).body)
    assert re.fullmatch(r"[0-9a-f]{24}", body["routes"]["key1"]["rev"])
    assert again["routes"]["key1"]["rev"] == body["routes"]["key1"]["rev"]
    assert other["routes"]["key1"]["rev"] != body["routes"]["key1"]["rev"]
    assert body["routes"]["key2"]["rev"] != body["routes"]["key1"]["rev"]
    assert body["services"][0] == {
        "name": "echo",
        "protocol": "http",
        "routerPort": 7301,
        "baseline": "http://127.0.0.1:7401",
    }
    assert table.etag == build_route_table(catalog=catalog, sandboxes=[b, a]).etag
    assert table.etag != build_route_table(catalog=catalog, sandboxes=[a]).etag
    assert body["version"] == table.etag.strip('"')


def test_route_table_gives_a_sandboxs_faults_in_their_wire_form() -> None:
    """As the spec stores them: camelCase, unset fields left out, and always an id."""
    fault = FaultSpec.model_validate({"service": "echo", "kind": "latency", "latencyMs": 5})
    table = build_route_table(
        catalog=parse_catalog(CATALOG, source="t"),
        sandboxes=[RoutedSandbox("pr-1", "key1", {}, (fault,))],
    )
    faults = json.loads(table.body)["routes"]["key1"]["faults"]
    assert faults == [
        {"id": faults[0]["id"], "service": "echo", "kind": "latency", "latencyMs": 5,
         "probability": 1.0}
    ]  # fmt: skip
    assert re.fullmatch(r"f-[0-9a-f]{8}", faults[0]["id"])


@pytest.mark.parametrize(
    ("moment", "timespec", "text"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 678901), "milliseconds", "2026-01-02T03:04:05.678Z"),
        (datetime(2026, 1, 2, 3, 4, 5), "milliseconds", "2026-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 678901), "seconds", "2026-01-02T03:04:05Z"),
        (
            datetime(2026, 1, 2, 5, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
            "milliseconds",
            "2026-01-02T03:04:05.678Z",
        ),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "seconds", "2026-01-02T03:04:05Z"),
    ],
)
def test_rfc3339_is_utc_with_a_z_to_the_precision_asked(
    moment: datetime, timespec: Literal["seconds", "milliseconds"], text: str
) -> None:
    """Naive times are the store's UTC; the API shows milliseconds, Kubernetes seconds."""
    assert rfc3339(moment, timespec=timespec) == text
