"""What an apply (`PUT /v1/sandboxes/{name}`) changes in a sandbox's spec, in words for the
`Updated` event, and whether its forks must run again. Pure: the store calls it inside the
transaction that writes the new spec, so the words match what was replaced."""

from __future__ import annotations

from dataclasses import dataclass

from sandboxd.core.faults import changes as fault_changes
from sandboxd.core.spec import ForkSpec, SandboxSpec

_FORK_FIELDS = ("command", "args", "env", "health", "image")


@dataclass(frozen=True, slots=True)
class SpecChange:
    what: tuple[str, ...]
    """One phrase per thing changed (empty: the same spec)."""
    forks: bool
    """The forks differ: some must start, stop or be replaced."""
    faults: str | None
    """What the faults' change did (`faults.changes`), for a `FaultsChanged` event."""

    def __bool__(self) -> bool:
        return bool(self.what)


def spec_change(old: SandboxSpec, new: SandboxSpec) -> SpecChange:
    """`old` → `new`, each part in words (`fork echo changed (env)`, `labels changed`...)."""
    what = [*_forks(old.forks, new.forks)]
    forks = bool(what)
    if old.labels != new.labels:
        what.append(_labels(old.labels, new.labels))
    if old.agent != new.agent:
        what.append("agent version changed")
    if old.ttl != new.ttl:
        what.append(f"TTL {old.ttl} → {new.ttl}")
    faults = fault_changes(old.faults, new.faults)
    if faults is not None:
        what.append(faults)
    return SpecChange(tuple(what), forks=forks, faults=faults)


def _forks(old: list[ForkSpec], new: list[ForkSpec]) -> list[str]:
    before = {f.service: f for f in old}
    after = {f.service: f for f in new}
    said = [f"fork {s} added" for s in after if s not in before]
    said += [f"fork {s} removed" for s in before if s not in after]
    for service, fork in after.items():
        prior = before.get(service)
        if prior is not None and prior != fork:
            fields = [n for n in _FORK_FIELDS if getattr(prior, n) != getattr(fork, n)]
            said.append(f"fork {service} changed ({', '.join(fields)})")
    return said


def _labels(old: dict[str, str], new: dict[str, str]) -> str:
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return f"labels changed ({shown})"
