"""Preview tokens (issue 15): derived per sandbox, carried by the route table."""

from __future__ import annotations

import json

from sandboxd.core.capability import mint_view
from sandboxd.core.catalog import Catalog
from sandboxd.core.preview import TOKEN_LENGTH, preview_key, preview_token, preview_url
from sandboxd.core.routes import RoutedSandbox, build_route_table, route_entry

KEY = preview_key(b"k" * 32)


def test_a_token_is_opaque_stable_and_bound_to_the_uid() -> None:
    token = preview_token(KEY, uid="uid-1")
    assert token == preview_token(KEY, uid="uid-1")
    assert len(token) == TOKEN_LENGTH and token.replace("-", "").replace("_", "").isalnum()
    assert token != preview_token(KEY, uid="uid-2")  # the same name created again: a new one
    assert token != preview_token(preview_key(b"j" * 32), uid="uid-1")


def test_the_subkey_is_not_the_view_key() -> None:
    view = b"k" * 32
    assert view != KEY
    assert preview_token(KEY, uid="u") not in mint_view(view, name="n", uid="u", expires=1)


def test_no_key_gives_no_token() -> None:
    assert preview_key(b"") == b""
    assert preview_token(b"", uid="uid-1") == ""


def test_the_link_quotes_next() -> None:
    url = preview_url("http://127.0.0.1:8081/", "tok", next_path="/a b?c=d")
    assert url == "http://127.0.0.1:8081/.sandboxd/preview/tok?next=/a%20b%3Fc%3Dd"


def test_the_route_entry_carries_the_token_and_expiry_in_its_rev() -> None:
    plain = RoutedSandbox("pr-1", "key1", {})
    with_token = RoutedSandbox("pr-1", "key1", {}, preview="tok", expires=1_900_000_000)
    entry = json.loads(b"{" + route_entry(with_token) + b"}")["key1"]
    assert entry["preview"] == "tok" and entry["expiresAt"] == 1_900_000_000
    assert "preview" not in json.loads(b"{" + route_entry(plain) + b"}")["key1"]
    later = RoutedSandbox("pr-1", "key1", {}, preview="tok", expires=1_900_000_600)
    rev = json.loads(b"{" + route_entry(later) + b"}")["key1"]["rev"]
    assert rev != entry["rev"]  # an extended TTL reaches the routers
    table = build_route_table(catalog=Catalog(), sandboxes=[with_token])
    assert json.loads(table.body)["routes"]["key1"]["preview"] == "tok"
