"""What runs on the machine, seen the way an operator would: /proc, not sandboxd's word."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _environ(pid_dir: Path) -> dict[str, str]:
    try:
        raw = (pid_dir / "environ").read_bytes()
        state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return {}
    if state == "Z":
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0"))
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def fork_pids(*, sandbox: str | None = None, owner: str | None = None) -> list[int]:
    """Live processes started by sandboxd as forks (of `sandbox`, if given)."""
    pids = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        env = _environ(pid_dir)
        if env.get("SANDBOXD_ROLE") != "fork":
            continue
        if sandbox is not None and env.get("SANDBOXD_SANDBOX") != sandbox:
            continue
        if owner is not None and env.get("SANDBOXD_OWNER") != owner:
            continue
        pids.append(int(pid_dir.name))
    return sorted(pids)
