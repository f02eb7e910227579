"""Who calls the API, and what a scoped token may touch.

The admin token may do everything. A scoped token (`sandboxd token create NAME --label
github.repo=acme/agents`) is bound to one label: it may create, update, read and delete only
sandboxes whose labels hold that label, and call nothing else but the catalog. A create
without the label gets it; one with another value is refused, as is a change that would take a
sandbox out of the scope. Pure: the API's dependencies and handlers ask these questions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sandboxd.core.labels import check_labels

TOKEN_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
ADMIN = "admin"
ROUTER = "router"


def hash_token(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Scope:
    """The label every sandbox a scoped token touches must hold."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Scope:
        """`key=value`, with the rules of labels; ValueError otherwise."""
        key, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"scope {text[:80]!r} is not key=value")
        check_labels({key: value})
        if not value:
            raise ValueError(f"scope {key}= needs a value")
        return cls(key, value)

    def __str__(self) -> str:
        return f"{self.key}={self.value}"

    def holds(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) == self.value


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from: the token's name, and its scope (None: the admin)."""

    name: str
    scope: Scope | None = None
    router: bool = False

    @property
    def admin(self) -> bool:
        return self.scope is None and not self.router


class OutOfScope(Exception):
    """A scoped token asked for a sandbox outside its scope (a 403)."""


def scoped_labels(caller: Caller, labels: Mapping[str, str]) -> dict[str, str]:
    """The labels a create or an apply stores: the scope's label added when missing; another
    value for it is out of scope."""
    scope = caller.scope
    if scope is None:
        return dict(labels)
    given = labels.get(scope.key)
    if given is not None and given != scope.value:
        raise OutOfScope(
            f"token {caller.name!r} may only make sandboxes labelled {scope}, not "
            f"{scope.key}={given}"
        )
    return {**labels, scope.key: scope.value}


def check_sandbox(caller: Caller, name: str, labels: Mapping[str, str]) -> None:
    """Raises OutOfScope unless `caller` may touch the sandbox `name` with these labels."""
    if caller.scope is not None and not caller.scope.holds(labels):
        raise OutOfScope(f"token {caller.name!r} may only touch sandboxes labelled {caller.scope}")


def valid_name(name: str) -> str:
    if not TOKEN_NAME.fullmatch(name) or name in (ADMIN, ROUTER):
        raise ValueError(
            f"token name {name[:80]!r} must be 1-64 characters of a-z, 0-9, '.', '_' or '-', "
            f"starting and ending with a letter or digit, and not {ADMIN!r} or {ROUTER!r}"
        )
    return name
