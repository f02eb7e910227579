"""View capabilities and sign-in sessions (`sandboxd.core.capability`): only the genuine,
unexpired token for this sandbox (name and uid) passes; anything else is a BadToken with a
reason, whatever the input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandboxd.core.capability import (
    MAX_TOKEN,
    BadToken,
    check_view,
    fingerprint,
    mint_session,
    mint_view,
    read_session,
    view_expiry,
)

KEY = b"k" * 32
NOW = 1_800_000_000
LATER = NOW + 3600
TOKEN = mint_view(KEY, name="pr-1", uid="u1", expires=LATER)
SESSION = mint_session(KEY, token_name="ci.acme-bot", token_hash="ab" * 32, expires=LATER)


def reason(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(BadToken) as caught:
        call()
    return caught.value.reason


def test_a_genuine_capability_opens_its_sandbox_until_it_expires() -> None:
    assert check_view(KEY, TOKEN, name="pr-1", uid="u1", now=NOW) == LATER
    assert reason(lambda: check_view(KEY, TOKEN, name="pr-1", uid="u1", now=LATER)) == "expired"


@pytest.mark.parametrize(
    ("key", "name", "uid"),
    [(KEY, "pr-2", "u1"), (KEY, "pr-1", "u2"), (b"x" * 32, "pr-1", "u1"), (KEY, "pr-", "u1")],
    ids=["other-sandbox", "same-name-new-uid", "other-key", "prefix-of-name"],
)
def test_a_capability_opens_no_other_sandbox(key: bytes, name: str, uid: str) -> None:
    assert reason(lambda: check_view(key, TOKEN, name=name, uid=uid, now=NOW)) == "invalid"


def test_a_later_expiry_written_into_the_token_does_not_verify() -> None:
    _, _, mac = TOKEN.split(".")
    forged = f"v1.{LATER + 10**6}.{mac}"
    assert reason(lambda: check_view(KEY, forged, name="pr-1", uid="u1", now=NOW)) == "invalid"


@given(st.integers(0, len(TOKEN) - 1), st.characters(codec="ascii"))
def test_any_changed_character_is_refused(index: int, char: str) -> None:
    tampered = TOKEN[:index] + char + TOKEN[index + 1 :]
    if tampered != TOKEN:
        found = reason(lambda: check_view(KEY, tampered, name="pr-1", uid="u1", now=NOW))
        assert found in ("malformed", "invalid")


@given(st.text(max_size=400))
def test_any_text_is_refused_with_a_reason(text: str) -> None:
    found = reason(lambda: check_view(KEY, text, name="pr-1", uid="u1", now=NOW))
    assert found in ("malformed", "invalid", "expired")


@pytest.mark.parametrize(
    "token",
    ["", "v1", "v1..", "v2.1.x", f"v1.{LATER}", f"v1.-5.{'A' * 43}", f"v1.{'9' * 13}.{'A' * 43}",
     "x" * (MAX_TOKEN + 1), "v1." + "9" * 10_000_000, f"v1.{LATER}.{'é' * 43}"],
    ids=["empty", "prefix", "empty-parts", "version", "no-mac", "negative", "long-expiry",
         "over-limit", "huge", "non-ascii"],
)  # fmt: skip
def test_malformed_tokens_are_refused_before_any_signature_check(token: str) -> None:
    assert reason(lambda: check_view(KEY, token, name="pr-1", uid="u1", now=NOW)) == "malformed"


def test_the_link_outlives_its_sandbox_by_the_ttl_cap_and_is_stable() -> None:
    expires = datetime(2026, 12, 6, 18, 0, 0, 500_000)  # naive UTC, as the store keeps it
    first = view_expiry(expires, max_ttl=72 * 3600)
    assert first == view_expiry(expires, max_ttl=72 * 3600)
    assert first >= (expires.replace(tzinfo=UTC) + timedelta(hours=72)).timestamp() - 1
    assert first > expires.replace(tzinfo=UTC).timestamp()


def test_a_session_names_its_token_and_fingerprint() -> None:
    session = read_session(KEY, SESSION, now=NOW)
    assert (session.token_name, session.expires) == ("ci.acme-bot", LATER)
    assert session.fingerprint == fingerprint("ab" * 32) != fingerprint("cd" * 32)
    assert reason(lambda: read_session(KEY, SESSION, now=LATER)) == "expired"
    assert reason(lambda: read_session(b"y" * 32, SESSION, now=NOW)) == "invalid"


def test_a_session_for_another_token_name_does_not_verify() -> None:
    renamed = SESSION.replace("ci.acme-bot", "admin", 1)
    assert reason(lambda: read_session(KEY, renamed, now=NOW)) == "invalid"


def test_a_view_capability_is_no_session_and_a_session_no_capability() -> None:
    assert reason(lambda: read_session(KEY, TOKEN, now=NOW)) == "malformed"
    assert reason(lambda: check_view(KEY, SESSION, name="pr-1", uid="u1", now=NOW)) == "malformed"


@given(st.text(max_size=400))
def test_any_text_is_no_session(text: str) -> None:
    if text != SESSION:
        assert reason(lambda: read_session(KEY, text, now=NOW)) in ("malformed", "invalid")


@given(st.integers(0, len(SESSION) - 1), st.characters(codec="ascii"))
def test_any_changed_character_of_a_session_is_refused(index: int, char: str) -> None:
    tampered = SESSION[:index] + char + SESSION[index + 1 :]
    if tampered != SESSION:
        assert reason(lambda: read_session(KEY, tampered, now=NOW)) in ("malformed", "invalid")
