"""Where requests go: baseline, their sandbox's fork, never another sandbox's."""

from __future__ import annotations

import httpx
import pytest

from tests.router.conftest import KEYS, Origin, Router
from tests.support import access_log, poll


def origin_of(response: httpx.Response) -> str:
    return str(response.json()["origin"])


def test_requests_without_a_key_reach_the_baseline_only(
    router: Router, origins: dict[str, Origin]
) -> None:
    for o in origins.values():
        o.forget()
    for _ in range(5):
        response = httpx.get(f"{router.url}/echo")
        assert origin_of(response) == "baseline"
        assert response.headers["sandboxd-route"] == "baseline"
    assert origins["fork1"].seen() == [] and origins["fork2"].seen() == []


@pytest.mark.parametrize(
    "baggage",
    [
        "sandbox={key}",
        "userid=alice,sandbox={key},tenant=acme",
        "userid=alice , sandbox = {key} ;prop=1;other , tenant=acme",
        "sandbox=%6B%65%79{rest}",  # percent-encoded "key" + the rest
    ],
)
def test_a_sandbox_key_reaches_its_fork(router: Router, baggage: str) -> None:
    key = KEYS["pr-1"]
    value = baggage.format(key=key, rest=key[3:])
    response = httpx.get(f"{router.url}/echo", headers={"baggage": value})
    assert origin_of(response) == "fork1"
    assert response.headers["sandboxd-route"] == "sandbox=pr-1"
    assert dict(response.json()["received"]["headers"])["baggage"] == value  # byte for byte


def test_baggage_split_over_several_headers_is_combined(router: Router) -> None:
    headers = [("baggage", "userid=alice"), ("baggage", f"sandbox={KEYS['pr-2']}")]
    response = httpx.get(f"{router.url}/echo", headers=headers)
    assert origin_of(response) == "fork2"
    forwarded = [v for k, v in response.json()["received"]["headers"] if k.lower() == "baggage"]
    assert forwarded == ["userid=alice", f"sandbox={KEYS['pr-2']}"]


def test_two_sandboxes_never_see_each_others_forks(
    router: Router, origins: dict[str, Origin]
) -> None:
    for o in origins.values():
        o.forget()
    for _ in range(10):
        assert (
            origin_of(
                httpx.get(f"{router.url}/echo", headers={"baggage": f"sandbox={KEYS['pr-1']}"})
            )
            == "fork1"
        )
        assert (
            origin_of(
                httpx.get(f"{router.url}/echo", headers={"baggage": f"sandbox={KEYS['pr-2']}"})
            )
            == "fork2"
        )
    assert all(KEYS["pr-2"] not in str(r["headers"]) for r in origins["fork1"].seen())
    assert all(KEYS["pr-1"] not in str(r["headers"]) for r in origins["fork2"].seen())


@pytest.mark.parametrize(
    "baggage",
    [
        "sandbox=unknownkey0000",  # no such sandbox
        f"sandbox={KEYS['pr-3']}",  # a sandbox that forks nothing
        f"sandboxx={KEYS['pr-1']}",  # another member whose name only starts alike
        f"xsandbox={KEYS['pr-1']}",
        f"other=sandbox={KEYS['pr-1']}",  # the key as a value, not a member
        "sandbox=%ZZ",  # malformed percent-encoding
        ",,,;;;===",  # garbage
        ",".join(f"m{i}=v" for i in range(64)) + f",sandbox={KEYS['pr-1']}",  # member 65
        "m=" + "v" * 8200 + f",sandbox={KEYS['pr-1']}",  # past 8192 bytes
    ],
)
def test_anything_else_reaches_the_baseline(router: Router, baggage: str) -> None:
    response = httpx.get(f"{router.url}/echo", headers={"baggage": baggage})
    assert response.status_code == 200
    assert origin_of(response) == "baseline"
    assert response.headers["sandboxd-route"] == "baseline"


def test_an_unreachable_fork_is_a_502_naming_sandbox_and_service(router: Router) -> None:
    response = httpx.get(f"{router.url}/echo", headers={"baggage": f"sandbox={KEYS['dead']}"})
    assert response.status_code == 502
    body = response.json()
    assert body["sandbox"] == "dead" and body["service"] == "echo"
    assert body["error"] == "upstream_unreachable"
    assert response.headers["sandboxd-route"] == "sandbox=dead"


def test_an_upstream_that_does_not_answer_in_time_is_a_504(router: Router) -> None:
    response = httpx.get(f"{router.url}/slow?ms=4000", timeout=10)  # the router waits 2 s
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


def test_access_log_has_one_json_line_per_request_without_secrets(router: Router) -> None:
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    httpx.get(f"{router.url}/echo", headers={"traceparent": trace, "authorization": "Bearer s3cret",
                                              "baggage": f"sandbox={KEYS['pr-1']}"})  # fmt: skip
    entry = poll.until(
        lambda: access_log.entries(router.log, trace_id="4bf92f3577b34da6a3ce929d0e0e4736"),
        timeout=5,
        what="the request's line in the access log",
    )[0]
    assert (
        entry["route"] == "sandbox=pr-1" and entry["status"] == 200 and entry["service"] == "echo"
    )
    assert "s3cret" not in router.log.read_text()
