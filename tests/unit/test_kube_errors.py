"""The Kubernetes error tree, built from Status bodies as the real apiserver (v1.36, the
kubernetes tier's) sends them: the class comes from `reason` and `details.causes`."""

from __future__ import annotations

from typing import Any

import pytest

from sandboxd.runtime.kubernetes import errors
from sandboxd.runtime.kubernetes.errors import from_status


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
    body |= {"status": "Failure", "message": message, "reason": reason, "code": code}
    return body | ({"details": details} if details else {})


NOT_FOUND = status(
    404, "NotFound", 'namespaces "nope-x" not found', name="nope-x", kind="namespaces"
)
ALREADY_EXISTS = status(409, "AlreadyExists", 'configmaps "a" already exists', kind="configmaps")
CONFLICT = status(
    409,
    "Conflict",
    'Operation cannot be fulfilled on configmaps "a": the object has been modified; please '
    "apply your changes to the latest version and try again",
    kind="configmaps",
)
INVALID = status(
    422,
    "Invalid",
    'Deployment.apps "d" is invalid: spec.replicas: Invalid value: -1: must be greater than or '
    "equal to 0",
    name="d",
    group="apps",
    kind="Deployment",
    causes=[
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: -1: must be greater than or equal to 0",
            "field": "spec.replicas",
        }
    ],
)
BAD_REQUEST = status(
    400,
    "BadRequest",
    "the object provided is unrecognized (must be of type ConfigMap): couldn't get "
    "version/kind; json parse error: invalid character 'n' looking for beginning of object key "
    "string ({not json)",
)
FORBIDDEN = status(
    403,
    "Forbidden",
    'namespaces is forbidden: User "nobody" cannot list resource "namespaces" in API group "" '
    "at the cluster scope",
    kind="namespaces",
)
TERMINATING = status(
    403,
    "Forbidden",
    'configmaps "b" is forbidden: unable to create new content in namespace cap because it is '
    "being terminated",
    name="b",
    kind="configmaps",
    causes=[
        {
            "reason": "NamespaceTerminating",
            "message": "namespace cap is being terminated",
            "field": "metadata.namespace",
        }
    ],
)
EXPIRED = status(410, "Expired", "too old resource version: 1 (5000)")  # a watch's ERROR event


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (NOT_FOUND, errors.NotFound),
        (ALREADY_EXISTS, errors.AlreadyExists),
        (CONFLICT, errors.Conflict),
        (INVALID, errors.Invalid),
        (BAD_REQUEST, errors.Invalid),
        (FORBIDDEN, errors.Forbidden),
        (TERMINATING, errors.NamespaceTerminating),
        (EXPIRED, errors.Gone),
    ],
)
def test_each_status_becomes_its_class(body: dict[str, Any], kind: type[errors.KubeError]) -> None:
    error = from_status(body["code"], body)
    assert type(error) is kind
    assert (error.reason, error.message, error.code) == (
        body["reason"],
        body["message"],
        body["code"],
    )
    assert str(error) == f"{body['reason']}: {body['message']}"


def test_the_tree_lets_callers_catch_by_meaning() -> None:
    assert isinstance(from_status(409, ALREADY_EXISTS), errors.Conflict)
    assert isinstance(from_status(403, TERMINATING), errors.Forbidden)
    assert not isinstance(from_status(403, FORBIDDEN), errors.NamespaceTerminating)
    assert isinstance(errors.Unreachable("GET /api: ConnectError"), errors.KubeError)


def test_causes_are_kept_for_people_to_read() -> None:
    (cause,) = from_status(422, INVALID).causes
    assert cause == errors.Cause(
        "FieldValueInvalid",
        "Invalid value: -1: must be greater than or equal to 0",
        "spec.replicas",
    )


def test_without_a_known_reason_the_status_code_decides() -> None:
    page = {"message": "GET /apis/x: 404 page not found"}  # a proxy's page, not a Status
    assert type(from_status(404, page, reason="NotFound")) is errors.NotFound
    assert type(from_status(410, {"reason": "SomethingNew"})) is errors.Gone
    unknown = from_status(500, {"reason": "InternalError", "message": "etcd is down"})
    assert type(unknown) is errors.KubeError
    assert str(unknown) == "InternalError: etcd is down"
