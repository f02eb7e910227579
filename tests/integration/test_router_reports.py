"""The channel from the routers to the control plane: `POST /v1/router-reports`.

Routers report CUMULATIVE counts per instance; the control plane keeps the greatest per
(instance, routing key, fault) and shows the sum over instances. So a replayed or reordered
report counts nothing twice, a router restart (a new instance) loses nothing reported, and a
control-plane restart loses nothing (the rows are in the database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from sandboxd_router.report import Entry, Reporter
from tests.integration.conftest import wait_phase
from tests.support.server import Sandboxd, free_port

# The catalog (tests/conftest.py write_catalog): `echo` is http, `tools` is mcp.
FAULTS = [
    {"id": "slow", "service": "echo", "kind": "latency", "latencyMs": 5},
    {"id": "down", "service": "tools", "kind": "tool_error", "tool": "x*", "message": "down"},
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def router(api: Sandboxd) -> Iterator[httpx.Client]:
    """A client holding the router's token, as a router run apart would."""
    with api.client(token=(api.data_dir / "router-token").read_text().strip()) as c:
        yield c


@pytest.fixture
def sandbox(client: httpx.Client) -> Iterator[dict[str, Any]]:
    created = client.post("/v1/sandboxes", json={"name": unique("rep"), "faults": FAULTS})
    assert created.status_code == 201, created.text
    yield created.json()
    client.delete(f"/v1/sandboxes/{created.json()['name']}")


def entry(box: dict[str, Any], fault: str, matched: int, injected: int) -> dict[str, Any]:
    return {"sandbox": box["name"], "routingKey": box["routingKey"], "fault": fault,
            "matched": matched, "injected": injected}  # fmt: skip


def report(
    client: httpx.Client, instance: str, *entries: dict[str, Any], seq: int = 1
) -> httpx.Response:
    return client.post(
        "/v1/router-reports", json={"instance": instance, "seq": seq, "faults": list(entries)}
    )


def counts(client: httpx.Client, name: str) -> dict[str, tuple[int, int]]:
    faults = client.get(f"/v1/sandboxes/{name}").json()["faults"]
    return {f["id"]: (f["matched"], f["injected"]) for f in faults}


def all_counts(client: httpx.Client, name: str) -> dict[str, tuple[int, int, int, int]]:
    """Per fault: matched, injected, unread, unrewritten, as `GET` shows them."""
    faults = client.get(f"/v1/sandboxes/{name}").json()["faults"]
    return {f["id"]: (f["matched"], f["injected"], f["unread"], f["unrewritten"]) for f in faults}


def injected_events(client: httpx.Client, name: str) -> list[str]:
    events = client.get(f"/v1/sandboxes/{name}/events").json()["items"]
    return [e["message"] for e in events if e["reason"] == "FaultInjected"]


