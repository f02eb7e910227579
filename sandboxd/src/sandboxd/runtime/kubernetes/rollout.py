"""A fork's state, read from its Deployment's status the way `kubectl rollout status` reads it.

The Deployment's status rather than its pods: the deployment controller computes it from all of
the Deployment's ReplicaSets at once and stamps it with `observedGeneration`, so one object (kept
by the informer) tells whether the current template is rolled out, whether pods of an earlier
template are still there (the copy that serves while an update rolls out: the fork's Deployment
surges one new pod and removes the old one only once the new one is available), and whether the
rollout failed (`ProgressDeadlineExceeded`, `ReplicaFailure`). Reading pods would take another
watch and redo the controller's pod-template-hash bookkeeping.

A rollout that replaces a serving copy is reported as the serving fork with `replacing` set to
the new copy's state, so a failed update leaves the old pod serving rather than failing the
sandbox. A first start (no earlier pods) is reported as the fork itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sandboxd.runtime.base import ForkState, ForkStatus

Obj = dict[str, Any]
REPLICA_FAILURE_GRACE = 15.0  # the ReplicaSet controller retries; fail only if it persists


def fork_status(service: str, deployment: Obj | None, upstream: str, *, now: float) -> ForkStatus:
    """Ready once the current template's replicas are all available and no earlier pod is
    left; failed when the Deployment says the current template cannot get there."""
    if deployment is None:
        return waiting(service, "the Deployment is not there yet")
    meta, status = deployment["metadata"], deployment.get("status") or {}
    wanted = deployment["spec"].get("replicas", 1)
    observed = status.get("observedGeneration", 0) >= meta.get("generation", 1)
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    # before the controller has seen the new template, every pod counted is an earlier one's
    earlier = status.get("replicas", 0) - (updated if observed else 0)
    started = timestamp(meta.get("creationTimestamp"))
    if observed and updated >= wanted and earlier <= 0 and available >= updated:
        return ForkStatus(service, ForkState.READY, upstream, None, started, self_timed=True)
    if earlier <= 0:  # a first start: the fork is its one copy
        pending = f"{available}/{wanted} replicas available"
        return _current(service, status, upstream, started, pending, observed=observed, now=now)
    pending = "the new copy is not available yet" if observed else "the rollout has not started"
    new = _current(service, status, upstream, started, pending, observed=observed, now=now)
    serving = ForkState.READY if available > 0 else ForkState.STARTING
    message = None if available > 0 else "no copy is available"
    return ForkStatus(
        service, serving, upstream, None, started, message, self_timed=True, replacing=new
    )


def _current(
    service: str,
    status: Obj,
    upstream: str,
    started: float | None,
    pending: str,
    *,
    observed: bool,
    now: float,
) -> ForkStatus:
    """The state of the current template's pods: failed, or starting (`pending` says how far).
    Conditions written for an earlier generation (a deadline passed by the rollout an update
    replaced) say nothing of this one."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []} if observed else {}
    failure = conditions.get("ReplicaFailure")
    if failure and failure.get("status") == "True":
        message = failure.get("message") or "pods cannot be created"
        since = timestamp(failure.get("lastTransitionTime")) or now
        if now - since >= REPLICA_FAILURE_GRACE:
            return failed(service, "ReplicaFailure", message, upstream, started)
        pending = message
    progressing = conditions.get("Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        message = progressing.get("message") or "the rollout passed its progress deadline"
        return failed(service, "ProgressDeadlineExceeded", message, upstream, started)
    # timed by the Deployment's own progress deadline, which restarts with every rollout
    return ForkStatus(
        service, ForkState.STARTING, upstream, None, started, pending, self_timed=True
    )


def waiting(service: str, message: str) -> ForkStatus:
    return ForkStatus(service, ForkState.STARTING, None, None, None, message)


def failed(
    service: str,
    reason: str,
    message: str,
    upstream: str | None = None,
    started: float | None = None,
) -> ForkStatus:
    return ForkStatus(service, ForkState.EXITED, upstream, None, started, message, reason=reason)


def timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
