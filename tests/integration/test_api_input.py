"""The API against bad and hostile input, over real uvicorn on SQLite and PostgreSQL: a clear
4xx with a JSON body, never a 5xx, and nothing already stored changes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import fork_command
from tests.integration.conftest import snapshot, wait_phase
from tests.support import poll
from tests.support.server import Sandboxd


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def keeper(client: httpx.Client) -> Any:
    """A stored sandbox that every refused request must leave as it is."""
    name = unique("keep")
    created = client.post("/v1/sandboxes", json={"name": name, "labels": {"a": "1"}})
    assert created.status_code == 201
    yield created.json()
    client.delete(f"/v1/sandboxes/{name}")


def refused(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error and body["message"], body
    return body


@pytest.mark.parametrize(
    ("ttl", "error"),
    [
        (1_000_000_000, "ttl_too_long"),
        ("1000000000", "ttl_too_long"),
        ("9999d", "ttl_too_long"),
        (10**12, "invalid_request"),
        (10**400, "invalid_request"),
        ("\u0662h", "invalid_request"),  # Arabic-Indic two
        ("\uff12h", "invalid_request"),  # full-width two
        ("2\u00a0h", "invalid_request"),  # no-break space
    ],
)
def test_a_huge_or_non_ascii_ttl_is_a_422_on_create_and_on_patch(
    client: httpx.Client, keeper: dict[str, Any], ttl: object, error: str
) -> None:
    before = snapshot(client)

    created = client.post("/v1/sandboxes", json={"name": unique("ttl"), "ttl": ttl})
    patched = client.patch(f"/v1/sandboxes/{keeper['name']}", json={"ttl": ttl})

    for response in (created, patched):
        body = refused(response, 422, error)
        assert "ttl" in body["message"]
        if error == "ttl_too_long":
            assert "over the cap of 3d" in body["message"]
    assert snapshot(client) == before


def agent_spec(name: str, agent: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "agent": agent, **extra}


@pytest.mark.parametrize(
    ("agent", "labels", "problem"),
    [
        ({"tools": {f"tool{i}": "1" for i in range(130)}}, {}, "at most 64 items"),
        ({"tools": {f"tool{i}": "1" for i in range(40)}}, {f"k{i}": "v" for i in range(30)},
         "over the limit of 64 labels"),
        ({"tools": {"has space": "1"}}, {}, "becomes the label key"),
        ({"tools": {"new\nline": "1"}}, {}, "becomes the label key"),
        ({"tools": {"t" * 46: "1"}}, {}, "becomes the label key"),
        ({"tools": {"ok": "\x1b[31mred"}}, {}, "no control characters"),
        ({"promptVersion": "v1\x1b]0;title\x07"}, {}, "no control characters"),
        ({"modelVersion": "m\x9b2J"}, {}, "no control characters"),
    ],
)  # fmt: skip
def test_agent_fields_are_validated_like_the_labels_they_become(
    client: httpx.Client,
    keeper: dict[str, Any],
    agent: dict[str, Any],
    labels: dict[str, str],
    problem: str,
) -> None:
    before = snapshot(client)

    response = client.post("/v1/sandboxes", json=agent_spec(unique("agent"), agent, labels=labels))

    body = refused(response, 422, "invalid_request")
    assert body["problems"][0]["field"].startswith("agent")
    assert problem in body["message"]
    assert snapshot(client) == before


def test_a_label_patch_cannot_push_the_agents_labels_over_the_limit(client: httpx.Client) -> None:
    name = unique("agentpatch")
    tools = {f"tool{i}": "1" for i in range(60)}
    assert client.post("/v1/sandboxes", json=agent_spec(name, {"tools": tools})).status_code == 201
    stored = client.get(f"/v1/sandboxes/{name}").json()

    more = client.patch(f"/v1/sandboxes/{name}", json={"labels": {f"k{i}": "v" for i in range(5)}})

    assert "over the limit of 64 labels" in refused(more, 422, "invalid_request")["message"]
    assert client.get(f"/v1/sandboxes/{name}").json()["labels"] == stored["labels"]
    assert len(stored["labels"]) == 60
    client.delete(f"/v1/sandboxes/{name}")


def test_repeated_patches_keep_the_event_log_bounded(client: httpx.Client) -> None:
    """A client can PATCH at will; only the newest 100 `Updated` events are kept."""
    name = unique("patches")
    client.post("/v1/sandboxes", json={"name": name})
    for i in range(105):
        assert client.patch(f"/v1/sandboxes/{name}", json={"labels": {"n": str(i)}}).is_success

    events = client.get(f"/v1/sandboxes/{name}/events").json()["items"]
    reasons = [e["reason"] for e in events]

    assert reasons.count("Updated") == 100
    assert reasons[0] == "Created"
    assert client.get(f"/v1/sandboxes/{name}").json()["labels"] == {"n": "104"}
    client.delete(f"/v1/sandboxes/{name}")


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000,
        b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        b'{"name": "x", "ttl": ' + b"9" * 5000 + b"}",
    ],
    ids=["deep-array", "deep-object", "5000-digit-number"],
)
def test_json_past_the_parser_is_a_400_malformed_json(
    client: httpx.Client, keeper: dict[str, Any], content: bytes
) -> None:
    before = snapshot(client)
    headers = {"Content-Type": "application/json"}
    for method, path in (("POST", "/v1/sandboxes"), ("PATCH", f"/v1/sandboxes/{keeper['name']}")):
        refused(
            client.request(method, path, content=content, headers=headers), 400, "malformed_json"
        )
    assert snapshot(client) == before


@pytest.mark.parametrize("field", ["code", "nth", "times"])
def test_fault_numbers_beyond_32_bits_are_refused(client: httpx.Client, field: str) -> None:
    fault = {"service": "echo", "kind": "jsonrpc_error", field: 10**30}
    response = client.post("/v1/sandboxes", json={"name": unique("fault"), "faults": [fault]})

    body = refused(response, 422, "invalid_request")
    assert body["problems"][0]["field"] == f"faults[0].{field}"


@pytest.mark.parametrize("key", ["", "caf\u00e9", "a\tb"])
def test_an_empty_or_unprintable_idempotency_key_is_refused_not_stored(
    client: httpx.Client, key: str
) -> None:
    """An empty key is most likely an unset variable in a harness: refused (422), so the
    caller learns its retries are not protected, rather than silently ignored."""
    name = unique("ikey")
    headers = [(b"Idempotency-Key", key.encode("latin-1"))]
    response = client.post("/v1/sandboxes", json={"name": name}, headers=headers)

    body = refused(response, 422, "invalid_request")
    assert "idempotency-key" in body["message"].lower()
    assert client.get(f"/v1/sandboxes/{name}").status_code == 404


def test_a_replayed_key_never_returns_a_sandbox_it_did_not_create(client: httpx.Client) -> None:
    name, key = unique("replay"), uuid.uuid4().hex
    headers = {"Idempotency-Key": key}
    first = client.post("/v1/sandboxes", json={"name": name}, headers=headers).json()
    assert (
        client.post("/v1/sandboxes", json={"name": name}, headers=headers).json()["uid"]
        == (first["uid"])
    )
    client.delete(f"/v1/sandboxes/{name}")
    wait_phase(client, name, "Deleted")

    after_delete = client.post("/v1/sandboxes", json={"name": name}, headers=headers)
    assert refused(after_delete, 409, "idempotency_key_spent")["sandbox"] == name
    assert client.get(f"/v1/sandboxes/{name}").json()["phase"] == "Deleted"

    second = client.post("/v1/sandboxes", json={"name": name}).json()  # someone else's
    replay = client.post("/v1/sandboxes", json={"name": name}, headers=headers)
    refused(replay, 409, "idempotency_key_spent")
    assert client.get(f"/v1/sandboxes/{name}").json()["uid"] == second["uid"] != first["uid"]
    client.delete(f"/v1/sandboxes/{name}")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/sandboxes", "GET, POST"),
        ("POST", "/v1/sandboxes/x", "GET, PUT, PATCH, DELETE"),
        ("DELETE", "/v1/routes", "GET"),
        ("POST", "/v1/sandboxes/x/logs/echo", "GET"),
    ],
)
def test_a_405_lists_the_methods_the_path_allows(
    client: httpx.Client, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)

    refused(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == allow


def test_logs_with_tail_0_give_no_lines_and_the_offset_to_follow_from(
    client: httpx.Client,
) -> None:
    name = unique("tail0")
    client.post("/v1/sandboxes", json={"name": name, "forks": [
        {"service": "echo", "command": fork_command()}]})  # fmt: skip
    fork = wait_phase(client, name, "Ready")["forks"][0]
    httpx.get(fork["upstream"] + "/hello")
    logs = f"/v1/sandboxes/{name}/logs/echo"
    everything = poll.until(
        lambda: client.get(logs, params={"offset": 0}), lambda r: "/hello" in r.text, timeout=20
    )

    none = client.get(logs, params={"tail": 0})

    assert none.status_code == 200 and none.content == b""
    assert int(none.headers["Sandboxd-Log-Offset"]) >= len(everything.content) > 0
    client.delete(f"/v1/sandboxes/{name}")


def test_label_filters_are_bounded(client: httpx.Client) -> None:
    ok = client.get("/v1/sandboxes", params=[("label", f"k{i}=v") for i in range(64)])
    too_many = client.get("/v1/sandboxes", params=[("label", f"k{i}=v") for i in range(65)])

    assert ok.status_code == 200
    refused(too_many, 422, "invalid_request")


def test_long_polls_are_bounded_and_the_rest_get_429(api: Sandboxd, client: httpx.Client) -> None:
    """256 routers' worth of long polls are held; the ones beyond are told to retry (429), not
    held; a change of the table releases every held one."""
    etag = client.get("/v1/routes").headers["ETag"]
    held, beyond = 256, 44

    async def scenario() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=held + beyond)
        headers = {**client.headers, "If-None-Match": etag}
        async with httpx.AsyncClient(
            base_url=api.url, headers=headers, limits=limits, timeout=120
        ) as poller:
            polls = [
                asyncio.create_task(poller.get("/v1/routes", params={"wait": 100}))
                for _ in range(held + beyond)
            ]
            while sum(p.done() for p in polls) < beyond:  # the refused answer at once
                await asyncio.wait(polls, return_when=asyncio.FIRST_COMPLETED)
            async with httpx.AsyncClient(base_url=api.url, headers=client.headers) as writer:
                await writer.post("/v1/sandboxes", json={"name": unique("release")})
            return list(await asyncio.gather(*polls))

    answers = asyncio.run(scenario())

    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * held + [429] * beyond
    too_many = next(r for r in answers if r.status_code == 429)
    refused(too_many, 429, "too_many_long_polls")
    assert too_many.headers["Retry-After"] == "1"
