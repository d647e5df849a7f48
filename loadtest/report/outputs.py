"""Where a command's files go, so that no run is lost.

- Checked before any load (`check_directory`, `check_file`): an --output that is a file, lies
  under a file, or cannot be written (/proc, a read-only directory), or an --html that is a
  directory or a device, is one clear line (SettingsError, exit 1) before anything is measured.
- Never overwritten silently: result files already in an --output directory, or an existing
  --html file, need --force. Default directories (`results/<stamp>-<kind>-<model>`) are claimed
  with an exclusive mkdir, a `-2`, `-3`... suffix when the name is taken, so two runs in the same
  second never share one.
- Written atomically (`write_atomically`): each file goes to a temporary name beside it, is
  synced, then renamed into place, so a reader sees the old file or all of the new one.
- Rescued (`save`): if the final write fails anyway (full disk, directory removed or made
  read-only during the run), every file goes to a fresh directory under
  $XDG_CACHE_HOME/loadtest/rescued (default ~/.cache), else under the temp dir; the caller says
  where and exits with errors.ExitCode.NOT_WRITTEN (4).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.errors import SettingsError

RESULTS_ROOT = Path("results")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`.

    A rename within one directory is atomic, so `path` holds either the old content or all of the
    new, never a part (a full disk fails the write of the temporary file, not the result).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def stamp(unix_s: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(unix_s))


def _nearest_existing(path: Path) -> Path:
    current = path
    while not os.path.lexists(current):
        if current.parent == current:
            break
        current = current.parent
    return current


def _probe(directory: Path, flag: str, path: Path) -> None:
    """Create and remove a file in `directory`: the only test that holds for root, read-only
    mounts and pseudo file systems alike."""
    try:
        handle, name = tempfile.mkstemp(prefix=".loadtest-probe-", dir=directory)
    except OSError as exc:
        where = "" if directory == path else f" (in {directory.resolve()})"
        raise SettingsError(
            f"{flag} {path}: cannot write there{where}: {exc.strerror or exc}"
        ) from None
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)


def _check_creatable(path: Path, flag: str) -> None:
    """`path` does not exist yet: its nearest existing ancestor must be a writable directory."""
    ancestor = _nearest_existing(path.parent if path.parent != path else path)
    if not ancestor.is_dir():
        raise SettingsError(f"{flag} {path}: {ancestor} is not a directory")
    _probe(ancestor, flag, path)


def check_directory(
    path: Path | None, files: Sequence[str], force: bool, flag: str = "--output"
) -> None:
    """Before any load: can `files` be written into `path` (None: a new default directory under
    results/) without overwriting an earlier result unasked? SettingsError if not."""
    if path is None:
        target, what = RESULTS_ROOT, f"the default {flag} ({RESULTS_ROOT}/)"
        try:
            if os.path.lexists(target):
                if not target.is_dir():
                    raise SettingsError(f"{what} is not a directory")
                _probe(target, what, target)
            else:
                _check_creatable(target, what)
        except SettingsError as exc:
            raise SettingsError(f"{exc}; pass {flag} DIR") from None
        return
    if os.path.lexists(path):
        if not path.is_dir():
            raise SettingsError(f"{flag} {path} is not a directory")
        _probe(path, flag, path)
        existing = [name for name in files if os.path.lexists(path / name)]
        if existing and not force:
            raise SettingsError(
                f"{flag} {path} already holds {existing[0]} from an earlier run: pass --force "
                "to overwrite it, or choose another directory"
            )
        return
    _check_creatable(path, flag)


def check_file(path: Path, force: bool, flag: str = "--html") -> None:
    """Before any load: can `path` be written as a regular file without overwriting unasked?"""
    if os.path.lexists(path):
        mode = path.stat().st_mode if path.exists() else 0
        if stat.S_ISDIR(mode):
            raise SettingsError(f"{flag} {path} is a directory; give a file name")
        if not stat.S_ISREG(mode):
            raise SettingsError(f"{flag} {path} is not a regular file")
        if not force:
            raise SettingsError(
                f"{flag} {path} already exists: pass --force to overwrite it, or choose another "
                "file"
            )
        _probe(path.parent, flag, path)
        return
    _check_creatable(path, flag)


def claim_directory(root: Path, name: str) -> Path:
    """A new directory root/name (root/name-2, -3, ... when taken), created exclusively."""
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        candidate = root / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free name for {root / name}")


def rescue_roots() -> list[Path]:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(cache) / "loadtest" / "rescued", Path(tempfile.gettempdir())]


@dataclass(frozen=True)
class Saved:
    """Where a command's files ended up: `directory`, and `problem` when that is not where they
    were asked to go (the failed write, in one line), or `lost` when nothing could be saved."""

    directory: Path | None
    files: tuple[Path, ...] = ()
    problem: str = ""
    lost: bool = False

    @property
    def rescued(self) -> bool:
        return bool(self.problem)


def _write(path: Path, text: str, force: bool) -> None:
    """write_atomically, with the path in any error (a failed write(2) does not name it)."""
    if not force and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "appeared during the run", str(path))
    try:
        write_atomically(path, text)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def _write_into(directory: Path, files: Mapping[str, str], force: bool) -> list[Path]:
    written = []
    for name, text in files.items():
        _write(directory / name, text, force)
        written.append(directory / name)
    return written


def _one_line(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc.strerror or exc)


def save(
    files: Mapping[str, str],
    directory: Path | None,
    default_name: str,
    force: bool = False,
    extra: Mapping[Path, str] | None = None,
) -> Saved:
    """Write `files` (name -> text) into `directory` (None: a newly claimed results/<name>),
    and `extra` files (path -> text, e.g. the --html report) where they belong, all atomically;
    if any write fails, everything goes to a rescue directory instead (see module docstring)."""
    extra = dict(extra or {})
    try:
        if directory is None:
            target = claim_directory(RESULTS_ROOT, default_name)
        else:
            target = directory
            target.mkdir(parents=True, exist_ok=True)
        written = _write_into(target, files, force)
        for path, text in extra.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, text, force)
            written.append(path)
        return Saved(target, tuple(written))
    except OSError as exc:
        problem = _one_line(exc)
    rescue_files = dict(files)
    for path, text in extra.items():
        rescue_files[path.name] = text
    errors = [problem]
    for root in rescue_roots():
        rescue = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            rescue = Path(tempfile.mkdtemp(prefix=f"{default_name}-", dir=root))
            written = _write_into(rescue, rescue_files, force=True)
        except OSError as exc:
            errors.append(_one_line(exc))
            if rescue is not None:
                with contextlib.suppress(OSError):
                    rescue.rmdir()  # only if empty: never remove what was saved
            continue
        return Saved(rescue, tuple(written), problem=problem)
    return Saved(None, (), problem="; ".join(errors), lost=True)
