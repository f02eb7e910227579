"""Request targets other than origin-form (RFC 9112 §3.2), read on the rare path.

A proxy in front of origin servers sends them origin-form (`/path?query`): an absolute-form
target (`http://host/path`) is turned into its path and query, and its authority stands in for
`Host` (RFC 9112 §3.2.2). `OPTIONS *` passes as it is. Anything else is refused.
"""

from __future__ import annotations

SCHEMES = (b"http", b"https")


def origin_form(target: bytes) -> tuple[bytes, bytes] | None:
    """(authority, origin-form target) of an absolute-form `http(s)://` target, or None when it
    is not one (another scheme, no authority, or userinfo, which RFC 9110 §4.2.4 says to treat
    as an error)."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in SCHEMES:
        return None
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        at = rest.find(delimiter)
        if 0 <= at < end:
            end = at
    authority, tail = rest[:end], rest[end:].split(b"#", 1)[0]
    if not authority or b"@" in authority:
        return None
    return authority, tail if tail.startswith(b"/") else b"/" + tail
