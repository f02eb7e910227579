"""Where sandboxd is and how to authenticate: `--url`/`SANDBOXD_URL`, `--token`/`SANDBOXD_TOKEN`.

When no token is given and sandboxd runs on this machine, the CLI uses the admin token that
`sandboxd serve` writes on first start (`<data dir>/admin-token`, mode 0600), so a developer can
run `sandboxd serve` and then `sandbox up` with nothing to configure. The file is never read for
a remote URL: a token meant for a local server must not be sent elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sandboxd_cli.errors import BadInput

DEFAULT_URL = "http://127.0.0.1:7070"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_FILE = "admin-token"  # noqa: S105 (a file name, not a secret)
_TOKEN = re.compile(r"[!-~]+")


@dataclass(frozen=True)
class Connection:
    """A resolved connection to sandboxd."""

    url: str
    """Base URL of the control plane, without a trailing slash."""
    token: str | None
    """Bearer token; None sends no `Authorization` header (the server then answers 401)."""


def is_local(url: str) -> bool:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    return host in LOCAL_HOSTS


def data_dir(*, env: Mapping[str, str], home: Path) -> Path:
    """`SANDBOXD_DATA_DIR`, else `~/.sandboxd` — the same rule `sandboxd serve` follows."""
    configured = env.get("SANDBOXD_DATA_DIR", "")
    return Path(configured).expanduser() if configured else home / ".sandboxd"


def read_token_file(path: Path) -> str | None:
    """The token in `path`, or None when it is missing, unreadable or empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def check_url(url: str, *, source: str) -> str:
    """`url` when it is an http(s) URL with a host and a valid port; BadInput saying which
    part is wrong otherwise (httpx would fail later with a less helpful message, or a
    traceback for an unclosed IPv6 bracket)."""
    problem = _url_problem(url)
    if problem:
        raise BadInput(
            f"{source} {url[:200]!r} is not a sandboxd URL: {problem} "
            f"(expected http://HOST:PORT, such as {DEFAULT_URL})"
        )
    return url


def _url_problem(url: str) -> str | None:
    if not url.isprintable() or any(c.isspace() for c in url):
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return str(e)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "port 0 is not a port"
    return None


def resolve(
    *, url: str | None, token: str | None, env: Mapping[str, str], home: Path
) -> Connection:
    """Explicit values first, then the environment, then the local admin-token file."""
    source = "--url" if url else "SANDBOXD_URL" if env.get("SANDBOXD_URL") else "the default URL"
    base = check_url((url or env.get("SANDBOXD_URL") or DEFAULT_URL).rstrip("/"), source=source)
    secret = token or env.get("SANDBOXD_TOKEN") or None
    if secret is None and is_local(base):
        secret = read_token_file(data_dir(env=env, home=home) / TOKEN_FILE)
    if secret is not None and not _TOKEN.fullmatch(secret):
        # It goes into a header: a space, a newline or a non-ASCII letter cannot be sent.
        raise BadInput(
            "the token must be printable ASCII without spaces (check --token or "
            "SANDBOXD_TOKEN for a stray quote or newline)"
        )
    return Connection(url=base, token=secret)
