"""Never lose a run: outputs checked before any load, atomic writes, no silent overwrite, unique
default directories, rescue when the final write fails; `serve` never writes into a repository
the user named."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.errors import ExitCode, ModelBuildError, SettingsError
from loadtest.report import outputs

# A run that measured: VALID (0), INVALID (3) or client-bound (5); these tests are about
# stopping and files, not about the verdict of a 1-second run.
MEASURED = (0, 3, 5)

PACKAGE = Path(__file__).resolve().parent.parent / "loadtest"
FAKE = "fake://?servers=4&law=exponential&service_ms=1"
# Limits (a plain user's permissions, a file size cap) are set by tests/limited_launch.py in a
# process of its own, never by preexec_fn in this one (see that file).
LAUNCH = Path(__file__).resolve().parent / "limited_launch.py"
PLAIN_USER = (sys.executable, str(LAUNCH), "plain-user", "--")
FOUR_KB_FILES = (sys.executable, str(LAUNCH), "fsize:4096", "--")


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "COLUMNS": "160",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path / "tmp"),
    }


def loadtest(
    *args: str,
    cwd: Path,
    home: Path | None = None,
    timeout: float = 120,
    extra_env: dict[str, str] | None = None,
    launcher: tuple[str, ...] = (),
    **kwargs: object,
) -> subprocess.CompletedProcess[str]:
    """The CLI in `cwd`, its cache and temp directories under `home` (default: `cwd`), started
    through `launcher` (PLAIN_USER, FOUR_KB_FILES) when given."""
    home = home or cwd
    (home / "tmp").mkdir(exist_ok=True)
    return subprocess.run(  # type: ignore[call-overload]
        [*launcher, sys.executable, "-m", "loadtest.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**_env(home), **(extra_env or {})},
        **kwargs,
    )


def _server(*extra: str) -> list[str]:
    return [
        "server", "--url", FAKE, "--qps", "100", "--duration", "1", "--target-latency", "50",
        "--late-threshold", "50", "--no-live", *extra,
    ]  # fmt: skip


def _one_line_before_load(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and "onnxruntime" not in line  # its telemetry warns in read-only places
    ]
    assert len(lines) == 1 and text in lines[0], result.stderr
    assert "Server scenario" not in result.stdout + result.stderr  # no load was started


# -- checked before any load ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("/dev/null", "is not a directory"),
        ("/dev/null/run", "/dev/null is not a directory"),
        ("/proc/loadtest-run", "cannot write there"),
        ("a-file", "is not a directory"),
        ("a-file/run", "a-file is not a directory"),
    ],
)
def test_unusable_output_is_one_line_before_any_load(tmp_path: Path, output: str, message: str):
    (tmp_path / "a-file").write_text("not a directory\n")
    result = loadtest(*_server("--output", output), cwd=tmp_path)
    _one_line_before_load(result, message)


@pytest.mark.parametrize(
    ("html", "message"),
    [("/dev/null", "not a regular file"), ("adir", "is a directory"), ("/proc/x.html", "cannot")],
)
def test_unusable_html_is_one_line_before_any_load(tmp_path: Path, html: str, message: str):
    (tmp_path / "adir").mkdir()
    result = loadtest(*_server("--output", "run", "--html", html, "--force"), cwd=tmp_path)
    _one_line_before_load(result, message)
    assert not (tmp_path / "run").exists()


def test_read_only_output_directory_is_refused_before_any_load(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = loadtest(
            *_server("--output", str(locked / "run")), cwd=tmp_path, launcher=PLAIN_USER
        )
        _one_line_before_load(result, "Permission denied")
        # the default results/ in a read-only working directory
        result = loadtest(*_server(), cwd=locked, home=tmp_path, launcher=PLAIN_USER)
        _one_line_before_load(result, "Permission denied")
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def test_check_directory_and_file_directly(tmp_path: Path):
    outputs.check_directory(tmp_path / "new" / "deeper", ["result.json"], force=False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "result.json").write_text("{}")
    with pytest.raises(SettingsError, match=r"already holds result\.json"):
        outputs.check_directory(tmp_path / "old", ["result.json"], force=False)
    outputs.check_directory(tmp_path / "old", ["result.json"], force=True)
    outputs.check_directory(tmp_path / "old", ["compare.json"], force=False)  # nothing to lose
    (tmp_path / "r.html").write_text("x")
    with pytest.raises(SettingsError, match="--force"):
        outputs.check_file(tmp_path / "r.html", force=False)
    outputs.check_file(tmp_path / "r.html", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "r.html"]  # probes cleaned up


# -- never overwritten silently, unique default names ----------------------------------------


def test_an_earlier_result_needs_force(tmp_path: Path):
    first = loadtest(*_server("--output", "run"), cwd=tmp_path)
    assert first.returncode in MEASURED, first.stderr
    before = (tmp_path / "run" / "result.json").read_text()
    again = loadtest(*_server("--output", "run"), cwd=tmp_path)
    _one_line_before_load(again, "already holds result.json")
    assert (tmp_path / "run" / "result.json").read_text() == before
    forced = loadtest(*_server("--output", "run", "--force"), cwd=tmp_path)
    assert forced.returncode in MEASURED, forced.stderr
    assert (tmp_path / "run" / "result.json").read_text() != before


def test_an_existing_html_file_needs_force(tmp_path: Path):
    (tmp_path / "r.html").write_text("keep me")
    result = loadtest(*_server("--output", "run", "--html", "r.html"), cwd=tmp_path)
    _one_line_before_load(result, "r.html already exists")
    assert (tmp_path / "r.html").read_text() == "keep me"


def test_default_directories_are_claimed_exclusively(tmp_path: Path):
    names = [outputs.claim_directory(tmp_path, "20250101-000000-server-tiny") for _ in range(3)]
    assert [p.name for p in names] == [
        "20250101-000000-server-tiny",
        "20250101-000000-server-tiny-2",
        "20250101-000000-server-tiny-3",
    ]


def test_two_runs_in_the_same_second_get_two_directories(tmp_path: Path):
    command = [sys.executable, "-m", "loadtest.cli", *_server()]
    (tmp_path / "tmp").mkdir()
    runs = [
        subprocess.Popen(command, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    for run in runs:
        run.communicate(timeout=120)
        assert run.returncode in MEASURED
    made = sorted((tmp_path / "results").iterdir())
    assert len(made) == 2 and all((d / "result.json").is_file() for d in made)


# -- atomic, and rescued when the final write fails ------------------------------------------


def test_result_files_are_written_only_through_write_atomically():
    """report/ and commands/ write files through report/outputs.py, never directly."""
    direct = re.compile(r"\.write_text\(|\.write_bytes\(|open\([^)]*[\"'][wa]b?[\"']")
    offenders = []
    for folder in ("report", "commands"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if direct.search(line) and "temporary.open" not in line:
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_a_write_that_fails_part_way_keeps_the_old_result_and_says_so(tmp_path: Path):
    """RLIMIT_FSIZE stands in for a full disk: every file the run writes stops at 4 kB, the
    per-query records make result.json larger, the rescue fails the same way."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text('{"old": true}\n')
    result = loadtest(
        *_server("--output", "run", "--force", "--records"),
        cwd=tmp_path,
        launcher=FOUR_KB_FILES,
        # Python's own bytecode cache would be cut at the limit too (and left corrupt)
        extra_env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == ExitCode.NOT_WRITTEN, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot save the result anywhere" in result.stderr
    assert "run/result.json: File too large" in result.stderr
    assert (run / "result.json").read_text() == '{"old": true}\n'  # whole, untouched
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no half-written file anywhere


def test_a_directory_made_read_only_during_the_run_is_rescued(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [
            *PLAIN_USER,
            sys.executable,
            "-m",
            "loadtest.cli",
            *_server("--output", "out", "--duration", "3"),
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        heading = process.stderr.readline()  # printed once the outputs were checked
        assert "Server scenario" in heading, heading
        out.chmod(0o555)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        out.chmod(0o755)
    assert process.returncode == ExitCode.NOT_WRITTEN, stdout + stderr
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []
    rescued = list((tmp_path / "cache" / "loadtest" / "rescued").iterdir())
    assert len(rescued) == 1 and str(rescued[0]) in stderr.replace("\n", "")
    data = json.loads((rescued[0] / "result.json").read_text())
    assert data["summary"]["scheduled"] > 50
    assert (rescued[0] / "mlperf_log_summary.txt").is_file()


def test_save_rescues_into_the_temp_dir_when_the_cache_is_unusable(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    monkeypatch.setattr(outputs.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "a-file").write_text("in the way")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "blocked").write_text("a file where the output directory should be")
    saved = outputs.save({"result.json": "{}\n"}, tmp_path / "blocked", "x-server-tiny")
    assert saved.rescued and not saved.lost
    assert saved.directory is not None and saved.directory.parent == tmp_path / "tmp"
    assert (saved.directory / "result.json").read_text() == "{}\n"


# -- serve and the client never write into a repository the user named ------------------------


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def test_the_client_builds_only_into_its_own_repository(tmp_path: Path, monkeypatch):
    from loadtest.server.deployment import ensure_model_built

    named = tmp_path / "mine"
    (named / "tiny").mkdir(parents=True)
    before = _tree(named)
    with pytest.raises(ModelBuildError, match="loadtest models build --repository"):
        ensure_model_built(named, "tiny", print)
    assert _tree(named) == before

    monkeypatch.chdir(tmp_path)
    said: list[str] = []
    ensure_model_built(Path("model_repository"), "tiny", said.append)
    assert len(said) == 1, said
    assert "'tiny' (9 kB) into model_repository/tiny/1/model.onnx" in said[0]
    assert (tmp_path / "model_repository" / "tiny" / "1" / "model.onnx").is_file()


def test_serve_refuses_a_named_repository_without_the_model_and_writes_nothing(tmp_path: Path):
    named = tmp_path / "mine"
    named.mkdir()
    (named / "notes.txt").write_text("no models here")
    result = loadtest("serve", "--repository", str(named), cwd=tmp_path)
    assert result.returncode == 1 and "holds no model" in result.stderr
    (named / "tiny").mkdir()
    (named / "tiny" / "config.pbtxt").write_text('name: "tiny"\n')
    before = _tree(named)
    result = loadtest("serve", "--repository", str(named), "--model", "resnet50", cwd=tmp_path)
    assert result.returncode == 1 and "'resnet50' is not in" in result.stderr
    assert _tree(named) == before


@pytest.mark.triton
def test_serve_loads_every_model_of_a_named_repository_and_writes_nothing(
    built_repository: Path, tmp_path: Path
):
    import shutil
    import urllib.request

    from loadtest.server.embedded import free_ports

    named = tmp_path / "mine"
    shutil.copytree(built_repository, named)
    before = _tree(named)
    http, grpc, metrics = free_ports(3)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "loadtest.cli", "serve", "--repository", str(named),
            "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Triton ready" in line or "error" in line:
                break
        assert any("Triton ready" in line for line in lines), lines
        for model in ("tiny", "resnet50"):
            url = f"http://127.0.0.1:{http}/v2/models/{model}/ready"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    # Triton's Python backend imports a Python model's model.py (the decoder's, when
    # tests/test_models.py built it into this shared repository) in an isolated interpreter
    # (PyConfig_InitIsolatedConfig: PYTHONDONTWRITEBYTECODE is not read), which caches its
    # bytecode beside it: Triton's own write, not loadtest's, and the only one allowed.
    after = {path: stat for path, stat in _tree(named).items() if "__pycache__" not in path}
    for path in [p for p in after if p.endswith("/model.py")]:  # the cache made its folder newer
        folder = path.rsplit("/", 1)[0]
        after[folder] = before[folder]
    assert after == before
