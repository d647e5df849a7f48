"""`loadtest mix` and `loadtest compare` take --live/--no-live like the other long commands: a
view of the play running now, on a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from loadtest.commands import compare as compare_command
from loadtest.commands import mix as mix_command
from loadtest.report.progress import PlaysProgress

FAKE = "fake://?servers=4&law=constant&service_ms=1"


class Recorder(PlaysProgress):
    """PlaysProgress that remembers how it was asked for and what it was shown."""

    made: list[Recorder] = []  # noqa: RUF012

    def __init__(self, console, span_s, title, enabled=True, **kw):
        super().__init__(console, span_s, title, enabled=enabled, **kw)
        self.asked = enabled
        self.stages: list[str] = []
        Recorder.made.append(self)

    def stage(self, text: str) -> None:
        super().stage(text)
        self.stages.append(text)


def _main(args: list[str]) -> int:
    from loadtest import cli

    argv, sys.argv = sys.argv, ["loadtest", *args]
    try:
        cli.main()
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = argv


@pytest.mark.parametrize(
    "module, args",
    [
        (
            compare_command,
            ["compare", "-t", "triton", "--url", FAKE, "--qps", "50", "--duration", "1",
             "--min-queries", "10", "--target-latency", "100"],
        ),
        (
            mix_command,
            ["mix", "--model", f"tiny@{FAKE}:50:500", "--duration", "1", "--min-queries", "10",
             "--no-isolated"],
        ),
    ],
)  # fmt: skip
def test_live_and_no_live_reach_the_view_of_each_play(module, args, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(module, "PlaysProgress", Recorder)
    Recorder.made = []
    for k, flag in enumerate(["--no-live", "--live"]):
        code = _main([*args, flag, "--output", str(tmp_path / f"out{k}")])
        assert code in (0, 3, 5), code  # the verdict may vary on a loaded machine
    assert [view.asked for view in Recorder.made] == [False, True]
    for view in Recorder.made:
        assert not view.enabled  # not a terminal: nothing drawn, the plain lines are the record
        assert view.stages, "every play is shown as it starts"


def test_the_view_shows_the_play_running_now_and_its_time():
    now = [100.0]
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    view = PlaysProgress(console, 10, "mix of 2 entries", clock=lambda: now[0])
    assert view.enabled
    view.stage("alone: fast (60 QPS)")
    now[0] += 4
    console.print(view.render())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "mix of 2 entries" in text and "now: alone: fast (60 QPS)" in text
    assert "4 s of ≥ 10 s" in text
    assert not PlaysProgress(console, 10, "x", enabled=False).enabled
