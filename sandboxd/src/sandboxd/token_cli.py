"""`sandboxd token create|list|revoke`: scoped API tokens, made on the control plane's host.

They act on the database directly (the one `sandboxd serve` uses, from the same settings), so
no token is needed to make one, and the admin token never leaves the host. A new token is
printed once; the store keeps only its SHA-256. A revocation takes effect on the token's next
request: a scoped token is looked up on every call.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from sandboxd.core.clock import rfc3339, utcnow
from sandboxd.core.duration import format_duration, parse_duration
from sandboxd.core.errors import describe, one_line
from sandboxd.core.tokens import ADMIN, Scope, hash_token, valid_name
from sandboxd.errors import SandboxdError
from sandboxd.settings import Settings
from sandboxd.store.engine import make_engine
from sandboxd.store.repository import Store
from sandboxd.store.tables import TokenRow

T = TypeVar("T")
TOKEN_PREFIX = "sbx_"  # noqa: S105 (a prefix: tokens are recognisable in a leak scan)
MAX_TTL = 3 * 365 * 86400

cli = typer.Typer(help="Scoped API tokens (create, list, revoke).", no_args_is_help=True)
DataDir = Annotated[
    Path | None,
    typer.Option(help="State directory (env SANDBOXD_DATA_DIR, default ~/.sandboxd)"),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="SQLAlchemy URL (env SANDBOXD_DATABASE_URL, default SQLite in the data dir)"),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


@cli.command()
def create(
    name: Annotated[str, typer.Argument(help="The token's name (shown in the event log).")],
    label: Annotated[
        str,
        typer.Option(
            metavar="KEY=VALUE",
            help="The label of the only sandboxes it may touch, e.g. github.repo=acme/agents.",
        ),
    ],
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime such as 90d (default: until revoked).")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: Json = False,
) -> None:
    """Make a token that may create, update, read and delete only sandboxes labelled KEY=VALUE
    (a create without the label gets it), and nothing else. It is printed once."""
    try:
        valid_name(name)
        scope = Scope.parse(label)
        seconds = None if ttl is None else parse_duration(ttl)
    except ValueError as e:
        _fail(str(e))
    if seconds is not None and not 0 < seconds <= MAX_TTL:
        _fail(f"--ttl must be more than 0 and at most {format_duration(MAX_TTL)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = None if seconds is None else utcnow() + timedelta(seconds=seconds)
    _with_store(
        data_dir,
        database_url,
        lambda store: store.create_token(
            name=name, token_hash=hash_token(token), scope=str(scope), expires_at=expires
        ),
    )
    when = "never" if expires is None else rfc3339(expires, timespec="seconds")
    if as_json:
        typer.echo(json.dumps({"name": name, "token": token, "scope": str(scope), "expiresAt":
                               None if expires is None else rfc3339(expires)}))  # fmt: skip
        return
    typer.echo(token)
    typer.echo(
        f"token {name}: sandboxes labelled {scope}; expires {when}. It is shown only now: "
        "store it as a secret (for GitHub Actions: SANDBOXD_TOKEN).",
        err=True,
    )


@cli.command("list")
def list_tokens(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, as_json: Json = False
) -> None:
    """The tokens: name, scope, created, expires (never the tokens themselves)."""
    rows = _with_store(data_dir, database_url, lambda store: store.tokens())
    items = [_view(row) for row in rows]
    if as_json:
        typer.echo(json.dumps({"items": items}))
        return
    lines = [("NAME", "SCOPE", "CREATED", "EXPIRES")]
    lines += [(i["name"], i["scope"] or "(admin)", i["createdAt"], i["expiresAt"] or "never")
              for i in items]  # fmt: skip
    widths = [max(len(line[c]) for line in lines) for c in range(3)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        typer.echo("  ".join([*cells, line[3]]))


@cli.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete a token: its next request is refused (401)."""
    if name == ADMIN:
        _fail(
            "the admin token cannot be revoked here: it comes from SANDBOXD_ADMIN_TOKEN or "
            "<data dir>/admin-token; change it there and restart sandboxd"
        )
    if not _with_store(data_dir, database_url, lambda store: store.revoke_token(name)):
        typer.echo(f"sandboxd: no token named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"token {name} revoked")


def _view(row: TokenRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "scope": row.scope,
        "createdAt": rfc3339(row.created_at, timespec="seconds"),
        "expiresAt": None
        if row.expires_at is None
        else rfc3339(row.expires_at, timespec="seconds"),
    }


def _with_store(
    data_dir: Path | None, database_url: str | None, work: Callable[[Store], Awaitable[T]]
) -> T:
    """`work` done on the database of these settings, its schema brought up to date first."""
    given: dict[str, Any] = {"data_dir": data_dir, "database_url": database_url}
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        _fail(f"invalid setting: {one_line(describe(e.errors()))}")
    settings.data_path.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def run() -> T:
        engine = make_engine(settings.effective_database_url)
        store = Store(engine)
        try:
            await store.migrate()
            return await work(store)
        finally:
            await store.close()
            engine.dispose()

    try:
        return asyncio.run(run())
    except SandboxdError as e:
        typer.echo(f"sandboxd: {e.message}", err=True)
        raise typer.Exit(1) from e


def _fail(message: str) -> Any:
    typer.echo(f"sandboxd: {message}", err=True)
    raise typer.Exit(2)
