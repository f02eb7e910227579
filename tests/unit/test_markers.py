"""A fork's markers come back from /proc as untrusted input: parsed strictly, seal checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd.runtime.markers import BadMarkers, ForkMarkers, load_key

KEY = b"k" * 32
MARKS = ForkMarkers("pr-7", "0123abcd" * 4, "echo", "0123456789abcdef", 40123, "/healthz")


def test_markers_read_back_what_was_written() -> None:
    assert ForkMarkers.read(MARKS.env(KEY), key=KEY) == MARKS
    bare = ForkMarkers("pr-7", "u1", "echo", "0123456789abcdef", 1, None)
    assert ForkMarkers.read(bare.env(KEY), key=KEY) == bare


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SANDBOXD_SANDBOX", "other"),  # a valid name, but not the sealed one
        ("SANDBOXD_SANDBOX_UID", "ffff"),
        ("SANDBOXD_FORK", "tools"),
        ("SANDBOXD_PLAN", "fedcba9876543210"),
        ("PORT", "7070"),
        ("SANDBOXD_HEALTH", "/"),
        ("SANDBOXD_SEAL", "0" * 64),
    ],
)
def test_a_changed_marker_breaks_the_seal(name: str, value: str) -> None:
    with pytest.raises(BadMarkers):
        ForkMarkers.read(MARKS.env(KEY) | {name: value}, key=KEY)


def test_another_key_does_not_check_out() -> None:
    with pytest.raises(BadMarkers, match="SANDBOXD_SEAL"):
        ForkMarkers.read(MARKS.env(KEY), key=b"x" * 32)


@pytest.mark.parametrize(
    "port", ["abc", "", "0", "65536", "99999", "-1", "+80", " 80", "80 ", "٣٠٠٠", "1" * 5000]
)
def test_a_port_that_is_not_one_is_refused_before_the_seal(port: str) -> None:
    with pytest.raises(BadMarkers, match="PORT"):
        ForkMarkers.read(MARKS.env(KEY) | {"PORT": port}, key=KEY)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SANDBOXD_SANDBOX", ""),
        ("SANDBOXD_SANDBOX", "../etc"),
        ("SANDBOXD_FORK", "Echo"),
        ("SANDBOXD_PLAN", "xyz"),
        ("SANDBOXD_HEALTH", "/a b"),
        ("SANDBOXD_HEALTH", "/\r\nHost: x"),
        ("SANDBOXD_SANDBOX_UID", "a" * 65),
    ],
)
def test_implausible_markers_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(BadMarkers, match=name):
        ForkMarkers.read(MARKS.env(KEY) | {name: value}, key=KEY)


def test_missing_markers_are_refused() -> None:
    with pytest.raises(BadMarkers):
        ForkMarkers.read({}, key=KEY)


def test_the_seal_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "fork-seal.key"
    key = load_key(path)
    assert len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_key(path) == key
    path.write_text("not hex")
    fresh = load_key(path)
    assert fresh != key and load_key(path) == fresh