def test_counts_add_up_over_router_instances(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    name = sandbox["name"]
    assert counts(client, name) == {"slow": (0, 0), "down": (0, 0)}

    one = report(router, "router-a", entry(sandbox, "slow", 4, 4), entry(sandbox, "down", 3, 1))
    two = report(router, "router-b", entry(sandbox, "slow", 2, 2))

    assert one.json() == {"accepted": 2, "ignored": 0}, one.text
    assert two.json() == {"accepted": 1, "ignored": 0}, two.text
    assert counts(client, name) == {"slow": (6, 6), "down": (3, 1)}
    listed = client.get("/v1/sandboxes").json()["items"]
    mine = next(item for item in listed if item["name"] == name)
    assert {f["id"]: f["injected"] for f in mine["faults"]} == {"slow": 6, "down": 1}


def test_unread_and_unrewritten_arrive_and_show_beside_matched_and_injected(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    name = sandbox["name"]
    down = {**entry(sandbox, "down", 6, 2), "unread": 3, "unrewritten": 1}
    assert report(router, "r1", down).json() == {"accepted": 1, "ignored": 0}
    assert report(router, "r2", {**down, "unread": 1, "unrewritten": 4}).is_success
    assert report(router, "r1", {**down, "unread": 2, "unrewritten": 0}, seq=2).is_success

    assert all_counts(client, name) == {"slow": (0, 0, 0, 0), "down": (12, 4, 4, 5)}
    listed = client.get("/v1/sandboxes").json()["items"]
    mine = next(item for item in listed if item["name"] == name)
    assert {f["id"]: (f["unread"], f["unrewritten"]) for f in mine["faults"]} == {
        "slow": (0, 0), "down": (4, 5)
    }  # fmt: skip


def test_a_report_from_a_router_without_the_new_counters_is_accepted(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """A router from before `unread`/`unrewritten` sends only matched and injected: they count
    as 0, and never lower what a newer router reported."""
    old = entry(sandbox, "down", 4, 1)
    assert report(router, "old", old).json() == {"accepted": 1, "ignored": 0}
    assert report(router, "new", {**old, "unread": 2, "unrewritten": 1}).is_success
    assert report(router, "new", old, seq=2).is_success

    assert all_counts(client, sandbox["name"])["down"] == (8, 2, 2, 1)


def test_a_replayed_or_older_report_neither_double_counts_nor_lowers(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    name = sandbox["name"]
    assert report(router, "r1", entry(sandbox, "down", 5, 2), seq=2).is_success
    assert report(router, "r1", entry(sandbox, "down", 5, 2), seq=2).is_success  # a retry
    assert report(router, "r1", entry(sandbox, "down", 3, 1), seq=1).is_success  # overtaken
    assert counts(client, name)["down"] == (5, 2)

    assert report(router, "r1", entry(sandbox, "down", 7, 2), seq=3).is_success
    assert counts(client, name)["down"] == (7, 2)


def test_counts_survive_a_control_plane_restart(
    api: Sandboxd, client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    assert report(router, "r1", entry(sandbox, "slow", 9, 8)).is_success

    api.stop()
    api.start()

    assert counts(client, sandbox["name"])["slow"] == (9, 8)


def test_fault_injected_is_recorded_once_per_fault(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    name = sandbox["name"]
    assert report(router, "r1", entry(sandbox, "down", 2, 0)).is_success
    assert injected_events(client, name) == []  # matched, never injected

    assert report(router, "r1", entry(sandbox, "down", 3, 1)).is_success
    assert report(router, "r1", entry(sandbox, "down", 4, 2)).is_success
    assert report(router, "r2", entry(sandbox, "down", 1, 1)).is_success
    assert report(router, "r2", entry(sandbox, "slow", 1, 1)).is_success

    assert injected_events(client, name) == [
        "fault down (tool_error on tools) injected for the first time",
        "fault slow (latency on echo) injected for the first time",
    ]


def test_entries_for_no_live_sandbox_or_fault_are_ignored(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    stranger = {**entry(sandbox, "down", 1, 1), "routingKey": "nosuchkey0000000"}
    misnamed = {**entry(sandbox, "down", 1, 1), "sandbox": "someone-else"}

    answer = report(router, "r1", stranger, misnamed, entry(sandbox, "gone", 1, 1))

    assert answer.json() == {"accepted": 0, "ignored": 3}, answer.text
    assert counts(client, sandbox["name"]) == {"slow": (0, 0), "down": (0, 0)}


def test_counts_go_with_the_sandbox(client: httpx.Client, router: httpx.Client) -> None:
    name = unique("gone")
    old = client.post("/v1/sandboxes", json={"name": name, "faults": FAULTS}).json()
    assert report(router, "r1", entry(old, "down", 5, 5)).is_success
    client.delete(f"/v1/sandboxes/{name}")
    wait_phase(client, name, "Deleted")

    late = report(router, "r1", entry(old, "down", 6, 6))
    new = client.post("/v1/sandboxes", json={"name": name, "faults": FAULTS}).json()

    assert late.json() == {"accepted": 0, "ignored": 1}
    assert new["routingKey"] != old["routingKey"]
    assert counts(client, name) == {"slow": (0, 0), "down": (0, 0)}
    client.delete(f"/v1/sandboxes/{name}")


def test_the_router_token_may_report_and_read_routes_only(
    api: Sandboxd, client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    assert router.get("/v1/routes").status_code == 200
    assert report(router, "r1", entry(sandbox, "down", 1, 0)).status_code == 200
    assert report(client, "r2", entry(sandbox, "down", 1, 0)).status_code == 200  # the admin's
    for method, path in (("GET", "/v1/sandboxes"), ("GET", f"/v1/sandboxes/{sandbox['name']}"),
                         ("PATCH", f"/v1/sandboxes/{sandbox['name']}"),
                         ("DELETE", f"/v1/sandboxes/{sandbox['name']}"),
                         ("GET", "/v1/services")):  # fmt: skip
        answer = router.request(method, path, json={"faults": []})
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"] == "forbidden"
    anonymous = httpx.post(f"{api.url}/v1/router-reports", json={"instance": "r", "seq": 1})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
    assert counts(client, sandbox["name"]) == {"slow": (0, 0), "down": (2, 0)}


def bad_bodies(box: dict[str, Any]) -> list[Any]:
    good = entry(box, "down", 9, 9)
    return [
        [],
        {"seq": 1, "faults": [good]},
        {"instance": "", "seq": 1, "faults": [good]},
        {"instance": "a b", "seq": 1, "faults": [good]},
        {"instance": "x" * 65, "seq": 1, "faults": [good]},
        {"instance": "~retired", "seq": 1, "faults": [good]},  # the folded counts' own
        {"instance": "~retired", "seq": 1, "faults": []},
        {"instance": "r", "seq": 1, "faults": [{**good, "unread": -1}]},
        {"instance": "r", "seq": 1, "faults": [{**good, "unrewritten": "1"}]},
        {"instance": "r", "seq": 1, "faults": [{**good, "unrewritten": 2**53 + 1}]},
        {"instance": "r", "seq": -1, "faults": [good]},
        {"instance": "r", "seq": "1", "faults": [good]},
        {"instance": "r", "seq": 1, "faults": [good], "extra": 1},
        {"instance": "r", "seq": 1, "faults": [good, good]},
        {"instance": "r", "seq": 1, "faults": [{**good, "matched": -1}]},
        {"instance": "r", "seq": 1, "faults": [{**good, "injected": 1.5}]},
        {"instance": "r", "seq": 1, "faults": [{**good, "injected": True}]},
        {"instance": "r", "seq": 1, "faults": [{**good, "matched": 2**53 + 1}]},
        {"instance": "r", "seq": 1, "faults": [{**good, "fault": ""}]},
        {"instance": "r", "seq": 1, "faults": [{**good, "routingKey": "k" * 65}]},
        {"instance": "r", "seq": 1, "faults": [{k: v for k, v in good.items() if k != "fault"}]},
        {"instance": "r", "seq": 1, "faults": [good] + [{**good, "fault": str(i)} for i in range(1000)]},
    ]  # fmt: skip


def test_bad_reports_are_422_and_store_nothing(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    for body in bad_bodies(sandbox):
        answer = router.post("/v1/router-reports", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"] == "invalid_request"
    assert counts(client, sandbox["name"]) == {"slow": (0, 0), "down": (0, 0)}
    assert injected_events(client, sandbox["name"]) == []


def test_router_instances_are_bounded_and_freed_with_their_sandboxes(
    client: httpx.Client, router: httpx.Client
) -> None:
    """Past MAX_INSTANCES (256) a new instance gets 429 and stores nothing; known instances
    still report; the rows, and so the instances, go when their sandbox is deleted."""
    name = unique("many")
    box = client.post("/v1/sandboxes", json={"name": name, "faults": FAULTS}).json()
    answers = [report(router, f"i{n}", entry(box, "slow", 1, 1)).status_code for n in range(257)]
    assert answers[0] == 200 and answers[-1] == 429, answers
    refused = answers.index(429)
    after = report(router, "one-more", entry(box, "slow", 5, 5))
    assert after.status_code == 429 and after.json()["error"] == "too_many_instances"
    assert report(router, "i0", entry(box, "down", 1, 0)).status_code == 200
    assert counts(client, name) == {"slow": (refused, refused), "down": (1, 0)}

    client.delete(f"/v1/sandboxes/{name}")
    wait_phase(client, name, "Deleted")

    again = client.post("/v1/sandboxes", json={"name": unique("many"), "faults": FAULTS}).json()
    assert report(router, "one-more", entry(again, "slow", 5, 5)).status_code == 200
    assert counts(client, again["name"])["slow"] == (5, 5)
    client.delete(f"/v1/sandboxes/{again['name']}")


def test_the_routers_reporter_delivers_changes_and_retries_what_failed(
    api: Sandboxd, client: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """`sandboxd_router.report.Reporter` against the real control plane, with the router's
    token: a report that failed stays pending and goes with the next; unchanged entries are
    not sent again; more than MAX_ENTRIES go in several reports."""
    token = (api.data_dir / "router-token").read_text().strip()
    name, key = sandbox["name"], sandbox["routingKey"]
    counters: list[Entry] = [(name, key, "down", 3, 1, 2, 0)]
    nowhere = f"http://127.0.0.1:{free_port()}"
    reporter = Reporter(url=nowhere, token=token, snapshot=counters.copy, heartbeat=3600)

    asyncio.run(reporter.final())  # nobody listens there
    reporter.url = api.url
    asyncio.run(reporter.final())

    assert all_counts(client, name)["down"] == (3, 1, 2, 0)
    sent = reporter.seq
    asyncio.run(reporter.final())
    assert reporter.seq == sent  # nothing changed, nothing sent
    counters += [(name, key, f"idle{n}", 0, 0, 0, 0) for n in range(3)]
    asyncio.run(reporter.final())
    assert reporter.seq == sent  # faults that never counted anything are not news

    counters[:] = [(name, key, "slow", 2, 2, 0, 1)]
    counters += [(name, key, f"x{n}", 1, 0, 0, 0) for n in range(1000)]
    asyncio.run(reporter.final())
    assert reporter.seq == sent + 2
    assert all_counts(client, name) == {"slow": (2, 2, 0, 1), "down": (3, 1, 2, 0)}

    counters[:] = []  # the engine dropped them: the reporter forgets them too
    asyncio.run(reporter.final())
    counters[:] = [(name, key, "down", 3, 1, 2, 0)]
    asyncio.run(reporter.final())
    assert reporter.seq == sent + 3  # sent again: nothing was remembered of it
    assert counts(client, name)["down"] == (3, 1)  # and, cumulative, counted once


def test_concurrent_reports_add_up_and_record_one_event(
    api: Sandboxd, client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """Routers report at once: every report counts and the first injection is one event (the
    sandbox's row is locked while a report merges)."""
    token = (api.data_dir / "router-token").read_text().strip()

    def send(n: int) -> int:
        with api.client(token=token) as own:
            return report(own, f"c{n}", entry(sandbox, "down", 2, 1)).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, range(16)))

    assert statuses == [200] * 16
    assert counts(client, sandbox["name"])["down"] == (32, 16)
    assert len(injected_events(client, sandbox["name"])) == 1
