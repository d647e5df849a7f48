"""The HTML report in a real headless Chromium: every figure renders an SVG, no console errors
(streamed runs' token figures included).

How: `chromium --headless --dump-dom --virtual-time-budget` serialises the DOM after the scripts
ran, so a figure that plotly drew contains `<svg class="main-svg">`; `--enable-logging=stderr`
prints each console message as a `CONSOLE` log line, which must not report an error. Skipped when
Chromium is missing, except with LOADTEST_REQUIRE_BROWSER=1 (set by .ci/run), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from synthetic_results import (
    compare_json,
    find_peak_json,
    run_json,
    streamed_records,
    streamed_run_json,
    synthetic_records,
)

from loadtest.report.html import render_html
from loadtest.report.resultfile import from_data

pytestmark = pytest.mark.browser

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("LOADTEST_REQUIRE_BROWSER") == "1":
        pytest.fail("chromium is required (LOADTEST_REQUIRE_BROWSER=1) but not installed")
    pytest.skip("chromium not installed (apt-get install chromium)")


def render_in_browser(page: Path, profile: Path) -> tuple[str, str]:
    """(DOM after scripts ran, Chromium's stderr log)."""
    result = subprocess.run(
        [
            chromium(),
            *FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, result.stderr


def console_errors(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if "CONSOLE" in line and re.search(r"Uncaught|Error|error", line)
    ]


def figures_drawn(dom: str) -> dict[str, bool]:
    """For each report figure: whether plotly drew an SVG into it."""
    chunks = re.split(r'<div class="figure" data-figure="', dom)[1:]
    return {chunk.split('"', 1)[0]: 'class="main-svg"' in chunk for chunk in chunks}


def test_every_figure_renders_without_console_errors(tmp_path: Path):
    late = synthetic_records(n=2000, seed=5)
    late.issued_ns[:] = late.scheduled_ns + 3_000_000
    streamed, gaps = streamed_records(n=300, per_response=2)
    results = [
        from_data(run_json(synthetic_records(n=3000, seed=1)), "baseline"),
        from_data(run_json(late), "client-bound"),
        from_data(run_json(synthetic_records(seed=2), keep_records=False), "no-records"),
        from_data(find_peak_json(), "peak"),
        from_data(compare_json(), "compare"),
        # streamed (LLM) runs: the token figures, exact from records and from the file alone
        from_data(streamed_run_json(streamed, gaps), "llm"),
        from_data(streamed_run_json(*streamed_records(seed=7), keep_records=False), "llm-plain"),
    ]
    page = tmp_path / "report.html"
    page.write_text(render_html(results), encoding="utf-8")
    dom, log = render_in_browser(page, tmp_path / "profile")
    drawn = figures_drawn(dom)
    latency = {"fig-hdr", "fig-cdf", "fig-timeline", "fig-peak-3", "fig-split-4"}
    tokens = {"fig-ttft", "fig-tpot", "fig-itl", "fig-chunks", "fig-tokens-per-s"}
    assert set(drawn) == latency | tokens
    assert all(drawn.values()), drawn
    assert not console_errors(log), console_errors(log)
    assert "Client-bound run" in dom


def test_console_errors_are_detected(tmp_path: Path):
    # The check itself: a page with a script error must be caught by console_errors.
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    _, log = render_in_browser(page, tmp_path / "profile")
    assert console_errors(log)
