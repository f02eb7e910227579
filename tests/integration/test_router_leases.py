"""Router instances silent for longer than their lease are folded (a control plane with a 2 s
lease): the sums `GET` shows do not change, a retired instance that reports again gets 409
with what was folded for it, and the router's `Reporter` then counts on under a new id, neither
losing nor doubling anything. The cap on instances is in test_router_lease_store.py, where the
lease can be long while 256 instances report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from sandboxd_router.report import Entry, Reporter
from tests.integration.conftest import wait_phase
from tests.integration.test_router_reports import (
    FAULTS,
    all_counts,
    entry,
    report,
    unique,
)
from tests.support.server import Sandboxd

LEASE = 2.0
SANDBOXD_ENV = {"SANDBOXD_ROUTER_LEASE": str(LEASE)}


@pytest.fixture
def router(api: Sandboxd) -> Iterator[httpx.Client]:
    with api.client(token=(api.data_dir / "router-token").read_text().strip()) as c:
        yield c


@pytest.fixture
def sandbox(client: httpx.Client) -> Iterator[dict[str, Any]]:
    created = client.post("/v1/sandboxes", json={"name": unique("lease"), "faults": FAULTS})
    assert created.status_code == 201, created.text
    yield created.json()
    client.delete(f"/v1/sandboxes/{created.json()['name']}")


def silence() -> None:
    """Let every instance's lease run out (the control plane compares its own clock)."""
    time.sleep(LEASE * 1.25 + 0.25)


def full(box: dict[str, Any], fault: str, *counts: int) -> dict[str, Any]:
    unread, unrewritten = counts[2:]
    return {**entry(box, fault, *counts[:2]), "unread": unread, "unrewritten": unrewritten}


