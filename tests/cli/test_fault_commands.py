"""`sandbox fault add/list/clear` and `up -f` with `faults:`, against a real sandboxd (whose
catalog has one http service, `echo`)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml

from tests.cli.conftest import Invoke
from tests.cli.helpers import stored
from tests.support.server import Sandboxd


def new_sandbox(server: Sandboxd) -> str:
    name = f"flt-{uuid.uuid4().hex[:8]}"
    with server.client() as client:
        assert client.post("/v1/sandboxes", json={"name": name}).status_code == 201
    return name


def test_add_appends_faults_and_list_shows_them_with_ids_and_counts(
    server: Sandboxd, sandbox: Invoke
) -> None:
    name = new_sandbox(server)

    slow = sandbox("fault", "add", name, "--service", "echo", "--kind", "latency",
                   "--latency-ms", "1500", "--path", "/api/*", "--http-method", "GET",
                   "--probability", "0.5", "--seed", "7", "--id", "slow")  # fmt: skip
    trim = sandbox("fault", "add", name, "--service", "echo", "--kind", "drop_fields",
                   "--field", "items.0.name", "--field", "total", "--after", "2",
                   "--times", "3")  # fmt: skip
    listed = sandbox("fault", "list", name)

    assert slow.exit_code == 0, slow.output
    assert trim.exit_code == 0, trim.output
    faults = stored(server, name)["faults"]
    assert faults[0]["id"] == "slow"
    generated = faults[1]["id"]
    assert slow.stdout == f"fault slow added to sandbox {name}\n"
    assert trim.stdout == f"fault {generated} added to sandbox {name}\n"
    assert faults[0] == {
        "id": "slow", "service": "echo", "kind": "latency", "path": "/api/*",
        "httpMethod": "GET", "latencyMs": 1500, "probability": 0.5, "seed": 7,
        "matched": 0, "injected": 0, "unread": 0, "unrewritten": 0,
    }  # fmt: skip
    assert faults[1]["fields"] == ["items.0.name", "total"]
    lines = listed.stdout.splitlines()
    assert listed.exit_code == 0, listed.output
    assert lines[0].split() == ["ID", "SERVICE", "KIND", "MATCH", "SCHEDULE", "MATCHED",
                                "INJECTED", "UNREAD", "UNREWRITTEN"]  # fmt: skip
    assert lines[1].split() == ["slow", "echo", "latency", "path=/api/*", "httpMethod=GET",
                                "probability=0.5", "seed=7", "0", "0", "0", "0"]  # fmt: skip
    assert lines[2].split() == [generated, "echo", "drop_fields", "any", "request", "after=2",
                                "times=3", "0", "0", "0", "0"]  # fmt: skip


def test_list_shows_the_counts_the_routers_reported(server: Sandboxd, sandbox: Invoke) -> None:
    name = new_sandbox(server)
    sandbox("fault", "add", name, "--service", "echo", "--kind", "drop_fields",
            "--field", "total", "--id", "trim")  # fmt: skip
    key = stored(server, name)["routingKey"]
    entry = {"sandbox": name, "routingKey": key, "fault": "trim",
             "matched": 7, "injected": 5, "unread": 2, "unrewritten": 3}  # fmt: skip
    token = (server.data_dir / "router-token").read_text().strip()
    with server.client(token=token) as router:
        sent = router.post(
            "/v1/router-reports", json={"instance": "r", "seq": 1, "faults": [entry]}
        )
        assert sent.status_code == 200, sent.text

    table = sandbox("fault", "list", name)
    as_json = sandbox("fault", "list", name, "-o", "json")

    assert table.exit_code == 0 and as_json.exit_code == 0, table.output + as_json.output
    assert table.stdout.splitlines()[1].split()[-4:] == ["7", "5", "2", "3"]
    [item] = json.loads(as_json.stdout)["items"]
    assert {k: item[k] for k in ("matched", "injected", "unread", "unrewritten")} == {
        "matched": 7, "injected": 5, "unread": 2, "unrewritten": 3
    }  # fmt: skip


def test_list_and_add_print_the_api_objects_as_json_or_yaml(
    server: Sandboxd, sandbox: Invoke
) -> None:
    name = new_sandbox(server)

    added = sandbox("fault", "add", name, "--service", "echo", "--kind", "reset", "-o", "json")
    listed = sandbox("fault", "list", name, "-o", "yaml")

    assert added.exit_code == 0 and listed.exit_code == 0, added.output + listed.output
    body = stored(server, name)
    assert json.loads(added.stdout)["faults"] == body["faults"]
    assert yaml.safe_load(listed.stdout) == {"items": body["faults"]}


def test_clear_removes_one_fault_by_id_or_all(server: Sandboxd, sandbox: Invoke) -> None:
    name = new_sandbox(server)
    for fault_id in ("a", "b", "c"):
        sandbox("fault", "add", name, "--service", "echo", "--kind", "reset", "--id", fault_id)

    one = sandbox("fault", "clear", name, "b")
    assert one.exit_code == 0, one.output
    assert one.stdout == f"fault b removed from sandbox {name}\n"
    assert [f["id"] for f in stored(server, name)["faults"]] == ["a", "c"]

    missing = sandbox("fault", "clear", name, "zz")
    assert missing.exit_code == 6
    assert "has no fault zz (its faults: a, c)" in missing.stderr
    assert [f["id"] for f in stored(server, name)["faults"]] == ["a", "c"]

    every = sandbox("fault", "clear", name)
    assert every.exit_code == 0, every.output
    assert every.stdout == f"2 faults removed from sandbox {name}\n"
    assert stored(server, name)["faults"] == []
    assert sandbox("fault", "list", name).stdout == "(no faults)\n"


def test_a_fault_the_server_refuses_exits_2_naming_the_field_and_changes_nothing(
    server: Sandboxd, sandbox: Invoke
) -> None:
    name = new_sandbox(server)
    sandbox("fault", "add", name, "--service", "echo", "--kind", "reset", "--id", "kept")
    before = stored(server, name)

    no_latency = sandbox("fault", "add", name, "--service", "echo", "--kind", "latency")
    mcp_on_http = sandbox("fault", "add", name, "--service", "echo", "--kind", "tool_error")
    duplicate = sandbox("fault", "add", name, "--service", "echo", "--kind", "reset",
                        "--id", "kept")  # fmt: skip

    assert no_latency.exit_code == 2
    assert "faults[1].latencyMs: kind latency needs latencyMs" in no_latency.stderr
    assert mcp_on_http.exit_code == 2
    assert "faults[1].kind: tool_error applies to mcp services" in mcp_on_http.stderr
    assert duplicate.exit_code == 2
    assert "faults[1].id: id 'kept' is already used by faults[0]" in duplicate.stderr
    assert stored(server, name)["faults"] == before["faults"]


def test_fault_commands_on_a_missing_sandbox_exit_6(sandbox: Invoke) -> None:
    for args in (["add", "nobody-here", "--service", "echo", "--kind", "reset"],
                 ["list", "nobody-here"], ["clear", "nobody-here"]):  # fmt: skip
        result = sandbox("fault", *args)
        assert result.exit_code == 6, result.output
        assert "sandbox nobody-here not found" in result.stderr


def test_up_takes_faults_in_the_spec_file(
    server: Sandboxd, sandbox: Invoke, tmp_path: Path
) -> None:
    name = f"upf-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"name": name, "faults": [{"service": "echo", "kind": "http_error", "status": 500}]}
        )
    )

    result = sandbox("up", "-f", str(spec), "--no-wait", "-o", "json")

    assert result.exit_code == 0, result.output
    faults = stored(server, name)["faults"]
    assert [(f["kind"], f["status"]) for f in faults] == [("http_error", 500)]
    assert faults[0]["id"].startswith("f-")
    listed = sandbox("fault", "list", name).stdout.splitlines()
    assert listed[1].split()[:3] == [faults[0]["id"], "echo", "http_error"]
