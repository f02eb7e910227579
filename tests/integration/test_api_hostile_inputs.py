"""Property-based fuzzing of the API with the classes of input the OpenAPI fuzzer does not reach
(test_openapi_fuzz.py generates from the schema): JSON nested past any schema, numbers past
64 bits, non-ASCII digits and spaces, control and bidi characters, hostile headers and query
strings. Against one real sandboxd: never a 5xx, always a JSON error for a 4xx, nothing stored
changes on a 4xx, and no traceback in the server's log. Bounded: a fixed number of examples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_catalog
from tests.integration.conftest import snapshot
from tests.support.server import Sandboxd, running_sandboxd

EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NAMES = ["fz-a", "fz-b", "fz-c"]  # a small pool, so creates also meet existing sandboxes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxd]:
    root = tmp_path_factory.mktemp("hostile")
    with running_sandboxd(root / "data", catalog=write_catalog(root / "sandboxd.yaml")) as s:
        yield s
        assert "Traceback" not in s.log()


@pytest.fixture(scope="module")
def client(server: Sandboxd) -> Iterator[httpx.Client]:
    with server.client() as c:
        c.post("/v1/sandboxes", json={"name": NAMES[0], "labels": {"keep": "1"}})
        yield c


# Strings a careless parser trips on: non-ASCII digits and spaces, controls, bidi, surrogates
# escaped in JSON, very long runs.
awkward = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(categories=["Nd", "Zs", "Cc", "Cf"]), max_size=6),
    st.sampled_from(["\u0662h", "\uff12h", "1\u00a0h", "\x1b[31m", "\u202e", "\x00", "9" * 40]),
    st.integers(1, 6000).map(lambda n: "x" * n),
)
numbers = st.one_of(
    st.integers(-(2**64), 2**64),
    st.integers(10**9, 10**10),  # past nine digits: a TTL that once failed to spell back
    st.integers(10**18, 10**300),
    st.floats(allow_nan=False),
    st.booleans(),
)
leaves = st.one_of(st.none(), numbers, awkward)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(awkward, inner, max_size=4),
    max_leaves=24,
)
ttls = st.one_of(numbers, awkward, st.sampled_from(["2h", "72h", "73h", "1000000000", "0"]))
specs = st.fixed_dictionaries(
    {"name": st.sampled_from(NAMES) | awkward},
    optional={
        "ttl": ttls,
        "labels": st.dictionaries(awkward, awkward | numbers, max_size=70),
        "agent": st.fixed_dictionaries(
            {},
            optional={
                "promptVersion": awkward,
                "modelVersion": awkward,
                "tools": st.dictionaries(awkward, awkward, max_size=70),
            },
        ),
        "forks": st.lists(st.fixed_dictionaries({"service": awkward}), max_size=3),
        "faults": st.lists(
            st.fixed_dictionaries(
                {"service": st.just("echo"), "kind": st.sampled_from(["latency", "timeout"])},
                optional={"code": numbers, "nth": numbers, "latencyMs": numbers},
            ),
            max_size=2,
        ),
        "extra": json_values,
    },
)
deep = st.integers(10, 200_000).flatmap(
    lambda n: st.sampled_from(["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "[" * n])
)


def well_behaved(response: httpx.Response) -> dict[str, Any] | None:
    """No 5xx; a 4xx has a JSON error body (a 304 has none). The body, for 4xx."""
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and body["error"] and body["message"], body
    return body


def send_and_check(client: httpx.Client, method: str, path: str, **kwargs: Any) -> None:
    before = snapshot(client)
    if well_behaved(client.request(method, path, **kwargs)) is not None:
        assert snapshot(client) == before


@EXAMPLES
@given(body=specs)
def test_create_with_hostile_specs(client: httpx.Client, body: dict[str, Any]) -> None:
    send_and_check(client, "POST", "/v1/sandboxes", content=json.dumps(body),
                   headers={"Content-Type": "application/json"})  # fmt: skip


@EXAMPLES
@given(body=json_values, name=st.sampled_from(NAMES))
def test_patch_with_any_json(client: httpx.Client, body: Any, name: str) -> None:
    # (json.dumps, not httpx's json=, which refuses to encode an infinity the strategy makes:
    # the server must refuse `Infinity` itself)
    send_and_check(client, "PATCH", f"/v1/sandboxes/{name}", content=json.dumps(body),
                   headers={"Content-Type": "application/json"})  # fmt: skip


@EXAMPLES
@given(patch=specs.map(lambda s: {k: v for k, v in s.items() if k in ("ttl", "labels")}))
def test_patch_with_hostile_ttls_and_labels(client: httpx.Client, patch: dict[str, Any]) -> None:
    send_and_check(client, "PATCH", f"/v1/sandboxes/{NAMES[0]}", json=patch)


@settings(EXAMPLES, max_examples=25)
@given(text=deep)
def test_bodies_nested_past_any_parser(client: httpx.Client, text: str) -> None:
    for method, path in (("POST", "/v1/sandboxes"), ("PATCH", f"/v1/sandboxes/{NAMES[0]}")):
        send_and_check(client, method, path, content=text[:200_000],
                       headers={"Content-Type": "application/json"})  # fmt: skip


header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                      exclude_characters="\x7f"), max_size=300)  # fmt: skip


@EXAMPLES
@given(key=header_values, etag=header_values, name=st.sampled_from(NAMES))
def test_hostile_headers(client: httpx.Client, key: str, etag: str, name: str) -> None:
    encoded = [(b"Idempotency-Key", key.strip().encode("latin-1"))]
    send_and_check(client, "POST", "/v1/sandboxes", json={"name": name}, headers=encoded)
    polled = client.get("/v1/routes", params={"wait": "0.01"},
                        headers=[(b"If-None-Match", etag.strip().encode("latin-1"))])  # fmt: skip
    well_behaved(polled)


@EXAMPLES
@given(
    params=st.lists(
        st.tuples(st.sampled_from(["label", "tail", "offset", "wait"]), awkward | numbers.map(str)),
        max_size=80,
    ),
    name=st.sampled_from(NAMES) | awkward,
)
def test_hostile_query_strings_and_paths(
    client: httpx.Client, params: list[tuple[str, str]], name: str
) -> None:
    for path in ("/v1/sandboxes", f"/v1/sandboxes/{name}/logs/echo", "/v1/routes"):
        try:
            response = client.get(path, params=params)
        except httpx.InvalidURL:
            return  # not sendable as a URL at all (httpx refuses it before the server sees it)
        well_behaved(response)


def test_the_server_logged_no_traceback(server: Sandboxd, client: httpx.Client) -> None:
    """Last in the module: every request above was answered without an unhandled error."""
    assert client.get("/readyz").status_code == 200
    assert "Traceback" not in server.log()
    assert "unhandled error" not in server.log()
    assert Path(server.data_dir).is_dir()
