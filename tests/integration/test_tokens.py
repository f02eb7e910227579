"""Scoped tokens, made with the real `sandboxd token` command, against a real sandboxd over
SQLite and PostgreSQL: every endpoint by token kind, the scope's label, revocation on the next
request, `by` in the event log, the audit log, and no token in any log."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import snapshot
from tests.support import poll
from tests.support.server import Sandboxd

ACME = "github.repo=acme/agents"


def token(api: Sandboxd, name: str, label: str = ACME, *extra: str) -> str:
    return api.scoped_token(name, label, *extra)


def sandboxd_token(api: Sandboxd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandboxd", "token", *args],
        env=api.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def tokens(api: Sandboxd) -> Iterator[dict[str, str]]:
    """An admin, an acme-scoped, an other-scoped, a revoked and an expired token."""
    suffix = uuid.uuid4().hex[:6]
    made = {
        "scoped": token(api, f"acme-{suffix}"),
        "other": token(api, f"other-{suffix}", "github.repo=other/agents"),
        "revoked": token(api, f"gone-{suffix}"),
        "expired": token(api, f"old-{suffix}", ACME, "--ttl", "1s"),
    }
    assert sandboxd_token(api, "revoke", f"gone-{suffix}").returncode == 0
    time.sleep(1.2)  # (the expired one's second)
    yield {"admin": api.token, **made}
    for name in ("acme", "other", "old"):
        sandboxd_token(api, "revoke", f"{name}-{suffix}")


def call(api: Sandboxd, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}) as c:
        return c.request(method, path, timeout=30, **kwargs)


def test_every_endpoint_by_token_kind(api: Sandboxd, tokens: dict[str, str]) -> None:
    name = unique("acme")
    with api.client() as admin:
        made = admin.post(
            "/v1/sandboxes", json={"name": name, "labels": {"github.repo": "acme/agents"}}
        )
        assert made.status_code == 201, made.text
    mine = f"/v1/sandboxes/{name}"
    endpoints = [  # method, path, body, status for the admin and an in-scope token
        ("GET", "/v1/sandboxes", None, 200),
        ("GET", mine, None, 200),
        ("PATCH", mine, {"labels": {"team": "a"}}, 200),
        ("PUT", mine, {"name": name, "labels": {"github.repo": "acme/agents", "team": "b"}}, 200),
        ("GET", f"{mine}/events", None, 200),
        ("GET", f"{mine}/logs/echo", None, 404),  # (no such fork: past the access check)
        ("GET", f"{mine}/metrics", None, 200),
        ("GET", f"{mine}/requests", None, 200),
        ("GET", f"{mine}/traces", None, 200),
        ("GET", "/v1/services", None, 200),
    ]
    for method, path, body, ok in endpoints:
        for kind, expected in (("admin", ok), ("scoped", ok), ("other", 403), ("revoked", 401),
                               ("expired", 401)):  # fmt: skip
            if path in ("/v1/services", "/v1/sandboxes") and kind == "other":
                expected = 200  # (the catalog; the list of its own sandboxes)
            got = call(api, tokens[kind], method, path, json=body)
            assert got.status_code == expected, (kind, method, path, got.text)
            assert "error" in got.json() or got.status_code < 400
    admin_only = [("GET", "/v1/routes"), ("GET", "/v1/audit"), ("POST", "/v1/router-reports")]
    for method, path in admin_only:
        for kind in ("scoped", "other"):
            got = call(api, tokens[kind], method, path, json={})
            assert got.status_code == 403, (kind, path, got.text)
            assert got.json()["error"] == "forbidden"
        assert call(api, tokens["revoked"], method, path).status_code == 401
    assert call(api, tokens["admin"], "GET", "/v1/audit").status_code == 200
    assert call(api, tokens["other"], "DELETE", mine).status_code == 403
    assert call(api, tokens["scoped"], "DELETE", mine).status_code == 202


def test_a_scoped_create_gets_its_label_and_another_value_is_refused(
    api: Sandboxd, tokens: dict[str, str]
) -> None:
    name = unique("made")
    created = call(api, tokens["scoped"], "PUT", f"/v1/sandboxes/{name}", json={"name": name})
    assert created.status_code == 201, created.text
    assert created.json()["labels"]["github.repo"] == "acme/agents"
    with api.client() as admin:
        before = snapshot(admin)

    foreign = {"name": unique("foreign"), "labels": {"github.repo": "other/agents"}}
    refused = [
        call(api, tokens["scoped"], "POST", "/v1/sandboxes", json=foreign),
        call(api, tokens["scoped"], "PUT", f"/v1/sandboxes/{foreign['name']}", json=foreign),
        call(api, tokens["scoped"], "PATCH", f"/v1/sandboxes/{name}",
             json={"labels": {"github.repo": "other/agents"}}),
        call(api, tokens["scoped"], "PATCH", f"/v1/sandboxes/{name}",
             json={"labels": {"github.repo": None}}),
        call(api, tokens["other"], "PUT", f"/v1/sandboxes/{name}", json={"name": name}),
    ]  # fmt: skip

    assert [r.status_code for r in refused] == [403] * 5, [r.text for r in refused]
    assert all(r.json()["error"] == "forbidden" for r in refused)
    with api.client() as admin:
        assert snapshot(admin) == before
    mine = call(api, tokens["scoped"], "GET", "/v1/sandboxes").json()["items"]
    theirs = call(api, tokens["other"], "GET", "/v1/sandboxes").json()["items"]
    assert name in {s["name"] for s in mine}
    assert {s["labels"]["github.repo"] for s in mine} == {"acme/agents"}
    assert all(s["labels"]["github.repo"] == "other/agents" for s in theirs)
    call(api, tokens["scoped"], "DELETE", f"/v1/sandboxes/{name}")


def test_revocation_takes_effect_on_the_next_request(api: Sandboxd) -> None:
    name = f"late-{uuid.uuid4().hex[:6]}"
    key = token(api, name)
    assert call(api, key, "GET", "/v1/sandboxes").status_code == 200

    assert sandboxd_token(api, "revoke", name).returncode == 0

    refused = call(api, key, "GET", "/v1/sandboxes")
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"


def test_events_say_who_and_the_audit_log_lists_each_call(
    api: Sandboxd, tokens: dict[str, str]
) -> None:
    name = unique("who")
    call(api, tokens["scoped"], "PUT", f"/v1/sandboxes/{name}", json={"name": name, "ttl": "1h"})
    call(api, tokens["scoped"], "PATCH", f"/v1/sandboxes/{name}", json={"ttl": "2h"})
    call(api, tokens["other"], "DELETE", f"/v1/sandboxes/{name}")
    call(api, tokens["revoked"], "GET", f"/v1/sandboxes/{name}")
    with api.client() as admin:
        admin.delete(f"/v1/sandboxes/{name}")
        events = admin.get(f"/v1/sandboxes/{name}/events").json()["items"]
        audit = admin.get("/v1/audit", params={"limit": 50}).json()["items"]
    listed = call(api, tokens["admin"], "GET", "/v1/tokens")  # (no such endpoint)
    assert listed.status_code == 404

    by = {e["reason"]: e["by"] for e in events}
    acme = next(n for n in by.values() if n and n.startswith("acme-"))
    assert by["Created"] == acme and by["Updated"] == acme
    assert by["DeleteRequested"] == "admin"
    assert all(e["by"] is None for e in events if e["reason"] in ("Ready", "NoForks"))
    calls = [(a["token"], a["method"], a["path"], a["status"]) for a in audit]
    path = f"/v1/sandboxes/{name}"
    assert (acme, "PUT", path, 201) in calls
    assert (acme, "PATCH", path, 200) in calls
    assert any(
        t.startswith("other-") and (m, p, s) == ("DELETE", path, 403) for t, m, p, s in calls
    )
    assert ("-", "GET", path, 401) in calls
    assert ("admin", "DELETE", path, 202) in calls
    assert all(a["time"].endswith("Z") for a in audit)


def test_no_token_appears_in_any_log(api: Sandboxd, tokens: dict[str, str]) -> None:
    for key in tokens.values():
        call(api, key, "GET", "/v1/sandboxes")
        call(api, key, "GET", "/v1/routes")
    poll.until(lambda: True, lambda _: True, timeout=1)
    logs = "".join(p.read_text(errors="replace") for p in api.data_dir.rglob("*.log"))
    with api.client() as admin:
        audit = admin.get("/v1/audit", params={"limit": 1000}).text
    for key in tokens.values():
        assert key not in logs and key not in audit
