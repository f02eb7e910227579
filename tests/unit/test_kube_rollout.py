"""A fork's state from its Deployment's status, and the sandbox verdict that follows from it:
a first start, an update rolling out beside the serving pod, and the ways each can fail."""

from __future__ import annotations

from typing import Any

from sandboxd.core.phases import ForkState, Phase
from sandboxd.core.spec import ForkSpec
from sandboxd.reconciler.decide import UPDATE_FAILED, verdict
from sandboxd.runtime.base import ForkStatus
from sandboxd.runtime.kubernetes import render
from sandboxd.runtime.kubernetes.rollout import REPLICA_FAILURE_GRACE, fork_status, timestamp
from tests.support.kube_objects import BASELINE_DEPLOYMENT

NOW = 1_800_000_000.0
UPSTREAM = "http://echo.sbx-pr-1.svc.cluster.local:80"
DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "echo-7d9" has timed out progressing.',
}


def deployment(*, generation: int = 2, conditions: list[Any] | None = None, **status: int) -> Any:
    return {
        "metadata": {"generation": generation, "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": {"replicas": 1},
        "status": {**status, "conditions": conditions or []},
    }


def observe(obj: Any) -> ForkStatus:
    return fork_status("echo", obj, UPSTREAM, now=NOW)


def said(obj: Any) -> tuple[Phase, str]:
    v = verdict([observe(obj)], now=NOW, health_timeout=1.0)
    return v.phase, v.reason


def test_a_rolled_out_fork_is_ready_and_timed_by_its_own_deadline() -> None:
    fork = observe(
        deployment(observedGeneration=2, replicas=1, updatedReplicas=1, availableReplicas=1)
    )
    assert (fork.state, fork.upstream, fork.replacing, fork.self_timed) == (
        ForkState.READY, UPSTREAM, None, True,
    )  # fmt: skip


def test_a_first_start_is_the_fork_itself_and_fails_the_sandbox_the_plain_way() -> None:
    assert observe(None).state == ForkState.STARTING
    starting = deployment(generation=1)  # just created: no status yet
    assert said(starting) == (Phase.PROVISIONING, "ForksStarting")
    assert observe(starting).message == "0/1 replicas available"
    stuck = deployment(
        generation=1, observedGeneration=1, replicas=1, updatedReplicas=1, conditions=[DEADLINE]
    )
    fork = observe(stuck)
    assert (fork.state, fork.reason, fork.replacing) == (
        ForkState.EXITED, "ProgressDeadlineExceeded", None,
    )  # fmt: skip
    assert said(stuck) == (Phase.FAILED, "ProgressDeadlineExceeded")


def test_an_update_not_yet_seen_by_the_controller_keeps_the_old_copy_and_is_not_ready() -> None:
    """Right after an update is applied the status is the old template's (even a deadline the
    previous, replaced rollout passed): not Ready, and not failed either."""
    applied = deployment(
        generation=3, observedGeneration=2, replicas=1, updatedReplicas=1, availableReplicas=1,
        conditions=[DEADLINE],
    )  # fmt: skip
    fork = observe(applied)
    assert fork.state == ForkState.READY and fork.replacing is not None
    assert fork.replacing.state == ForkState.STARTING
    assert said(applied) == (Phase.PROVISIONING, "ForksUpdating")


def test_an_update_rolling_out_beside_the_serving_pod_is_updating() -> None:
    surged = deployment(
        observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=1,
        unavailableReplicas=1,
    )  # fmt: skip
    fork = observe(surged)
    assert (fork.state, fork.upstream) == (ForkState.READY, UPSTREAM)
    assert fork.replacing is not None and fork.replacing.state == ForkState.STARTING
    assert said(surged) == (Phase.PROVISIONING, "ForksUpdating")
    # the new pod available, the old one not yet removed: still updating, never timed out
    both = deployment(observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=2)
    assert said(both) == (Phase.PROVISIONING, "ForksUpdating")


def test_an_update_past_its_deadline_fails_the_update_and_keeps_the_old_copy() -> None:
    stuck = deployment(
        observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=1,
        unavailableReplicas=1, conditions=[DEADLINE],
    )  # fmt: skip
    fork = observe(stuck)
    assert fork.state == ForkState.READY and fork.upstream == UPSTREAM
    assert fork.replacing is not None
    assert (fork.replacing.state, fork.replacing.reason) == (
        ForkState.EXITED, "ProgressDeadlineExceeded",
    )  # fmt: skip
    v = verdict([fork], now=NOW, health_timeout=1.0)
    assert (v.phase, v.reason) == (Phase.FAILED, UPDATE_FAILED)
    assert "ProgressDeadlineExceeded" in v.message and "old copy keeps serving" in v.message


def test_an_update_whose_pods_are_refused_fails_only_after_the_grace() -> None:
    since = "2027-01-15T08:00:00Z"
    failure = {
        "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
        "message": "pods is forbidden: exceeded quota", "lastTransitionTime": since,
    }  # fmt: skip
    refused = deployment(
        observedGeneration=2, replicas=1, updatedReplicas=0, availableReplicas=1,
        conditions=[failure],
    )  # fmt: skip
    appeared = timestamp(since)
    assert appeared is not None
    early = fork_status("echo", refused, UPSTREAM, now=appeared + 1).replacing
    assert early is not None and early.state == ForkState.STARTING
    assert early.message == "pods is forbidden: exceeded quota"
    late = fork_status("echo", refused, UPSTREAM, now=appeared + REPLICA_FAILURE_GRACE)
    assert late.state == ForkState.READY and late.replacing is not None
    assert late.replacing.reason == "ReplicaFailure"


def test_an_update_with_no_copy_available_still_keeps_the_old_pods() -> None:
    """The old pod is not ready just now: the fork is starting, the update failed, and the
    Deployment (with its old ReplicaSet) is kept."""
    stuck = deployment(
        observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=0,
        unavailableReplicas=2, conditions=[DEADLINE],
    )  # fmt: skip
    fork = observe(stuck)
    assert fork.state == ForkState.STARTING and fork.message == "no copy is available"
    assert said(stuck) == (Phase.FAILED, UPDATE_FAILED)


def test_the_fork_deployment_surges_one_pod_and_keeps_the_old_one_until_then() -> None:
    obj = render.fork_deployment(
        BASELINE_DEPLOYMENT,
        sandbox="pr-1",
        service="cluster-mcp",
        fork=ForkSpec(service="cluster-mcp"),
        agent=None,
        progress_deadline=30,
    )
    assert obj["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert obj["spec"]["progressDeadlineSeconds"] == 30
