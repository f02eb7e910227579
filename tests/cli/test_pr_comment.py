"""The PR comment's pure parts: the marker, which comment to keep, the body's limit, and text
shown verbatim whatever it holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandboxd_cli.errors import BadInput
from sandboxd_cli.pr_comment import (
    AUTHOR,
    LIMIT,
    Facts,
    Fork,
    Stamp,
    close_fences,
    code_block,
    inline_code,
    load_template,
    plan,
    render,
    stamp_of,
    table_cell,
)

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "github" / "comment.md.j2"
STAMP = Stamp("agents-pr-42-0a1b2c3d", "a" * 40, "2026-12-06T10:00:00Z")


def facts(forks: int = 2, **fields: object) -> Facts:
    made = tuple(
        Fork(f"svc-{i}", "Ready", protocol="mcp" if i % 2 else "http", url=f"http://r:{i}/")
        for i in range(forks)
    )
    base: dict[str, object] = {
        "name": STAMP.name, "state": "Ready", "head": STAMP.head, "routing_key": "k3y",
        "baggage": "sandbox=k3y", "expires_at": "2026-12-06T12:00:00Z", "forks": made,
    }  # fmt: skip
    return Facts(**{**base, **fields})  # type: ignore[arg-type]


def comment(cid: int, body: str, login: str = AUTHOR) -> dict[str, object]:
    return {"id": cid, "body": body, "user": {"login": login}}


def test_a_rendered_body_ends_with_its_stamp() -> None:
    body = render(load_template(TEMPLATE), facts(), STAMP)
    assert stamp_of(body) == STAMP
    assert "baggage: sandbox=k3y" in body and "curl -H 'baggage: sandbox=k3y' http://r:0/" in body
    assert '"svc-1": {' in body and '"svc-0": {' not in body  # MCP config for mcp forks only


def test_a_marker_quoted_inside_the_text_does_not_count() -> None:
    quoted = f"a fork said {Stamp('other', 'b' * 40, 'x').marker()} and more"
    assert stamp_of(quoted) is None
    body = render(load_template(TEMPLATE), facts(message=quoted, state="Failed"), STAMP)
    assert stamp_of(body) == STAMP


def test_the_oldest_marked_comment_is_kept_and_the_rest_go() -> None:
    mine = render(load_template(TEMPLATE), facts(), STAMP)
    other = Stamp("other-pr-1-00000000", "c" * 40, "2026-12-06T09:00:00Z").marker()
    comments = [comment(9, mine), comment(3, "lgtm"), comment(7, mine), comment(5, other)]
    chosen = plan(comments, STAMP.name)
    assert chosen.keep is not None and chosen.keep.id == 7 and chosen.extra == (9,)
    assert plan([comment(3, "lgtm")], STAMP.name).keep is None


def test_only_the_actions_own_comments_count() -> None:
    """Anyone can end a comment with the marker, dated far ahead: it must not freeze the PR."""
    forged = Stamp(STAMP.name, "f" * 40, "9999-12-31T00:00:00Z").marker()
    comments = [comment(1, forged, login="stranger"), comment(2, STAMP.marker())]
    chosen = plan(comments, STAMP.name)
    assert chosen.keep is not None and chosen.keep.id == 2 and not chosen.stale(STAMP)
    assert plan(comments, STAMP.name, author="my-app[bot]").keep is None
    assert plan([{"id": 3, "body": STAMP.marker()}], STAMP.name).keep is None  # no user


def test_an_older_event_is_stale_whatever_its_head() -> None:
    newer = Stamp(STAMP.name, "b" * 40, "2026-12-06T10:05:00Z")
    chosen = plan([comment(1, "x\n" + newer.marker())], STAMP.name)
    assert chosen.stale(STAMP)
    # a re-run of a `closed` run after a reopen: the same head, an older event
    assert chosen.stale(Stamp(STAMP.name, "b" * 40, "2026-12-06T10:00:00Z"))
    assert not chosen.stale(newer)  # a re-run of the same event
    assert not plan([comment(1, STAMP.marker())], STAMP.name).stale(newer)
    unreadable = Stamp(STAMP.name, "b" * 40, "yesterday")
    assert not plan([comment(1, unreadable.marker())], STAMP.name).stale(STAMP)


@pytest.mark.parametrize("forks", [0, 1, 1000, 5000])
def test_a_body_never_exceeds_githubs_limit(forks: int) -> None:
    body = render(load_template(TEMPLATE), facts(forks), STAMP)
    assert len(body) <= LIMIT and stamp_of(body) == STAMP
    shown = len(re.findall(r"^\| `svc-\d+` \|", body, re.M))
    if forks >= 1000:
        assert 0 < shown < forks and f"{forks - shown} more" in body
    else:
        assert shown == forks


def test_a_huge_message_is_cut_and_the_stamp_kept() -> None:
    body = render(load_template(TEMPLATE), facts(0, message="x" * 200_000, state="Failed"), STAMP)
    assert len(body) <= LIMIT and stamp_of(body) == STAMP and "cut to GitHub's" in body
    assert close_fences(body) == body  # the marker is not left inside a code block


def test_a_broken_template_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "t.md").write_text("{% if %}")
    with pytest.raises(BadInput, match="line 1"):
        load_template(tmp_path / "t.md")
    (tmp_path / "u.md").write_text("{{ nope }}")
    with pytest.raises(BadInput, match="nope"):
        render(load_template(tmp_path / "u.md"), facts(), STAMP)
    with pytest.raises(BadInput, match="cannot read"):
        load_template(tmp_path / "missing.md")


@given(st.text())
def test_inline_code_keeps_any_text_in_one_span(text: str) -> None:
    shown = inline_code(text)
    fence = re.match(r"`+", shown)
    assert fence is not None
    inner = shown[len(fence.group()) : -len(fence.group())]
    assert shown.endswith(fence.group())
    assert all(len(run) != len(fence.group()) for run in re.findall(r"`+", inner))
    assert "\n" not in shown and "\r" not in shown


@given(st.text())
def test_a_code_block_is_never_closed_early(text: str) -> None:
    block = code_block(text).split("\n")
    fence = block[0]
    assert block[-1] == fence
    assert not any(line.strip().startswith(fence) for line in block[1:-1])
    assert not any("\r" in line for line in block)  # CommonMark ends a line at a CR as well


def test_a_carriage_return_cannot_close_the_block() -> None:
    block = code_block("boom\r```\r@acme/admins [x](https://evil.example)")
    assert block.split("\n")[0] == "````" and block.endswith("\n````")


def test_a_cut_body_closes_the_code_block_it_leaves_open() -> None:
    assert close_fences("a\n```\ncode") == "a\n```\ncode\n```\n"
    assert close_fences("a\n````\n```\nstill code") == "a\n````\n```\nstill code\n````\n"
    assert close_fences("a\n```\ncode\n```\nafter") == "a\n```\ncode\n```\nafter"


@given(st.text())
def test_a_table_cell_has_no_bare_pipe_or_newline(text: str) -> None:
    cell = table_cell(text)
    assert "\n" not in cell and "\r" not in cell
    assert re.search(r"(?<!\\)\|", cell) is None
