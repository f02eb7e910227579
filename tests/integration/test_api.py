"""The REST API over real uvicorn, against SQLite and PostgreSQL, with real fork processes."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import fork_command
from tests.integration.conftest import snapshot, wait_phase
from tests.support import poll
from tests.support.procs import fork_pids
from tests.support.server import Sandboxd


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "forks": [{"service": "echo", "command": fork_command()}], **extra}


def test_create_becomes_ready_and_routes_to_its_fork(client: httpx.Client) -> None:
    name = unique("ready")
    created = client.post("/v1/sandboxes", json=spec(name, labels={"github.pr": "42"}))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["baggage"] == f"sandbox={body['routingKey']}"
    assert len(body["routingKey"]) >= 10 and body["routingKey"].isalnum()

    ready = wait_phase(client, name, "Ready")
    fork = ready["forks"][0]
    assert ready["ready"] is True and fork["ready"] is True
    served = httpx.get(fork["upstream"]).json()
    assert served["pid"] == fork["pid"]

    routes = client.get("/v1/routes").json()
    entry = routes["routes"][body["routingKey"]]
    assert entry == {
        "sandbox": name,
        "forks": {"echo": fork["upstream"]},
        "faults": [],
        "preview": entry["preview"],  # the preview token (tests/integration/test_preview_links.py)
        "expiresAt": int(datetime.fromisoformat(ready["expiresAt"]).timestamp()),
        "rev": entry["rev"],  # a digest of the rest (tests/unit/test_core.py)
    }
    assert len(entry["preview"]) == 32 and entry["preview"] != body["routingKey"]
    assert {s["name"] for s in routes["services"]} == {"echo", "tools"}
    client.delete(f"/v1/sandboxes/{name}")


def test_fork_gets_sandboxd_variables_and_never_the_admin_token(client: httpx.Client) -> None:
    name = unique("env")
    routing_key = client.post(
        "/v1/sandboxes",
        json={
            "name": name,
            "forks": [
                {
                    "service": "echo",
                    "command": [*fork_command(), "--port=${PORT}"],
                    "env": {"GREETING": "hello"},
                }
            ],
        },
    ).json()["routingKey"]
    fork = wait_phase(client, name, "Ready")["forks"][0]
    served = httpx.get(fork["upstream"]).json()
    env, argv = served["env"], served["argv"]
    services = client.get("/v1/services").json()["items"]
    assert env["GREETING"] == "hello"
    assert env["PORT"] == fork["upstream"].rsplit(":", 1)[1]
    assert argv[-1] == f"--port={env['PORT']}"  # ${PORT} expanded in the command
    assert env["SANDBOXD_SANDBOX"] == name
    assert env["SANDBOXD_ROUTING_KEY"] == routing_key
    for service in services:
        var = f"SANDBOXD_SERVICE_{service['name'].upper()}_URL"
        assert env[var] == service["routerUrl"]
    assert "SANDBOXD_ADMIN_TOKEN" not in env and "SANDBOXD_DATABASE_URL" not in env
    client.delete(f"/v1/sandboxes/{name}")


def test_same_spec_is_idempotent_and_another_spec_conflicts(client: httpx.Client) -> None:
    name = unique("idem")
    first = client.post("/v1/sandboxes", json=spec(name, ttl="90m"))
    again = client.post("/v1/sandboxes", json=spec(name, ttl="5400s"))  # the same TTL, spelt so
    other = client.post("/v1/sandboxes", json=spec(name, ttl="3h"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["uid"] == first.json()["uid"]
    assert again.json()["routingKey"] == first.json()["routingKey"]
    assert other.status_code == 409
    assert other.json()["error"] == "conflict" and name in other.json()["message"]
    stored = client.get(f"/v1/sandboxes/{name}").json()
    assert stored["spec"]["ttl"] == "90m" and stored["uid"] == first.json()["uid"]
    client.delete(f"/v1/sandboxes/{name}")


def test_twenty_concurrent_creates_make_one_sandbox_and_one_fork(
    api: Sandboxd, client: httpx.Client
) -> None:
    name = unique("race")

    def create(_: int) -> httpx.Response:
        with api.client() as c:
            return c.post("/v1/sandboxes", json=spec(name))

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(create, range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code >= 300]
    assert len({r.json()["uid"] for r in responses}) == 1
    wait_phase(client, name, "Ready")
    assert len(fork_pids(sandbox=name)) == 1
    assert [s["name"] for s in client.get("/v1/sandboxes").json()["items"]].count(name) == 1
    client.delete(f"/v1/sandboxes/{name}")


def test_idempotency_key_replays_and_refuses_reuse(client: httpx.Client) -> None:
    name, key = unique("ikey"), uuid.uuid4().hex
    first = client.post("/v1/sandboxes", json=spec(name), headers={"Idempotency-Key": key})
    replay = client.post("/v1/sandboxes", json=spec(name), headers={"Idempotency-Key": key})
    reused = client.post(
        "/v1/sandboxes", json=spec(unique("other")), headers={"Idempotency-Key": key}
    )
    assert first.status_code == 201 and replay.status_code == 200
    assert replay.json()["uid"] == first.json()["uid"]
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key"
    client.delete(f"/v1/sandboxes/{name}")


COUNTS = ("matched", "injected", "unread", "unrewritten")  # shown per fault, not stored
BAD_CREATES = [
    pytest.param({"name": "Not_A_Label"}, 422, "invalid_request", id="name-not-dns-label"),
    pytest.param({"name": "a" * 41}, 422, "invalid_request", id="name-too-long"),
    pytest.param({"name": "ttl-cap", "ttl": "73h"}, 422, "ttl_too_long", id="ttl-over-cap"),
    pytest.param({"name": "ttl-bad", "ttl": "soon"}, 422, "invalid_request", id="ttl-garbled"),
    pytest.param(
        {"name": "svc", "forks": [{"service": "nope", "command": ["x"]}]},
        422,
        "unknown_service",
        id="unknown-service",
    ),
    pytest.param({"name": "typo", "fork": []}, 422, "invalid_request", id="unknown-field"),
    pytest.param(
        {"name": "dup", "forks": [{"service": "echo", "command": ["a"]}] * 2},
        422,
        "invalid_request",
        id="service-forked-twice",
    ),
    pytest.param(
        {"name": "envname", "forks": [{"service": "echo", "command": ["a"], "env": {"A-B": "1"}}]},
        422,
        "invalid_request",
        id="bad-env-name",
    ),
    pytest.param(
        {"name": "nocmd", "forks": [{"service": "tools"}]},
        422,
        "unknown_service",
        id="fork-without-command",
    ),
    pytest.param([1, 2], 422, "invalid_request", id="not-an-object"),
]


@pytest.mark.parametrize(("body", "status", "error"), BAD_CREATES)
def test_bad_specs_get_a_clear_4xx_and_change_nothing(
    client: httpx.Client, body: Any, status: int, error: str
) -> None:
    keeper = unique("keep")
    client.post("/v1/sandboxes", json={"name": keeper})
    before = snapshot(client)
    response = client.post("/v1/sandboxes", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["message"]
    assert snapshot(client) == before
    client.delete(f"/v1/sandboxes/{keeper}")


@pytest.mark.parametrize(
    ("content", "status", "error"),
    [
        pytest.param(b'{"name": "x",', 400, "malformed_json", id="truncated-json"),
        pytest.param(b"name: [unclosed", 400, "malformed_json", id="yaml-is-not-json"),
        pytest.param(
            json.dumps(
                {"name": "big", "labels": {"k": "v" * 200}, "pad": "x" * 1_048_576}
            ).encode(),
            413,
            "request_too_large",
            id="one-megabyte-spec",
        ),
    ],
)
def test_unparseable_bodies_are_refused(
    client: httpx.Client, content: bytes, status: int, error: str
) -> None:
    before = snapshot(client)
    headers = {"Content-Type": "application/json"}
    response = client.post("/v1/sandboxes", content=content, headers=headers)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert snapshot(client) == before


def test_streamed_body_over_the_limit_is_refused(client: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"name": "stream", "pad": "'
        for _ in range(64):
            yield b"x" * 16384
        yield b'"}'

    response = client.post(
        "/v1/sandboxes", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert client.get("/v1/sandboxes/stream").status_code == 404


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_every_v1_call_needs_the_token(api: Sandboxd, token: str | None) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    calls = [
        ("GET", "/v1/sandboxes"),
        ("POST", "/v1/sandboxes"),
        ("GET", "/v1/sandboxes/x"),
        ("PATCH", "/v1/sandboxes/x"),
        ("DELETE", "/v1/sandboxes/x"),
        ("GET", "/v1/sandboxes/x/events"),
        ("GET", "/v1/sandboxes/x/logs/echo"),
        ("GET", "/v1/services"),
        ("GET", "/v1/routes"),
    ]
    for method, path in calls:
        response = httpx.request(method, api.url + path, headers=headers, json={"name": "x"})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == "unauthorized"
    assert httpx.get(api.url + "/healthz").status_code == 200
    assert httpx.get(api.url + "/readyz").json() == {"status": "ready"}


def test_list_filters_by_labels(client: httpx.Client) -> None:
    repo = unique("acme/agents")
    a, b = unique("la"), unique("lb")
    client.post(
        "/v1/sandboxes", json={"name": a, "labels": {"github.repo": repo, "github.pr": "1"}}
    )
    client.post(
        "/v1/sandboxes",
        json={"name": b, "labels": {"github.repo": repo}, "agent": {"promptVersion": "v2"}},
    )
    names = lambda *labels: sorted(  # noqa: E731
        s["name"]
        for s in client.get("/v1/sandboxes", params=[("label", lab) for lab in labels]).json()[
            "items"
        ]
    )
    assert names(f"github.repo={repo}") == sorted([a, b])
    assert names(f"github.repo={repo}", "github.pr=1") == [a]
    assert names(f"github.repo={repo}", "sandboxd.dev/prompt-version=v2") == [b]
    bad = client.get("/v1/sandboxes", params={"label": "no-equals-sign"})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_label_filter"
    for name in (a, b):
        client.delete(f"/v1/sandboxes/{name}")


def test_patch_extends_ttl_up_to_the_cap_and_merges_labels(client: httpx.Client) -> None:
    name = unique("patch")
    created = client.post(
        "/v1/sandboxes", json={"name": name, "ttl": "1h", "labels": {"a": "1", "b": "2"}}
    ).json()
    extended = client.patch(f"/v1/sandboxes/{name}", json={"ttl": "48h"})
    assert extended.status_code == 200
    assert extended.json()["expiresAt"] > created["expiresAt"]
    over = client.patch(f"/v1/sandboxes/{name}", json={"ttl": "100h"})
    assert over.status_code == 422 and over.json()["error"] == "ttl_too_long"
    labels = client.patch(f"/v1/sandboxes/{name}", json={"labels": {"b": None, "c": "3"}}).json()
    assert labels["labels"] == {"a": "1", "c": "3"}
    assert labels["expiresAt"] == extended.json()["expiresAt"]
    faults = [{"service": "echo", "kind": "latency", "latencyMs": 250}]
    patched = client.patch(f"/v1/sandboxes/{name}", json={"faults": faults}).json()
    fault_id = patched["faults"][0]["id"]
    assert patched["faults"] == [
        {"id": fault_id, "service": "echo", "kind": "latency", "latencyMs": 250,
         "probability": 1.0, "matched": 0, "injected": 0, "unread": 0, "unrewritten": 0}
    ]  # fmt: skip
    route = client.get("/v1/routes").json()["routes"][created["routingKey"]]
    assert route["faults"] == patched["spec"]["faults"]
    assert route["faults"] == [{k: v for k, v in patched["faults"][0].items() if k not in COUNTS}]
    assert client.patch(f"/v1/sandboxes/{name}", json={}).status_code == 422
    assert client.patch(f"/v1/sandboxes/{unique('ghost')}", json={"ttl": "1h"}).status_code == 404
    client.delete(f"/v1/sandboxes/{name}")


def test_delete_stops_the_fork_removes_the_route_and_is_idempotent(client: httpx.Client) -> None:
    name = unique("del")
    key = client.post("/v1/sandboxes", json=spec(name)).json()["routingKey"]
    wait_phase(client, name, "Ready")
    assert len(fork_pids(sandbox=name)) == 1
    first = client.delete(f"/v1/sandboxes/{name}")
    assert first.status_code == 202 and first.json()["phase"] in ("Terminating", "Deleted")
    assert key not in client.get("/v1/routes").json()["routes"]
    deleted = wait_phase(client, name, "Deleted")
    assert deleted["deletedAt"] is not None
    assert fork_pids(sandbox=name) == []
    assert client.delete(f"/v1/sandboxes/{name}").status_code == 202
    assert name not in [s["name"] for s in client.get("/v1/sandboxes").json()["items"]]
    missing = client.delete(f"/v1/sandboxes/{unique('never')}")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    reasons = [e["reason"] for e in client.get(f"/v1/sandboxes/{name}/events").json()["items"]]
    for reason in (
        "Created",
        "ForkStarted",
        "ForkReady",
        "ForksReady",
        "DeleteRequested",
        "Deleted",
    ):
        assert reason in reasons
    # the name is free again: a new sandbox with a new identity
    again = client.post("/v1/sandboxes", json=spec(name))
    assert again.status_code == 201 and again.json()["routingKey"] != key
    client.delete(f"/v1/sandboxes/{name}")


def test_a_fork_that_exits_fails_the_sandbox_with_its_output(client: httpx.Client) -> None:
    name = unique("crash")
    command = ["python3", "-c", "import sys; print('missing DATABASE_URL'); sys.exit(3)"]
    client.post(
        "/v1/sandboxes", json={"name": name, "forks": [{"service": "echo", "command": command}]}
    )
    failed = wait_phase(client, name, "Failed")
    assert failed["reason"] == "ForkExited"
    assert "code 3" in failed["message"] and "missing DATABASE_URL" in failed["message"]
    poll.until(lambda: fork_pids(sandbox=name), lambda pids: pids == [], timeout=20)
    logs = client.get(f"/v1/sandboxes/{name}/logs/echo")
    assert logs.status_code == 200 and "missing DATABASE_URL" in logs.text
    client.delete(f"/v1/sandboxes/{name}")


def test_a_fork_that_never_gets_healthy_times_out(client: httpx.Client) -> None:
    name = unique("slow")
    command = ["python3", "-c", "import time; time.sleep(60)"]
    client.post(
        "/v1/sandboxes", json={"name": name, "forks": [{"service": "echo", "command": command}]}
    )
    failed = wait_phase(client, name, "Failed")
    assert failed["reason"] == "HealthCheckTimeout"
    poll.until(lambda: fork_pids(sandbox=name), lambda pids: pids == [], timeout=20)
    client.delete(f"/v1/sandboxes/{name}")


def test_a_command_that_does_not_exist_fails_clearly(client: httpx.Client) -> None:
    name = unique("nocmd")
    command = ["/nonexistent/binary"]
    client.post(
        "/v1/sandboxes", json={"name": name, "forks": [{"service": "echo", "command": command}]}
    )
    failed = wait_phase(client, name, "Failed")
    assert failed["reason"] == "ForkExited" and "/nonexistent/binary" in failed["message"]
    client.delete(f"/v1/sandboxes/{name}")


def test_logs_tail_and_offset(client: httpx.Client) -> None:
    name = unique("logs")
    client.post("/v1/sandboxes", json=spec(name))
    fork = wait_phase(client, name, "Ready")["forks"][0]
    httpx.get(fork["upstream"] + "/first")
    first = poll.until(
        lambda: client.get(f"/v1/sandboxes/{name}/logs/echo", params={"tail": 50}),
        lambda r: "/first" in r.text,
        timeout=20,
    )
    offset = int(first.headers["Sandboxd-Log-Offset"])
    httpx.get(fork["upstream"] + "/second")
    more = poll.until(
        lambda: client.get(f"/v1/sandboxes/{name}/logs/echo", params={"offset": offset}),
        lambda r: "/second" in r.text,
        timeout=20,
    )
    assert "/first" not in more.text
    assert client.get(f"/v1/sandboxes/{name}/logs/tools").status_code == 404
    client.delete(f"/v1/sandboxes/{name}")


def test_routes_etag_and_long_poll(client: httpx.Client) -> None:
    current = client.get("/v1/routes")
    etag = current.headers["ETag"]
    unchanged = client.get("/v1/routes", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert (
        client.get("/v1/routes", params={"wait": 0.2}, headers={"If-None-Match": etag}).status_code
        == 304
    )

    result: dict[str, httpx.Response] = {}

    def long_poll() -> None:
        with httpx.Client(base_url=str(client.base_url), headers=client.headers, timeout=60) as c:
            result["r"] = c.get("/v1/routes", params={"wait": 50}, headers={"If-None-Match": etag})

    poller = threading.Thread(target=long_poll)
    poller.start()
    name = unique("poll")
    key = client.post("/v1/sandboxes", json={"name": name}).json()["routingKey"]
    poller.join(timeout=20)  # released by the change, long before the 50 s wait
    assert not poller.is_alive()
    released = result["r"]
    assert released.status_code == 200 and released.headers["ETag"] != etag
    assert released.json()["routes"][key]["sandbox"] == name
    client.delete(f"/v1/sandboxes/{name}")


def test_routes_as_changes_to_a_recent_table(client: httpx.Client) -> None:
    """`delta=true`: what changed since the If-None-Match table, when it is a recent one;
    the whole table otherwise."""
    before = client.get("/v1/routes")
    name = unique("delta")
    key = client.post("/v1/sandboxes", json={"name": name}).json()["routingKey"]
    etag = before.headers["ETag"]
    changes = poll.until(
        lambda: client.get("/v1/routes", params={"delta": "true"}, headers={"If-None-Match": etag}),
        lambda r: key in r.json()["routes"],
        timeout=10,
        what="the new sandbox in the changes",
    )
    body, whole = changes.json(), client.get("/v1/routes").json()
    assert body["base"] == etag.strip('"') and body["version"] == whole["version"]
    assert body["routes"][key] == whole["routes"][key]
    assert set(body["routes"]) < set(whole["routes"]) or len(whole["routes"]) == 1
    assert body["removed"] == [] and body["services"] == whole["services"]
    stale = client.get("/v1/routes", params={"delta": "true"}, headers={"If-None-Match": '"nope"'})
    assert stale.json() == whole  # an unknown base: the whole table
    client.delete(f"/v1/sandboxes/{name}")
    gone = client.get("/v1/routes", params={"delta": "true"},
                      headers={"If-None-Match": changes.headers["ETag"]}).json()  # fmt: skip
    assert gone["removed"] == [key] and key not in gone["routes"]


def test_metrics_and_openapi(api: Sandboxd, client: httpx.Client) -> None:
    client.get("/v1/sandboxes")
    text = httpx.get(api.url + "/metrics").text
    assert 'sandboxd_http_requests_total{method="GET",route="/v1/sandboxes",status="200"}' in text
    assert "sandboxd_reconcile_total" in text
    paths = httpx.get(api.url + "/openapi.json").json()["paths"]
    for path in (
        "/v1/sandboxes",
        "/v1/sandboxes/{name}",
        "/v1/sandboxes/{name}/events",
        "/v1/routes",
        "/v1/services",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths
