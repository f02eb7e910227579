"""Preview tokens (issue 15): what a preview link carries, and the router turns into a route.

A preview token is an opaque value per sandbox, not its routing key: a browser cannot send
`baggage`, so a preview link sets a cookie holding this token, and the router maps the token
to the routing key through the route table. It is derived, not stored: an HMAC-SHA256 over the
sandbox's uid with a subkey of the view key (`sandboxd.app.view_key`), domain-separated, so no
schema change is needed and every replica derives the same token. A sandbox created again
under the same name has a new uid, so a new token; a deleted sandbox leaves the route table,
so its token routes nowhere (revoked) even though it could be derived again.

Derivation's one cost: rotating the view key changes every preview token (links already handed
out then fall back to the baseline) — the same as for the page links it signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote

_SUBKEY = b"sandboxd preview key v1"
TOKEN_LENGTH = 32
"""Characters of base64url (192 bits): long enough not to be guessed, short in a cookie."""
PATH = "/.sandboxd/preview/"


def preview_key(view_key: bytes) -> bytes:
    """The subkey preview tokens are made with (empty: no view key, no previews). A token
    never reveals the view key, and a view capability cannot pass for a preview token."""
    if not view_key:
        return b""
    return hmac.new(view_key, _SUBKEY, hashlib.sha256).digest()


def preview_token(key: bytes, *, uid: str) -> str:
    """The sandbox's preview token ("" without a key)."""
    if not key:
        return ""
    mac = hmac.new(key, uid.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:TOKEN_LENGTH]


def preview_url(router_url: str, token: str, *, next_path: str = "/") -> str:
    """The link: the router answers it with a 303 to `next_path`, setting the cookie."""
    return f"{router_url.rstrip('/')}{PATH}{token}?next={quote(next_path, safe='/')}"


def epoch(moment: datetime) -> int:
    """Whole Unix seconds of a stored time (naive ones are UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp())
