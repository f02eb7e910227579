"""The variables that mark a process as sandboxd's, and how a fork's are read back.

Markers are how a restarted sandboxd finds the forks an earlier run started (`/proc/<pid>/environ`).
But a fork is PR code and can rewrite its own environment (exec itself with another one), so on
the way back every marker is untrusted input: each is parsed strictly, and a fork's identity
(sandbox, uid, service, plan digest, port, health path) is sealed with an HMAC whose key lives in
the data dir, which forks cannot see. A fork whose markers do not parse or whose seal does not
match is not adopted (a changed port could point the router at the control plane; a copied
sandbox name could take over another sandbox's traffic); sandboxd stops it instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

OWNER = "SANDBOXD_OWNER"
ROLE = "SANDBOXD_ROLE"
SANDBOX = "SANDBOXD_SANDBOX"
UID = "SANDBOXD_SANDBOX_UID"
SERVICE = "SANDBOXD_FORK"
DIGEST = "SANDBOXD_PLAN"
HEALTH = "SANDBOXD_HEALTH"
SEAL = "SANDBOXD_SEAL"
PORT = "PORT"

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{16}")
_PATH = re.compile(r"/[\x21-\x7e]{0,1023}")  # printable ASCII, no spaces: it goes in a request line


class BadMarkers(ValueError):
    """A process carries our owner id but markers sandboxd did not write."""


@dataclass(frozen=True, slots=True)
class ForkMarkers:
    sandbox: str
    uid: str
    service: str
    digest: str
    port: int
    health: str | None

    def env(self, key: bytes) -> dict[str, str]:
        """The fork's markers, seal included (without the owner and the role)."""
        return {
            SANDBOX: self.sandbox,
            UID: self.uid,
            SERVICE: self.service,
            DIGEST: self.digest,
            PORT: str(self.port),
            HEALTH: self.health or "",
            SEAL: self.seal(key),
        }

    def seal(self, key: bytes) -> str:
        fields = (self.sandbox, self.uid, self.service, self.digest, str(self.port))
        message = "\0".join((*fields, self.health or ""))
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def read(cls, env: Mapping[str, str], *, key: bytes) -> ForkMarkers:
        """The markers of a fork, checked; BadMarkers says what is wrong with them."""
        markers = cls(
            sandbox=_match(_LABEL, env, SANDBOX),
            uid=_match(_TOKEN, env, UID),
            service=_match(_LABEL, env, SERVICE),
            digest=_match(_HEX, env, DIGEST),
            port=_port(env.get(PORT, "")),
            health=_match(_PATH, env, HEALTH) if env.get(HEALTH) else None,
        )
        if not hmac.compare_digest(env.get(SEAL, "").encode(), markers.seal(key).encode()):
            raise BadMarkers(f"{SEAL} does not match its markers")
        return markers


def _match(pattern: re.Pattern[str], env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if pattern.fullmatch(value) is None:
        raise BadMarkers(f"{name}={value[:80]!r} is not a value sandboxd writes")
    return value


def _port(value: str) -> int:
    # str.isdigit() accepts other scripts' digits and int() would take them: ASCII only
    if not (value.isascii() and value.isdigit() and 0 < len(value) <= 5 and 0 < int(value) < 65536):
        raise BadMarkers(f"{PORT}={value[:80]!r} is not a port")
    return int(value)


def load_key(path: Path) -> bytes:
    """The seal key in the data dir, made (0600) on first use."""
    try:
        key = bytes.fromhex(path.read_text().strip())
        if len(key) >= 16:
            return key
        path.unlink()  # unusable: a new key (forks sealed with the old one get replaced)
    except FileNotFoundError:
        pass
    except ValueError:
        path.unlink()
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key
