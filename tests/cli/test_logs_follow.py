"""`sandbox logs -F` and Ctrl-C: the interrupt stops following between two polls, never inside
one (an interrupt in the middle of the HTTP client's work can leave its pool locked for the
close that follows, and the CLI then hangs); a second Ctrl-C stops it at once. The end-to-end
case (a real sandboxd, a real fork, SIGINT to the real command) is in `test_commands.py`.

These drive `follow_from` in this process with real signals, against a stand-in for `Api`'s
`logs` (our own one-method interface) that presses Ctrl-C in the middle of a poll."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from sandboxd_cli.client import LogChunk
from sandboxd_cli.commands import logs
from sandboxd_cli.errors import NotFound
from sandboxd_cli.render import Output


class _Log:
    """Polls answered from `chunks`, then the 404 of a sandbox that was deleted; Ctrl-C
    pressed during the poll numbered `press_at`."""

    def __init__(self, chunks: list[bytes], press_at: int) -> None:
        self.chunks = chunks
        self.press_at = press_at
        self.polls = 0

    def logs(self, name: str, service: str, *, offset: int = 0) -> LogChunk:
        self.polls += 1
        if self.polls == self.press_at:
            signal.raise_signal(signal.SIGINT)  # handled before this call returns
        if self.polls > len(self.chunks):
            raise NotFound(f"sandbox {name}: not found")
        data = self.chunks[self.polls - 1]
        return LogChunk(data=data, next_offset=offset + len(data))


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "FOLLOW_INTERVAL", 0.01)


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """SIGINT handled as Python does by default, whatever this test run inherited (a run
    started in the background by a shell has it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_poll_lets_it_finish_then_stops(capsys: pytest.CaptureFixture[str]) -> None:
    log = _Log([b"one\n", b"two\n", b"three\n", b"never\n"], press_at=2)

    logs.follow_from(log, "web", "echo", offset=0, output=Output.TABLE)  # type: ignore[arg-type]

    assert log.polls == 2  # no poll after the one Ctrl-C came in
    assert capsys.readouterr().out == "one\ntwo\n"  # and what that poll read is printed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back


def test_a_second_ctrl_c_stops_at_once() -> None:
    class _Twice(_Log):
        def logs(self, name: str, service: str, *, offset: int = 0) -> LogChunk:
            signal.raise_signal(signal.SIGINT)
            return super().logs(name, service, offset=offset)

    log = _Twice([b"a\n", b"b\n", b"c\n"], press_at=1)  # two presses in the first poll

    with pytest.raises(KeyboardInterrupt):  # (`sandbox logs` ends on it with exit 0)
        logs.follow_from(log, "web", "echo", offset=0, output=Output.TABLE)  # type: ignore[arg-type]

    assert log.polls == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_started_with_ctrl_c_ignored_it_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        log = _Log([b"a\n", b"b\n", b"c\n"], press_at=1)

        logs.follow_from(log, "web", "echo", offset=0, output=Output.TABLE)  # type: ignore[arg-type]

        assert log.polls == 4  # the ignored Ctrl-C stopped nothing: the 404 did
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
