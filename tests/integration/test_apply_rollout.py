"""Updating a fork in place under traffic: the whole system on loopback (`sandboxd serve
--with-router --start-baseline`, real fork processes), requests through the real router.

A changed fork is replaced without a gap — no request fails and none reaches the baseline —
and an update whose new copy never gets healthy fails the sandbox while the old copy serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import fork_command
from tests.integration.conftest import wait_phase
from tests.integration.test_with_router import embedded
from tests.support import poll
from tests.support.procs import fork_pids
from tests.support.server import Sandboxd

pytestmark = pytest.mark.slow
NAME = "pr-rollout"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandboxd, str]]:
    env = {"SANDBOXD_HEALTH_TIMEOUT": "3", "SANDBOXD_STOP_GRACE": "1"}
    with embedded(tmp_path_factory.mktemp("rollout"), env=env) as system:
        yield system


def apply(client: httpx.Client, fork: dict[str, Any]) -> dict[str, Any]:
    answer = client.put(f"/v1/sandboxes/{NAME}", json={"name": NAME, "forks": [fork]})
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def greeting(value: str) -> dict[str, Any]:
    return {"service": "echo", "command": fork_command(), "env": {"GREETING": value}}


class Load:
    """Requests through the router with the sandbox's key, one after another on each of
    `clients` keep-alive connections, until stopped: what each was answered."""

    def __init__(self, url: str, key: str, *, clients: int = 4) -> None:
        self.answers: list[tuple[int, str, str]] = []  # (status, sandbox, greeting)
        self.errors: list[str] = []
        self._url, self._key = url, key
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(headers={"baggage": f"sandbox={self._key}"}, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    answer = client.get(self._url)
                except httpx.HTTPError as e:
                    self.errors.append(repr(e))
                    continue
                env = answer.json().get("env", {}) if answer.status_code == 200 else {}
                seen = (env.get("SANDBOXD_SANDBOX", "?"), env.get("GREETING", "?"))
                self.answers.append((answer.status_code, *seen))

    @contextmanager
    def running(self) -> Iterator[Load]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join()

    def greetings(self) -> list[str]:
        return [g for _, _, g in self.answers]


def test_a_changed_fork_is_replaced_under_load_without_a_failed_request(
    system: tuple[Sandboxd, str],
) -> None:
    server, url = system
    with server.client() as client:
        key = apply(client, greeting("v1"))["routingKey"]
        old = wait_phase(client, NAME, "Ready")["forks"][0]
        load = Load(url, key)
        with load.running():
            poll.until(lambda: load.greetings().count("v1"), lambda n: n >= 50, timeout=20)
            updated = apply(client, greeting("v2"))
            assert updated["routingKey"] == key
            poll.until(lambda: load.greetings()[-20:], lambda g: g == ["v2"] * 20, timeout=20)
            poll.until(  # the old copy stopped (after the drain) while traffic went on
                lambda: fork_pids(sandbox=NAME), lambda p: old["pid"] not in p, timeout=20
            )
            served = len(load.answers)
            poll.until(lambda: len(load.answers), lambda n: n >= served + 50, timeout=20)
        now = client.get(f"/v1/sandboxes/{NAME}").json()
        events = client.get(f"/v1/sandboxes/{NAME}/events").json()["items"]

    assert load.errors == []
    assert {(status, sandbox) for status, sandbox, _ in load.answers} == {(200, NAME)}
    switched = load.greetings()
    first_v2 = switched.index("v2")
    assert set(switched[:first_v2]) == {"v1"} and len(switched) - first_v2 >= 70
    assert now["phase"] == "Ready" and now["forks"][0]["pid"] != old["pid"]
    assert fork_pids(sandbox=NAME) == [now["forks"][0]["pid"]]
    replaced = [e["message"] for e in events if e["reason"] == "ForkReplaced"]
    assert replaced == [f"fork echo replaced (pid {old['pid']} → pid {now['forks'][0]['pid']}, "
                        f"{now['forks'][0]['upstream']})"]  # fmt: skip


@pytest.mark.parametrize(
    "broken",
    [
        ["python3", "-c", "print('no config'); raise SystemExit(3)"],  # exits
        ["python3", "-c", "import time; time.sleep(60)"],  # never healthy (3 s here)
    ],
    ids=["exits", "never-healthy"],
)
def test_a_failed_update_keeps_the_old_copy_serving_until_fixed(
    system: tuple[Sandboxd, str], broken: list[str]
) -> None:
    server, url = system
    with server.client() as client:
        key = apply(client, greeting("good"))["routingKey"]
        good = serving(client, url, key, "good", what="the good copy to serve")["forks"][0]

        apply(client, {"service": "echo", "command": broken})

        failed = wait_phase(client, NAME, "Failed")
        assert failed["reason"] == "UpdateFailed"
        assert "the old copy keeps serving" in failed["message"]
        assert (failed["forks"][0]["pid"], failed["forks"][0]["upstream"]) == (
            good["pid"],
            good["upstream"],
        )
        assert all(serves(url, key) == "good" for _ in range(20))
        assert good["pid"] in fork_pids(sandbox=NAME)

        apply(client, greeting("fixed"))
        serving(client, url, key, "fixed", what="the fixed copy to serve")


def serving(client: httpx.Client, url: str, key: str, value: str, *, what: str) -> dict[str, Any]:
    """The sandbox once Ready and its fork answers the sandbox's key with `value`."""
    return dict(
        poll.until(
            lambda: client.get(f"/v1/sandboxes/{NAME}").json(),
            lambda s: s["phase"] == "Ready" and serves(url, key) == value,
            timeout=20,
            what=what,
        )
    )


def serves(url: str, key: str) -> str:
    answer = httpx.get(url, headers={"baggage": f"sandbox={key}"}, timeout=5)
    assert answer.status_code == 200, answer.text
    env = answer.json()["env"]
    assert env["SANDBOXD_SANDBOX"] == NAME
    return str(env.get("GREETING"))


def test_an_update_taken_back_before_its_copy_is_ready_keeps_the_serving_one(
    system: tuple[Sandboxd, str],
) -> None:
    server, url = system
    with server.client() as client:
        key = apply(client, greeting("kept"))["routingKey"]
        kept = serving(client, url, key, "kept", what="the first copy to serve")["forks"][0]
        slow = {**greeting("never"), "command": [*fork_command(), "--delay", "2"]}
        apply(client, slow)
        poll.until(
            lambda: fork_pids(sandbox=NAME), lambda p: len(p) == 2, timeout=10,
            what="the slow new copy to start beside the serving one",
        )  # fmt: skip

        apply(client, greeting("kept"))  # taken back: the spec the serving copy runs

        ready = wait_phase(client, NAME, "Ready")
        poll.until(lambda: fork_pids(sandbox=NAME), lambda p: p == [kept["pid"]], timeout=20,
                   what="the slow copy to be stopped")  # fmt: skip
        time.sleep(2.5)  # (past the slow copy's start: it must not have taken over)
        assert ready["forks"][0]["pid"] == kept["pid"]
        assert client.get(f"/v1/sandboxes/{NAME}").json()["forks"][0]["pid"] == kept["pid"]
        assert serves(url, key) == "kept"
