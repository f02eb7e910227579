"""`PUT /v1/sandboxes/{name}`: create, or update in place to a new spec, over real uvicorn
against SQLite and PostgreSQL, with real fork processes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from sandboxd.core.phases import Phase
from sandboxd.core.spec import SandboxSpec
from sandboxd.store.engine import make_engine, migrate
from sandboxd.store.repository import NewSandbox, Store
from tests.conftest import fork_command
from tests.integration.conftest import snapshot, wait_phase
from tests.support import poll
from tests.support.procs import fork_pids


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def spec(name: str, *, greeting: str = "hello", **extra: Any) -> dict[str, Any]:
    fork = {"service": "echo", "command": fork_command(), "env": {"GREETING": greeting}}
    return {"name": name, "forks": [fork], **extra}


def put(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.put(f"/v1/sandboxes/{body['name']}", json=body)


def served(sandbox: dict[str, Any]) -> Any:
    return httpx.get(sandbox["forks"][0]["upstream"]).json()


def events(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/sandboxes/{name}/events").json()["items"])


def test_put_creates_then_updates_the_fork_in_place_keeping_name_and_key(
    client: httpx.Client,
) -> None:
    name = unique("apply")
    created = put(client, spec(name, labels={"github.sha": "aaa"}))
    assert created.status_code == 201, created.text
    first = wait_phase(client, name, "Ready")
    assert served(first)["env"]["GREETING"] == "hello"

    updated = put(client, spec(name, greeting="bonjour", labels={"github.sha": "bbb"}))

    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["uid"], body["routingKey"]) == (first["uid"], first["routingKey"])
    assert body["generation"] == first["generation"] + 1
    assert body["labels"]["github.sha"] == "bbb"
    ready = poll.until(
        lambda: client.get(f"/v1/sandboxes/{name}").json(),
        lambda s: s["phase"] == "Ready" and s["forks"][0]["pid"] != first["forks"][0]["pid"],
        timeout=20,
        what="the replaced fork to be ready",
    )
    assert served(ready)["env"]["GREETING"] == "bonjour"
    poll.until(  # the old copy stops once routers have the new one (the drain)
        lambda: fork_pids(sandbox=name), lambda p: p == [ready["forks"][0]["pid"]], timeout=20
    )
    route = client.get("/v1/routes").json()["routes"][first["routingKey"]]
    assert route["forks"] == {"echo": ready["forks"][0]["upstream"]}
    said = [e["message"] for e in events(client, name) if e["reason"] == "Updated"]
    assert len(said) == 1
    assert "fork echo changed (env)" in said[0] and "labels changed (github.sha)" in said[0]
    client.delete(f"/v1/sandboxes/{name}")


def test_the_same_spec_again_changes_nothing(client: httpx.Client) -> None:
    name = unique("same")
    put(client, spec(name, ttl="90m"))
    ready = wait_phase(client, name, "Ready")

    again = put(client, spec(name, ttl="5400s"))  # the same TTL, spelt otherwise

    assert again.status_code == 200, again.text
    assert again.json()["generation"] == ready["generation"]
    assert again.json()["expiresAt"] == ready["expiresAt"]
    assert again.json()["phase"] == "Ready"
    assert not [e for e in events(client, name) if e["reason"] == "Updated"]
    client.delete(f"/v1/sandboxes/{name}")


def test_forks_added_and_removed_faults_and_ttl_are_told_in_the_event(
    client: httpx.Client,
) -> None:
    name = unique("forks")
    put(client, spec(name))
    wait_phase(client, name, "Ready")
    fault = {"service": "echo", "kind": "http_error", "status": 503, "id": "f-1"}

    put(client, {"name": name, "forks": [], "ttl": "3h", "faults": [fault]})

    gone = poll.until(
        lambda: client.get(f"/v1/sandboxes/{name}").json(),
        lambda s: s["phase"] == "Ready" and s["forks"] == [],
        timeout=20,
        what="the fork to be removed",
    )
    assert gone["spec"]["faults"][0]["id"] == "f-1"
    poll.until(lambda: fork_pids(sandbox=name), lambda pids: pids == [], timeout=20)
    by_reason = {e["reason"]: e["message"] for e in events(client, name)}
    assert "fork echo removed" in by_reason["Updated"]
    assert "TTL 2h → 3h" in by_reason["Updated"]
    assert by_reason["FaultsChanged"] == "faults added f-1"
    client.delete(f"/v1/sandboxes/{name}")


def test_a_put_fixes_a_failed_sandbox(client: httpx.Client) -> None:
    name = unique("fix")
    broken = {"service": "echo", "command": ["python3", "-c", "raise SystemExit(3)"]}
    put(client, {"name": name, "forks": [broken]})
    wait_phase(client, name, "Failed")

    put(client, spec(name))

    fixed = wait_phase(client, name, "Ready")
    assert served(fixed)["env"]["GREETING"] == "hello"
    client.delete(f"/v1/sandboxes/{name}")


def test_bad_puts_are_refused_and_change_nothing(client: httpx.Client) -> None:
    name = unique("bad")
    put(client, spec(name))
    wait_phase(client, name, "Ready")
    before = snapshot(client)

    mismatch = client.put(f"/v1/sandboxes/{name}", json=spec(unique("other")))
    unknown = put(client, {"name": name, "forks": [{"service": "nope"}]})
    too_long = put(client, spec(name, ttl="365d"))
    not_json = client.put(f"/v1/sandboxes/{name}", content=b"{", headers={"content-type": "x"})

    assert (mismatch.status_code, mismatch.json()["error"]) == (422, "name_mismatch")
    assert (unknown.status_code, unknown.json()["error"]) == (422, "unknown_service")
    assert (too_long.status_code, too_long.json()["error"]) == (422, "ttl_too_long")
    assert not_json.status_code in (400, 415, 422) and "error" in not_json.json()
    assert snapshot(client) == before
    client.delete(f"/v1/sandboxes/{name}")


def test_a_sandbox_being_deleted_is_not_updated(client: httpx.Client) -> None:
    name = unique("gone")
    put(client, spec(name))
    wait_phase(client, name, "Ready")
    client.delete(f"/v1/sandboxes/{name}")

    late = put(client, spec(name, greeting="late"))

    if late.status_code == 201:  # the delete finished first: the name was free again
        assert late.json()["uid"] != "" and late.json()["generation"] == 1
        client.delete(f"/v1/sandboxes/{name}")
    else:
        assert late.status_code == 409, late.text
        assert "being deleted" in late.json()["message"]


def new_sandbox(name: str, **extra: Any) -> NewSandbox:
    spec = SandboxSpec.model_validate({"name": name, "ttl": "2h", **extra})
    labels = dict(spec.labels)
    return NewSandbox(spec=spec, labels=labels, ttl_seconds=7200, request_hash=str(extra))


async def test_a_status_for_an_older_generation_is_not_written(database_url: str) -> None:
    """A reconcile that converged on the spec before an apply must not show its status as
    the new spec's (the apply kicked another pass)."""
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    row, _ = await store.create(new_sandbox("gen"))
    updated, applied = await store.apply(new_sandbox("gen", labels={"github.sha": "b"}))
    assert (applied.outcome, updated.generation) == ("updated", row.generation + 1)

    async def ready(generation: int) -> object:
        return await store.set_status(
            "gen", uid=row.uid, phase=Phase.READY, reason="ForksReady", message="ready",
            forks=[], generation=generation,
        )  # fmt: skip

    async def phase() -> str | None:
        stored = await store.get("gen")
        return None if stored is None else stored.phase

    assert await ready(row.generation) is None
    assert await phase() == Phase.PENDING
    assert await ready(updated.generation) is not None
    assert await phase() == Phase.READY
    await store.close()
    engine.dispose()