def test_a_silent_instance_is_folded_and_the_sums_stay(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    name = sandbox["name"]
    assert report(router, "gone", full(sandbox, "down", 5, 2, 1, 1)).is_success
    assert report(router, "also-gone", full(sandbox, "down", 1, 1, 0, 0)).is_success
    before = all_counts(client, name)

    silence()
    assert report(router, "poke").status_code == 200  # any report retires the silent ones

    assert all_counts(client, name) == before == {"slow": (0, 0, 0, 0), "down": (6, 3, 1, 1)}
    assert report(router, "fresh", full(sandbox, "down", 2, 1, 0, 0)).is_success
    assert all_counts(client, name)["down"] == (8, 4, 1, 1)
    again = report(router, "gone", full(sandbox, "down", 6, 2, 1, 1), seq=2)
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "instance_retired"
    assert all_counts(client, name)["down"] == (8, 4, 1, 1)


def test_a_retired_instance_is_given_back_what_was_folded_for_it(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    first = report(
        router, "cut-off", full(sandbox, "down", 4, 3, 2, 1), full(sandbox, "slow", 9, 9, 0, 0)
    )
    assert first.is_success
    silence()

    for seq in (2, 3):  # told every time, and nothing is stored meanwhile
        answer = report(router, "cut-off", full(sandbox, "down", 8, 6, 2, 1), seq=seq)
        assert answer.status_code == 409, answer.text
        assert sorted(answer.json()["folded"], key=lambda f: f["fault"]) == [
            {"routingKey": sandbox["routingKey"], "fault": "down",
             "matched": 4, "injected": 3, "unread": 2, "unrewritten": 1},
            {"routingKey": sandbox["routingKey"], "fault": "slow",
             "matched": 9, "injected": 9, "unread": 0, "unrewritten": 0},
        ]  # fmt: skip
    heartbeat = router.post("/v1/router-reports", json={"instance": "cut-off", "seq": 4})
    assert heartbeat.status_code == 409
    assert all_counts(client, sandbox["name"]) == {"slow": (9, 9, 0, 0), "down": (4, 3, 2, 1)}


def test_a_heartbeat_keeps_an_instance_from_being_folded(
    client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    assert report(router, "beating", full(sandbox, "down", 3, 1, 0, 0)).is_success
    for seq in range(2, 6):  # a report with no entries, more often than the lease
        time.sleep(LEASE / 4)
        assert report(router, "beating", seq=seq).status_code == 200
    assert report(router, "beating", full(sandbox, "down", 4, 1, 0, 0), seq=6).status_code == 200
    assert all_counts(client, sandbox["name"])["down"] == (4, 1, 0, 0)


def test_the_reporter_takes_a_new_id_and_the_totals_stay_exact(
    api: Sandboxd, client: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """The real `Reporter`: retired twice, it reports under a third id only what it counted
    since what was folded; `GET` shows exactly its counters every time."""
    token = (api.data_dir / "router-token").read_text().strip()
    name, key = sandbox["name"], sandbox["routingKey"]
    counters: list[Entry] = [(name, key, "down", 3, 1, 1, 0), (name, key, "slow", 2, 2, 0, 0)]
    reporter = Reporter(url=api.url, token=token, snapshot=counters.copy, heartbeat=3600)
    asyncio.run(reporter.final())
    ids = [reporter.instance]

    for down, slow in (((5, 2, 1, 1), (2, 2, 0, 0)), ((9, 4, 2, 1), (3, 3, 0, 0))):
        silence()
        counters[:] = [(name, key, "down", *down), (name, key, "slow", *slow)]
        asyncio.run(reporter.final(timeout=5))
        ids.append(reporter.instance)
        assert all_counts(client, name) == {"down": down, "slow": slow}

    assert len(set(ids)) == 3
    counters[:] = [(name, key, "down", 10, 4, 2, 1), (name, key, "slow", 3, 3, 0, 0)]
    asyncio.run(reporter.final())  # no silence: the same instance, nothing folded
    assert reporter.instance == ids[-1]
    assert all_counts(client, name) == {"down": (10, 4, 2, 1), "slow": (3, 3, 0, 0)}


def test_the_reporter_renews_its_lease_with_empty_reports(
    api: Sandboxd, client: httpx.Client, sandbox: dict[str, Any]
) -> None:
    token = (api.data_dir / "router-token").read_text().strip()
    name, key = sandbox["name"], sandbox["routingKey"]
    counters: list[Entry] = [(name, key, "down", 3, 1, 0, 0)]
    reporter = Reporter(url=api.url, token=token, snapshot=counters.copy, heartbeat=LEASE / 8)
    asyncio.run(reporter.final())
    instance, sent = reporter.instance, reporter.seq

    for _ in range(5):  # nothing changes; the reporter still speaks within every lease
        time.sleep(LEASE / 4)
        asyncio.run(reporter.final())
    counters[:] = [(name, key, "down", 4, 1, 0, 0)]
    asyncio.run(reporter.final())

    assert reporter.seq >= sent + 5 and reporter.instance == instance
    assert all_counts(client, name)["down"] == (4, 1, 0, 0)


def test_deleting_a_sandbox_removes_what_was_folded_for_it(
    client: httpx.Client, router: httpx.Client
) -> None:
    name = unique("lease-gone")
    box = client.post("/v1/sandboxes", json={"name": name, "faults": FAULTS}).json()
    other = client.post("/v1/sandboxes", json={"name": unique("lease"), "faults": FAULTS}).json()
    assert report(router, "old", full(box, "down", 4, 4, 0, 0)).is_success
    silence()
    assert report(router, "poke").status_code == 200  # any report retires the silent ones
    assert report(router, "old", seq=2).status_code == 409

    client.delete(f"/v1/sandboxes/{name}")
    wait_phase(client, name, "Deleted")

    # nothing was folded for `old` any more: it is a new instance again, and counts once
    assert report(router, "old", full(other, "down", 1, 0, 0, 0), seq=3).status_code == 200
    assert all_counts(client, other["name"])["down"] == (1, 0, 0, 0)
    client.delete(f"/v1/sandboxes/{other['name']}")


def test_reports_racing_the_folding_count_exactly_once(
    api: Sandboxd, client: httpx.Client, router: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """Silent instances report again while new ones report, at once: every report's pass
    tries to fold the silent ones. Each is folded once (its leases are locked, skipped by the
    other passes), each silent one is told so, and no report fails."""
    for n in range(16):
        assert report(router, f"old{n}", full(sandbox, "down", 2, 1, 0, 0)).is_success
    silence()
    token = (api.data_dir / "router-token").read_text().strip()

    def send(n: int) -> tuple[str, int]:
        instance = f"old{n // 2}" if n % 2 else f"new{n // 2}"
        counts = (2, 1, 0, 0) if n % 2 else (1, 1, 0, 1)
        with api.client(token=token) as own:
            answer = report(own, instance, full(sandbox, "down", *counts), seq=2)
        return instance[:3], answer.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(32)))

    assert sorted(answers) == [("new", 200)] * 16 + [("old", 409)] * 16
    assert all_counts(client, sandbox["name"])["down"] == (16 * 2 + 16, 16 + 16, 0, 16)
