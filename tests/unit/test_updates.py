"""What an apply changes (`core.updates.spec_change`), in the words of the `Updated` event."""

from __future__ import annotations

from typing import Any

from sandboxd.core.spec import SandboxSpec
from sandboxd.core.updates import spec_change


def spec(**extra: Any) -> SandboxSpec:
    forks = [{"service": "echo", "env": {"A": "1"}}, {"service": "tools", "command": ["t"]}]
    return SandboxSpec.model_validate({"name": "pr-1", "ttl": "2h", "forks": forks, **extra})


def test_the_same_spec_is_no_change() -> None:
    change = spec_change(spec(), spec())

    assert not change
    assert (change.what, change.forks, change.faults) == ((), False, None)


def test_forks_added_removed_and_changed_name_their_fields() -> None:
    new = spec(forks=[{"service": "echo", "env": {"A": "2"}, "health": "/h"}, {"service": "web"}])

    change = spec_change(spec(), new)

    assert change.forks
    assert change.what == (
        "fork web added",
        "fork tools removed",
        "fork echo changed (env, health)",
    )


def test_labels_ttl_agent_and_faults_change_no_fork() -> None:
    fault = {"service": "echo", "kind": "http_error", "status": 503, "id": "f-1"}
    new = spec(labels={"github.sha": "b"}, ttl="3h", faults=[fault], agent={"promptVersion": "2"})

    change = spec_change(spec(labels={"github.sha": "a"}), new)

    assert not change.forks
    assert change.what == (
        "labels changed (github.sha)",
        "agent version changed",
        "TTL 2h → 3h",
        "faults added f-1",
    )
    assert change.faults == "faults added f-1"


def test_many_labels_are_summed_up() -> None:
    old = spec()
    new = spec(labels={f"k{i}": "v" for i in range(8)})

    assert spec_change(old, new).what == ("labels changed (k0, k1, k2, k3, k4 and 3 more)",)
