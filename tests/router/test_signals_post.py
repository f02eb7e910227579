"""The signals sink reporting to a real HTTP server (uvicorn on loopback, a small Starlette app
standing in for the control plane's `POST /v1/router-signals`): what is sent, sent again,
retried and dropped, and that a control plane that is down or hangs costs bounded memory and
time."""

from __future__ import annotations

import asyncio
import itertools
import logging
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from random import Random
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandboxd_router.telemetry import signals
from sandboxd_router.telemetry.observed import BASELINE, HTTP_5XX, SANDBOX, Observed
from sandboxd_router.telemetry.signals import SignalsSink
from tests.support.server import free_port

TOKEN = "router-token-0123456789"
T0 = 1_765_000_000.0


@dataclass
class ControlPlane:
    """Records every post it is sent; answers per `mode`: ok (200), fail (500), refuse (422)
    or hang (until `release` is set)."""

    port: int
    mode: str = "ok"
    posts: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.posts.append(body)
        self.tokens.append(request.headers.get("authorization", ""))
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "fail":
            return JSONResponse({"error": "internal"}, status_code=500)
        if self.mode == "refuse":
            return JSONResponse({"error": "invalid", "detail": "no"}, status_code=422)
        accepted = len(body["buckets"]) + len(body["requests"])
        return JSONResponse({"accepted": accepted, "ignored": 0})

    async def start(self) -> None:
        app = Starlette(routes=[Route("/v1/router-signals", self.receive, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.release.set()
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
            self.server = self.task = None

    def sent_seqs(self) -> list[int]:
        return [r["seq"] for post in self.posts for r in post["requests"]]

    def sent_buckets(self) -> list[tuple[str, str, int, int]]:
        """(sandbox, service, start, requests) of every bucket posted, in order."""
        return [
            (b["sandbox"], b["service"], b["start"], b["requests"])
            for post in self.posts
            for b in post["buckets"]
        ]


@pytest.fixture
async def control_plane() -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(free_port())
    await cp.start()
    yield cp
    await cp.stop()


SEQ = itertools.count()  # each request its own ring record


def observed(
    *, sandbox: str = "pr-1", end: float = T0 + 1, service: str = "svc", status: int = 200
) -> Observed:
    return Observed(
        seq=next(SEQ),
        end=end,
        duration=0.002,
        service=service,
        sandbox=sandbox,
        routing_key=f"key-{sandbox}" if sandbox else "",
        route=SANDBOX if sandbox else BASELINE,
        method="GET",
        status=status,
        bytes_in=0,
        bytes_out=10,
        traceparent=None,
        error=HTTP_5XX if status >= 500 else "",
        injected=False,
    )


def sink(url: str, **options: Any) -> SignalsSink:
    options.setdefault("clock", lambda: T0 + 5)
    return SignalsSink(url=url, token=TOKEN, rng=Random(1), **options)


async def test_a_report_carries_buckets_and_records_with_the_token(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url)
    s.add(observed())
    s.add(observed(sandbox=""))
    await s.send()
    (post,) = control_plane.posts
    assert control_plane.tokens == [f"Bearer {TOKEN}"]
    assert post["instance"] == s.instance and len(post["instance"]) == 16
    assert sorted(control_plane.sent_buckets()) == [("", "svc", T0, 1), ("pr-1", "svc", T0, 1)]
    assert control_plane.sent_seqs() == [1]
    await s.close()


async def test_buckets_are_sent_again_while_they_grow_and_records_once(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url)
    for _ in range(3):
        s.add(observed())
    await s.send()
    s.add(observed())
    s.add(observed())
    s.add(observed(service="other"))
    await s.send()
    await s.send()  # nothing changed: nothing posted
    assert len(control_plane.posts) == 2
    assert control_plane.sent_buckets() == [
        ("pr-1", "svc", T0, 3),
        ("pr-1", "svc", T0, 5),
        ("pr-1", "other", T0, 1),
    ]
    assert control_plane.sent_seqs() == [1, 2, 3, 4, 5, 6]
    assert s.pending_requests == 0
    await s.close()


async def test_a_failed_report_is_retried_with_everything_and_logged_once(
    control_plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandboxd_router")
    s = sink(control_plane.url)
    s.add(observed())
    control_plane.mode = "fail"
    await s.send()
    s.add(observed())
    await s.send()
    assert s.pending_requests == 2
    control_plane.mode = "ok"
    await s.send()
    await s.send()
    assert [len(p["requests"]) for p in control_plane.posts] == [1, 2, 2]
    assert control_plane.sent_buckets()[-1] == ("pr-1", "svc", T0, 2)
    assert s.pending_requests == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 500" in warnings[0].getMessage()
    assert any("again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    await s.close()


async def test_a_control_plane_that_is_not_there_yet_gets_it_all_later() -> None:
    cp = ControlPlane(free_port())  # nothing listens there yet: connection refused
    s = sink(cp.url)
    s.add(observed())
    await s.send()
    s.add(observed())
    await s.send()
    assert s.pending_requests == 2 and s.buckets == 1
    await cp.start()
    try:
        await s.send()
        assert cp.sent_seqs() == [1, 2]
        assert cp.sent_buckets() == [("pr-1", "svc", T0, 2)]
        await s.close()
    finally:
        await cp.stop()


async def test_a_refused_report_is_dropped_not_sent_again(
    control_plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    s = sink(control_plane.url)
    s.add(observed())
    control_plane.mode = "refuse"
    await s.send()
    control_plane.mode = "ok"
    await s.send()
    assert len(control_plane.posts) == 1 and s.pending_requests == 0
    assert any("refused" in r.getMessage() for r in caplog.records)
    s.add(observed())  # the bucket changed again: it goes, with the new record only
    await s.send()
    assert control_plane.sent_seqs() == [1, 2]
    assert control_plane.sent_buckets()[-1] == ("pr-1", "svc", T0, 2)
    await s.close()


async def test_a_busy_sandbox_cannot_push_out_a_quiet_ones_records(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url, max_pending=50, per_sandbox=20)
    s.add(observed(sandbox="quiet"))
    for _ in range(100):
        s.add(observed(sandbox="busy"))
    assert s.pending_requests == 21 and s.dropped_requests == 80
    await s.send()
    sent = [r for p in control_plane.posts for r in p["requests"]]
    assert [r["seq"] for r in sent] == [1, *range(82, 102)]  # the busy one's newest 20
    assert sent[0]["sandbox"] == "quiet"
    await s.close()


async def test_past_the_bounds_plain_records_go_before_failed_ones(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url, max_pending=15, per_sandbox=10)
    statuses = [503 if i % 10 == 0 else 404 if i % 10 == 5 else 200 for i in range(100)]
    for status in statuses:  # 10 answered 503 and 10 answered 404 among 100
        s.add(observed(sandbox="busy", status=status))
    s.add(observed(sandbox="quiet"))
    for _ in range(40):  # a third one fills the rest (15 in all): its own go, not busy's
        s.add(observed(sandbox="other"))
    assert s.pending_requests == 15 and s.dropped_requests == 126
    await s.send()
    sent = [r for p in control_plane.posts for r in p["requests"]]
    busy = [r for r in sent if r["sandbox"] == "busy"]
    # all ten it keeps failed (the newest 503s and 404s); every plain one went first
    assert [r["status"] for r in busy] == [503, 404] * 5
    assert [r["seq"] for r in busy] == list(range(51, 100, 5))
    assert [r["error"] for r in busy if r["status"] == 503] == ["http_5xx"] * 5
    assert [r["sandbox"] for r in sent].count("quiet") == 1
    assert [r["seq"] for r in sent if r["sandbox"] == "other"] == [138, 139, 140, 141]
    assert [r["seq"] for r in sent] == sorted(r["seq"] for r in sent)  # in the order seen
    await s.close()


async def test_a_busy_sandbox_sends_its_newest_plain_records_and_every_failure(
    control_plane: ControlPlane,
) -> None:
    """Past `PLAIN_PER_SANDBOX` plain records a sandbox's oldest plain one goes (the control
    plane would keep them a second or less, at a cost of its own per record), while its
    failures are kept up to `PER_SANDBOX`; the aggregates count every request."""
    assert signals.PLAIN_PER_SANDBOX == 250
    s = sink(control_plane.url)
    statuses = [503 if i % 100 == 0 else 200 for i in range(2000)]
    for status in statuses:  # 20 failures among 2,000
        s.add(observed(sandbox="busy", status=status))
    s.add(observed(sandbox="quiet"))
    assert s.pending_requests == 250 + 20 + 1 and s.dropped_requests == 1980 - 250
    await s.send()
    sent = [r for p in control_plane.posts for r in p["requests"]]
    busy = [r for r in sent if r["sandbox"] == "busy"]
    failed = [i + 1 for i, status in enumerate(statuses) if status == 503]  # (numbered from 1)
    plain = [i + 1 for i, status in enumerate(statuses) if status == 200][-250:]
    assert [r["seq"] for r in busy] == sorted(failed + plain)
    assert [r["sandbox"] for r in sent].count("quiet") == 1
    assert control_plane.sent_buckets() == [("busy", "svc", T0, 2000), ("quiet", "svc", T0, 1)]
    await s.close()


async def test_posts_carry_at_most_1000_buckets_and_1000_records(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url, max_pending=5000, plain_per_sandbox=1000)
    for i in range(1500):  # 1,500 sandboxes: 1,500 buckets, 1,500 records
        s.add(observed(sandbox=f"pr-{i}"))
    for _ in range(1000):  # pr-0 now has 1,001: its oldest is dropped (1,000 per sandbox)
        s.add(observed(sandbox="pr-0"))
    await s.send()
    shape = [(len(p["buckets"]), len(p["requests"])) for p in control_plane.posts]
    assert shape == [(1000, 1000), (500, 1000), (0, 499)]
    assert control_plane.sent_seqs() == list(range(2, 2501))
    assert s.dropped_requests == 1
    sent = control_plane.sent_buckets()
    assert len({b[0] for b in sent}) == 1500
    assert ("pr-0", "svc", T0, 1001) in sent
    await s.close()


async def test_a_report_of_1000_buckets_holds_about_their_size_at_once(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url)
    for i in range(1000):  # 1,000 buckets of 60 samples: ~0.6 MB as posted
        for _ in range(60):
            s.add(observed(sandbox=f"pr-{i}"))
    s._tally.acknowledged(s._tally.queued())  # (the buckets alone)
    tracemalloc.start()
    try:
        await s.send()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    posted = sum(len(orjson.dumps(p)) for p in control_plane.posts)
    assert len(control_plane.sent_buckets()) == 1000 and posted > 500_000
    # the encoded buckets, the body and the server's parse of it (in this process): 6 MB, not
    # with the 8 KB orjson keeps under each bucket's text as well (8 MB more: 22 MB in all)
    assert peak < 16 * posted
    await s.close()


async def test_memory_is_bounded_while_the_control_plane_is_down() -> None:
    now = [T0 + 5]
    cp = ControlPlane(free_port())
    s = sink(cp.url, clock=lambda: now[0], max_pending=100, max_buckets=3)
    for _ in range(250):
        s.add(observed())
    s.add(observed(sandbox="", end=T0 - 4000))  # older than the longest window served
    for window in (1, 2, 3, 4):
        s.add(observed(sandbox="", end=T0 + 10 * window))
    await s.send()  # refused: nothing listens
    assert s.pending_requests == 100 and s.dropped_requests == 150
    assert s.buckets == 3 and s.dropped_buckets == 3  # the hour-old one and the oldest two
    await cp.start()
    try:
        now[0] = T0 + 45
        await s.send()
        assert cp.sent_seqs() == list(range(151, 251))  # the newest records were kept
        assert sorted(b[2] for b in cp.sent_buckets()) == [T0 + 20, T0 + 30, T0 + 40]
        now[0] = T0 + 200  # closed and acknowledged: forgotten
        await s.send()
        assert s.buckets == 0 and len(cp.posts) == 1
        await s.close()
    finally:
        await cp.stop()


async def test_tick_does_not_wait_for_a_hanging_control_plane_and_close_is_bounded(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url, interval=0)
    s.add(observed())
    control_plane.mode = "hang"
    await s.tick()  # returns while the post hangs
    while not control_plane.posts:
        await asyncio.sleep(0.01)
    s.add(observed())
    await s.tick()  # a report is under way: no second one
    await s.close()  # given up after its time, the post unanswered
    assert len(control_plane.posts) == 1
    assert s.pending_requests == 2


async def test_close_sends_what_is_left(control_plane: ControlPlane) -> None:
    s = sink(control_plane.url, interval=3600)
    s.add(observed())
    await s.tick()
    s.add(observed())
    await s.tick()  # within the interval: nothing new started
    await s.close()
    assert control_plane.sent_seqs() == [1, 2]
    assert control_plane.sent_buckets()[-1] == ("pr-1", "svc", T0, 2)


async def test_what_arrives_while_a_report_is_under_way_is_sent_next(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url, interval=0)
    s.add(observed())
    control_plane.mode = "hang"
    await s.tick()
    while not control_plane.posts:
        await asyncio.sleep(0.01)
    s.add(observed())  # into the bucket being posted
    control_plane.mode = "ok"
    control_plane.release.set()
    await s.close()
    assert control_plane.sent_buckets() == [("pr-1", "svc", T0, 1), ("pr-1", "svc", T0, 2)]
    assert control_plane.sent_seqs() == [1, 2]


async def test_tick_reports_about_once_per_interval(control_plane: ControlPlane) -> None:
    now = [T0 + 5]
    s = sink(control_plane.url, clock=lambda: now[0], interval=1.0)
    # the loop's ticks come with some jitter: one a little early still reports
    for step, reports in ((0.0, True), (0.5, False), (0.95, True), (1.0, False), (1.5, False),
                          (2.0, True)):  # fmt: skip
        now[0] = T0 + 5 + step
        s.add(observed())
        await s.tick()
        for _ in range(500 if reports else 0):  # until that report is acknowledged
            if not s.pending_requests:
                break
            await asyncio.sleep(0.01)
    await s.close()
    assert [[r["seq"] for r in p["requests"]] for p in control_plane.posts] == [
        [1], [2, 3], [4, 5, 6],
    ]  # fmt: skip


async def test_close_gives_up_its_own_last_report_when_the_control_plane_hangs(
    control_plane: ControlPlane,
) -> None:
    s = sink(control_plane.url)
    s.add(observed())
    control_plane.mode = "hang"
    await s.close()  # returns, the post unanswered (the test's timeout would say otherwise)
    assert s.pending_requests == 1  # not acknowledged: still there


async def test_a_busy_open_bucket_is_sent_again_every_5_s_and_when_it_closes(
    control_plane: ControlPlane,
) -> None:
    now = [T0 + 1.0]
    s = sink(control_plane.url, clock=lambda: now[0])
    for _ in range(100):  # busy: 100 requests in the window [T0, T0 + 10)
        s.add(observed())
    await s.send()
    s.add(observed())
    now[0] = T0 + 3.0
    await s.send()  # changed, but sent 2 s ago and still open: not yet
    assert control_plane.sent_buckets() == [("pr-1", "svc", T0, 100)]
    now[0] = T0 + 6.5
    await s.send()  # 5 s on
    s.add(observed())
    now[0] = T0 + 10.0
    await s.send()  # closed: at once
    assert [b[3] for b in control_plane.sent_buckets()] == [100, 101, 102]
    s.add(observed(end=T0 + 11))  # a quiet bucket: every report
    s.add(observed(end=T0 + 11))
    now[0] = T0 + 11.5
    await s.send()
    assert control_plane.sent_buckets()[-1] == ("pr-1", "svc", T0 + 10, 2)
    await s.close()


async def test_a_straggler_past_the_grace_starts_a_new_copy_of_its_bucket(
    control_plane: ControlPlane,
) -> None:
    """The bucket acknowledged and forgotten is not the one a late request counts in."""
    now = [T0 + 5.0]
    s = sink(control_plane.url, clock=lambda: now[0])
    s.add(observed(sandbox=""))
    await s.send()
    now[0] = T0 + 14.0  # closed and past the grace: forgotten
    await s.send()
    assert s.buckets == 0
    s.add(observed(sandbox="", end=T0 + 9.0))
    await s.send()
    assert control_plane.sent_buckets() == [("", "svc", T0, 1), ("", "svc", T0, 1)]
    await s.close()


async def test_close_sends_a_busy_bucket_sent_a_moment_ago(control_plane: ControlPlane) -> None:
    s = sink(control_plane.url, clock=lambda: T0 + 1)
    for _ in range(100):
        s.add(observed())
    await s.send()
    s.add(observed())
    await s.close()
    assert [b[3] for b in control_plane.sent_buckets()] == [100, 101]


async def test_posts_stay_under_the_body_limit(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signals, "MAX_POST_BYTES", 20_000)
    s = sink(control_plane.url)
    for i in range(60):  # 60 buckets and 60 records: far over 20 kB in one post
        for _ in range(3):
            s.add(observed(sandbox=f"pr-{i}"))
    await s.send()
    assert len(control_plane.posts) > 1
    assert all(len(orjson.dumps(p)) <= 20_000 for p in control_plane.posts)
    assert sorted(control_plane.sent_seqs()) == list(range(1, 181))
    assert len({b[0] for b in control_plane.sent_buckets()}) == 60
    await s.close()


async def test_a_request_id_no_encoder_takes_never_stops_the_reports(
    control_plane: ControlPlane,
) -> None:
    """A JSON-RPC id `"\\ud800"` decodes to a lone surrogate, which no UTF-8 encoder takes: its
    record goes with the id as sent (escaped), and every report after it goes too."""
    s = sink(control_plane.url)
    odd = observed()
    odd.rpc_method, odd.tool, odd.rpc_id = "tools/call", "t", '"\\ud800"'
    s.add(odd)
    s.add(observed(sandbox="pr-2"))
    await s.send()
    (post,) = control_plane.posts
    sent = {r["sandbox"]: r for r in post["requests"]}
    assert sent["pr-1"]["attributes"]["jsonrpc.request.id"] == "\\ud800"
    assert set(sent) == {"pr-1", "pr-2"} and s.pending_requests == 0
    s.add(observed(sandbox="pr-3"))
    await s.send()
    assert [r["sandbox"] for r in control_plane.posts[-1]["requests"]] == ["pr-3"]
    await s.close()


async def test_a_late_acknowledgement_does_not_mark_a_bucket_used_again(
    control_plane: ControlPlane,
) -> None:
    """A dropped bucket is reset and used for other names (`Bucket.reset`); a post that
    carried it before, acknowledged only after (another report ran meanwhile, as the
    shutdown's may), must not mark the new names' counts as sent."""
    now = [T0 + 5]
    s = sink(control_plane.url, clock=lambda: now[0], interval=0)
    s.add(observed())
    control_plane.mode = "hang"
    await s.tick()  # (its post waits)
    while not control_plane.posts:
        await asyncio.sleep(0.01)
    now[0] = later = T0 + signals.HORIZON + 100  # pr-1's bucket: too old to matter now
    s.add(observed(sandbox="pr-2", end=later))
    control_plane.mode = "ok"
    report = asyncio.create_task(s.send())  # drops pr-1's bucket (kept for reuse), then waits
    while s.buckets != 1:
        await asyncio.sleep(0.01)
    s.add(observed(sandbox="pr-3", end=later))  # in pr-1's old bucket
    control_plane.release.set()
    await report
    await s.close()
    start = later // 10 * 10
    assert ("pr-3", "svc", start, 1) in control_plane.sent_buckets()
