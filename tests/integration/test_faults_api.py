"""Faults through the REST API: validated against the model and the catalog at every entry point
(a 422 naming the field, nothing stored changes), shown with their ids and counts, recorded as
`FaultsChanged` events, and published in the route table."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import snapshot

# The catalog (tests/conftest.py write_catalog): `echo` is http, `tools` is mcp.
BAD_FAULTS = [
    ({"service": "nope", "kind": "reset"}, "service", "not in the catalog"),
    ({"service": "echo", "kind": "explode"}, "kind", "Input should be"),
    ({"service": "echo", "kind": "jsonrpc_error"}, "kind", "applies to mcp services"),
    ({"service": "echo", "kind": "tool_error"}, "kind", "applies to mcp services"),
    ({"service": "echo", "kind": "inject", "text": "x"}, "kind", "applies to mcp services"),
    ({"service": "echo", "kind": "hide_tool", "tool": "x"}, "kind", "applies to mcp services"),
    ({"service": "echo", "kind": "reset", "tool": "x"}, "tool", "matches mcp requests"),
    ({"service": "tools", "kind": "reset", "path": "/x"}, "path", "matches http requests"),
    ({"service": "tools", "kind": "reset", "httpMethod": "GET"}, "httpMethod", "http requests"),
    ({"service": "tools", "kind": "reset", "tool": "[x"}, "tool", "no ']' closes"),
    ({"service": "tools", "kind": "latency"}, "latencyMs", "needs latencyMs"),
    ({"service": "tools", "kind": "inject"}, "text", "needs text"),
    ({"service": "tools", "kind": "reset", "status": 500}, "status", "does not use status"),
    ({"service": "tools", "kind": "latency", "latencyMs": -1}, "latencyMs", "greater than"),
    ({"service": "tools", "kind": "reset", "times": 0}, "times", "greater than"),
    ({"service": "tools", "kind": "reset", "probability": 1.5}, "probability", "less than"),
]
GOOD = {"service": "tools", "kind": "tool_error", "tool": "describe_*", "message": "down"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def stored(client: httpx.Client, name: str) -> dict[str, Any]:
    """The sandbox as stored, without what the reconciler may change meanwhile, and the events
    a change through the API records."""
    body = client.get(f"/v1/sandboxes/{name}").json()
    events = client.get(f"/v1/sandboxes/{name}/events").json()["items"]
    keep = ("uid", "spec", "faults", "labels", "expiresAt")
    mine = [e["message"] for e in events if e["reason"] in ("Updated", "FaultsChanged")]
    return {**{k: body[k] for k in keep}, "events": mine}


def reasons(client: httpx.Client, name: str) -> list[tuple[str, str]]:
    events = client.get(f"/v1/sandboxes/{name}/events").json()["items"]
    return [(e["reason"], e["message"]) for e in events if e["reason"] == "FaultsChanged"]


def check_refusal(response: httpx.Response, field: str, words: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["problems"][0]["field"] == field, body
    assert words in body["problems"][0]["problem"]
    assert field in body["message"]


@pytest.mark.parametrize(("fault", "field", "words"), BAD_FAULTS)
def test_a_create_with_a_bad_fault_is_refused_naming_it_and_stores_nothing(
    client: httpx.Client, fault: dict[str, Any], field: str, words: str
) -> None:
    before = snapshot(client)
    name = unique("badf")

    response = client.post("/v1/sandboxes", json={"name": name, "faults": [GOOD, fault]})

    check_refusal(response, f"faults[1].{field}", words)
    assert client.get(f"/v1/sandboxes/{name}").status_code == 404
    assert snapshot(client) == before


@pytest.mark.parametrize(("fault", "field", "words"), BAD_FAULTS)
def test_a_patch_with_a_bad_fault_is_refused_naming_it_and_changes_nothing(
    client: httpx.Client, fault: dict[str, Any], field: str, words: str
) -> None:
    name = unique("badp")
    assert client.post("/v1/sandboxes", json={"name": name, "faults": [GOOD]}).is_success
    before = stored(client, name)

    response = client.patch(f"/v1/sandboxes/{name}", json={"faults": [GOOD, fault]})

    check_refusal(response, f"faults[1].{field}", words)
    assert stored(client, name) == before
    client.delete(f"/v1/sandboxes/{name}")


def test_a_duplicate_id_is_refused_at_create_and_patch(client: httpx.Client) -> None:
    name = unique("dupid")
    twice = [{**GOOD, "id": "same"}, {"service": "tools", "kind": "reset", "id": "same"}]
    check_refusal(
        client.post("/v1/sandboxes", json={"name": name, "faults": twice}), "faults[1].id", "same"
    )
    assert client.post("/v1/sandboxes", json={"name": name}).status_code == 201
    before = stored(client, name)
    patched = client.patch(f"/v1/sandboxes/{name}", json={"faults": twice})
    check_refusal(patched, "faults[1].id", "already used")
    assert stored(client, name) == before
    client.delete(f"/v1/sandboxes/{name}")


def test_faults_are_shown_with_ids_and_counts_and_published_to_routers(
    client: httpx.Client,
) -> None:
    name = unique("shown")
    faults = [GOOD, {"service": "echo", "kind": "latency", "latencyMs": 20, "id": "slow"}]

    created = client.post("/v1/sandboxes", json={"name": name, "faults": faults}).json()
    got = client.get(f"/v1/sandboxes/{name}").json()

    generated = got["faults"][0]["id"]
    assert generated.startswith("f-") and got["faults"][1]["id"] == "slow"
    assert got["faults"][0] == {
        "id": generated, "service": "tools", "kind": "tool_error", "tool": "describe_*",
        "method": "tools/call", "message": "down", "probability": 1.0,
        "matched": 0, "injected": 0, "unread": 0, "unrewritten": 0,
    }  # fmt: skip
    route = client.get("/v1/routes").json()["routes"][created["routingKey"]]
    assert route["faults"] == got["spec"]["faults"]
    assert [f["id"] for f in route["faults"]] == [generated, "slow"]
    # the same spec again (ids still absent) is the same sandbox: the ids are stable
    again = client.post("/v1/sandboxes", json={"name": name, "faults": faults})
    assert again.status_code == 200 and again.json()["faults"] == got["faults"]
    client.delete(f"/v1/sandboxes/{name}")


def test_every_change_of_the_faults_is_an_event_naming_the_ids(client: httpx.Client) -> None:
    name = unique("events")
    slow = {"service": "echo", "kind": "latency", "latencyMs": 20, "id": "slow"}
    client.post("/v1/sandboxes", json={"name": name, "faults": [slow]})
    broken = {"service": "tools", "kind": "reset", "id": "broken"}

    client.patch(f"/v1/sandboxes/{name}", json={"faults": [slow, broken]})
    client.patch(f"/v1/sandboxes/{name}", json={"faults": [slow, broken]})  # no change
    client.patch(f"/v1/sandboxes/{name}", json={"faults": [{**slow, "latencyMs": 30}]})
    client.patch(f"/v1/sandboxes/{name}", json={"ttl": "1h"})  # faults untouched
    client.patch(f"/v1/sandboxes/{name}", json={"faults": []})

    assert reasons(client, name) == [
        ("FaultsChanged", "faults added slow"),
        ("FaultsChanged", "faults added broken"),
        ("FaultsChanged", "faults removed broken; changed slow"),
        ("FaultsChanged", "faults removed slow"),
    ]
    assert client.get(f"/v1/sandboxes/{name}").json()["faults"] == []
    client.delete(f"/v1/sandboxes/{name}")


def test_a_sandbox_without_faults_records_no_faults_event(client: httpx.Client) -> None:
    name = unique("nofaults")
    client.post("/v1/sandboxes", json={"name": name})
    assert reasons(client, name) == []
    client.delete(f"/v1/sandboxes/{name}")


def test_a_patch_with_a_stale_generation_is_refused_and_changes_nothing(
    client: httpx.Client,
) -> None:
    """A read-modify-write of the list (what `sandbox fault add` does) cannot lose a change
    someone else made between its read and its write."""
    name = unique("stale")
    read = client.post("/v1/sandboxes", json={"name": name}).json()
    mine = {"service": "tools", "kind": "reset", "id": "mine"}
    theirs = {"service": "echo", "kind": "malformed", "id": "theirs"}
    first = client.patch(
        f"/v1/sandboxes/{name}", json={"faults": [theirs], "generation": read["generation"]}
    )
    assert first.status_code == 200 and first.json()["generation"] == read["generation"] + 1
    before = stored(client, name)

    late = client.patch(
        f"/v1/sandboxes/{name}", json={"faults": [mine], "generation": read["generation"]}
    )

    assert late.status_code == 409, late.text
    assert late.json()["error"] == "generation_mismatch"
    assert stored(client, name) == before
    assert [f["id"] for f in before["faults"]] == ["theirs"]
    client.delete(f"/v1/sandboxes/{name}")
