"""Signed, expiring tokens for the web page (issue 15): a view capability and a sign-in session.

A **view capability** lets whoever holds it read one sandbox's page, nothing else: it is bound
to the sandbox's name and uid (a sandbox created again under the same name has a new uid, so
an old link does not open it) and expires. It is `v1.<expiry>.<mac>`: the expiry in Unix
seconds and an HMAC-SHA256 over a purpose string, the name, the uid and the expiry, in
base64url without padding. The name and uid are not in the token: the verifier takes them
from the page asked for and the sandbox found there, so a token for another sandbox simply
does not verify.

A **session** says that a token (admin or scoped) signed in: `s1.<token name>.<fingerprint>.
<expiry>.<mac>`. The fingerprint is derived from the token's stored hash, so a token
revoked, or made again under the same name, no longer matches; the caller looks the token up
on every request for that.

Verifying needs the key and the clock only: no database write. Pure; the key comes from the
settings (`sandboxd.app.view_key`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MAX_TOKEN = 256
"""Longer input is refused before anything is decoded."""
MIN_KEY = 32
_VIEW = b"sandboxd view v1\x00"
_SESSION = b"sandboxd session v1\x00"
_EXPIRY = re.compile(r"^[0-9]{1,12}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_MAC_LENGTH = 43  # 32 bytes in base64url without padding


class BadToken(Exception):
    """A token that does not grant anything; `reason` is `malformed`, `invalid` (wrong MAC:
    tampered, or for another sandbox or key) or `expired`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Session:
    token_name: str
    fingerprint: str
    expires: int


def mint_view(key: bytes, *, name: str, uid: str, expires: int) -> str:
    return f"v1.{expires}.{_mac(key, _VIEW, name, uid, str(expires))}"


def check_view(key: bytes, token: str, *, name: str, uid: str, now: float) -> int:
    """The capability's expiry (Unix seconds) if `token` lets its holder see sandbox `name`
    of this `uid` at `now`; BadToken otherwise."""
    parts = _parts(token, prefix="v1", count=3)
    expires = _expiry(parts[1])
    _verify(key, parts[2], _VIEW, name, uid, parts[1])
    _unexpired(expires, now)
    return expires


def view_expiry(sandbox_expires: datetime, *, max_ttl: int) -> int:
    """When a sandbox's link expires: its expiry plus the TTL cap, so the link outlives the
    sandbox even when its TTL is extended (an extension reaches at most the cap from now, and
    now is before the expiry). Whole seconds: the same sandbox gives the same link."""
    aware = sandbox_expires if sandbox_expires.tzinfo else sandbox_expires.replace(tzinfo=UTC)
    return int((aware + timedelta(seconds=max_ttl)).timestamp())


def fingerprint(token_hash: str) -> str:
    """What a session keeps of the token it was made for (not the hash itself)."""
    return hashlib.sha256(b"sandboxd session\x00" + token_hash.encode()).hexdigest()[:16]


def mint_session(key: bytes, *, token_name: str, token_hash: str, expires: int) -> str:
    mark = fingerprint(token_hash)
    return f"s1.{token_name}.{mark}.{expires}.{_mac(key, _SESSION, token_name, mark, str(expires))}"


def read_session(key: bytes, value: str, *, now: float) -> Session:
    """The session `value` holds if it is genuine and unexpired; BadToken otherwise. Whether
    its token still exists and still has that fingerprint is the caller's question."""
    if not isinstance(value, str) or len(value) > MAX_TOKEN or not value.startswith("s1."):
        raise BadToken("malformed", "not a session")
    name, mark, expiry, mac = _split(value[3:])
    if not name or not _FINGERPRINT.fullmatch(mark):
        raise BadToken("malformed", "not a session")
    expires = _expiry(expiry)
    _verify(key, mac, _SESSION, name, mark, expiry)
    _unexpired(expires, now)
    return Session(name, mark, expires)


def _split(rest: str) -> list[str]:
    parts = rest.rsplit(".", 3)
    if len(parts) != 4:
        raise BadToken("malformed", "not a session")
    return parts


def _parts(token: str, *, prefix: str, count: int) -> list[str]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN or not token.isascii():
        raise BadToken("malformed", "the link's token is malformed")
    parts = token.split(".")
    if len(parts) != count or parts[0] != prefix:
        raise BadToken("malformed", "the link's token is malformed")
    return parts


def _expiry(text: str) -> int:
    if not _EXPIRY.fullmatch(text):
        raise BadToken("malformed", "the token's expiry is malformed")
    return int(text)


def _verify(key: bytes, mac: str, purpose: bytes, *fields: str) -> None:
    """Compared as text: base64 lets several spellings decode to the same bytes, and an
    altered spelling must not pass."""
    if len(mac) != _MAC_LENGTH or not mac.isascii():
        raise BadToken("malformed", "the token's signature is malformed")
    if not hmac.compare_digest(mac, _mac(key, purpose, *fields)):
        raise BadToken("invalid", "the token is not valid here (altered, or for another page)")


def _unexpired(expires: int, now: float) -> None:
    if expires <= now:
        moment = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M UTC")
        raise BadToken("expired", f"the token expired at {moment}")


def _digest(key: bytes, purpose: bytes, *fields: str) -> bytes:
    message = purpose + b"\x00".join(f.encode() for f in fields)
    return hmac.new(key, message, hashlib.sha256).digest()


def _mac(key: bytes, purpose: bytes, *fields: str) -> str:
    return base64.urlsafe_b64encode(_digest(key, purpose, *fields)).rstrip(b"=").decode()
