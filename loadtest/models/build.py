"""Builds suite models into a Triton model repository: `<repo>/<name>/config.pbtxt`,
`configs/gpu.pbtxt` and `1/model.onnx`, skipping models that are already up to date.

Determinism: a model's bytes depend only on the builder version and the seed (seeded numpy
Generator, counter-named tensors, fixed header, no timestamps), so the same seed gives a
byte-identical model.onnx on any machine. A stamp beside it, `1/model.onnx.stamp` (JSON: builder
version, model, seed, size, sha256), records what was built; a model is up to date when the stamp
matches the request and the file still hashes to it, so a truncated or edited file is rebuilt.
Bump BUILDER_VERSION whenever a generator's output changes. A model with side files (the
decoder's tokenizer.json, model.py, decoding.py: `SuiteModel.side_files`) has them written beside
model.onnx, each atomically, and their sha256 in the stamp (`files`): a side file that is missing,
edited or stale (loadtest's copy of model.py changed) makes the model out of date.

Configs are generated, not edited: every build rewrites them (only when their text changed, so
Triton's polling sees no spurious modification). Custom settings belong in `configs/<name>.pbtxt`.

The model file is streamed (one initializer at a time) to a temporary name, checked with
onnx.checker and then renamed, so an interrupted build never leaves a half-written model.onnx
behind, and bert_large is never held twice in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from loadtest.errors import ModelBuildError
from loadtest.models.config import format_config, model_config
from loadtest.models.flops import count_flops
from loadtest.models.onnx_io import serialized_chunks
from loadtest.models.suite import DEFAULT_BUILD, SUITE, SuiteModel

BUILDER_VERSION = "1"
VERSION = "1"  # the one model version directory the suite uses
MODEL_FILE = "model.onnx"
STAMP_FILE = "model.onnx.stamp"
GPU_CONFIG = "gpu"


@dataclass(frozen=True)
class BuildResult:
    name: str
    path: Path  # the model.onnx
    bytes: int
    seconds: float  # generating + writing (0 when skipped)
    skipped: bool  # already up to date
    flops: int = 0  # per sample (models/flops.py), from the stamp when skipped (0: unknown)


def human_bytes(size: int) -> str:
    if size < 1_000_000:
        return f"{size / 1e3:.1f} kB"
    if size < 1_000_000_000:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e9:.2f} GB"


def resolve_names(names: Sequence[str] | None) -> list[str]:
    """None -> the default build; otherwise the names, checked, in order, without repeats."""
    if names is None:
        return list(DEFAULT_BUILD)
    unknown = [name for name in names if name not in SUITE]
    if unknown:
        raise ModelBuildError(f"unknown model {unknown[0]!r}: the suite has {', '.join(SUITE)}")
    return list(dict.fromkeys(names))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_stamp(version_dir: Path) -> dict[str, object] | None:
    try:
        stamp = json.loads((version_dir / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _stamp(
    model: SuiteModel,
    seed: int,
    size: int,
    sha256: str,
    flops: int,
    seconds: float,
    files: Mapping[str, str],
) -> dict[str, object]:
    stamp: dict[str, object] = {
        "builder": BUILDER_VERSION,
        "model": model.name,
        "seed": seed,
        "bytes": size,
        "sha256": sha256,
        "flops": flops,  # per sample, counted from the graph (models/flops.py)
        "build_seconds": round(seconds, 2),  # generating, writing and checking, on this machine
    }
    if files:
        stamp["files"] = dict(files)  # side files: name -> sha256
    return stamp


def stamp_int(stamp: dict[str, object] | None, key: str) -> int:
    """An integer the stamp records (0 when absent: stamps written before it was recorded)."""
    value = stamp.get(key) if stamp else None
    return value if isinstance(value, int) else 0


def _up_to_date(model: SuiteModel, version_dir: Path, seed: int) -> bool:
    stamp = read_stamp(version_dir)
    path = version_dir / MODEL_FILE
    if stamp is None or not path.is_file():
        return False
    if (stamp.get("builder"), stamp.get("model"), stamp.get("seed")) != (
        BUILDER_VERSION,
        model.name,
        seed,
    ):
        return False
    if model.side_files is not None and not _side_files_current(model, version_dir, stamp, seed):
        return False
    return stamp.get("bytes") == path.stat().st_size and stamp.get("sha256") == sha256_file(path)


def _side_files_current(
    model: SuiteModel, version_dir: Path, stamp: dict[str, object], seed: int
) -> bool:
    """Each side file is there and hashes to the stamp's record, and the ones copied from
    loadtest's source still equal it (a model.py from an older loadtest is rebuilt)."""
    assert model.side_files is not None
    recorded = stamp.get("files")
    if not isinstance(recorded, dict) or set(recorded) != set(model.side_files.names):
        return False
    for name, digest in recorded.items():
        path = version_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            return False
    copies = model.side_files.copied
    return all((version_dir / name).read_bytes() == source.read_bytes() for name, source in copies)


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def config_files(model: SuiteModel) -> dict[str, str]:
    """{path relative to the model directory: text} of every config the suite writes for it."""
    files = {"config.pbtxt": format_config(model_config(model))}
    if model.gpu_config:
        files[f"configs/{GPU_CONFIG}.pbtxt"] = format_config(model_config(model, gpu=True))
    return files


def _check_repository_dir(repository: Path) -> None:
    if repository.exists() and not repository.is_dir():
        raise ModelBuildError(f"model repository {repository} exists but is not a directory")


def write_configs(repository: Path, names: Sequence[str] | None = None) -> list[Path]:
    """Write (only) the configs of `names` (default: the whole suite); returns their paths."""
    _check_repository_dir(repository)
    chosen = list(SUITE) if names is None else resolve_names(names)
    written: list[Path] = []
    for name in chosen:
        for relative, text in config_files(SUITE[name]).items():
            path = repository / name / relative
            try:
                _write_if_changed(path, text)
            except OSError as exc:
                raise ModelBuildError(f"{name}: cannot write {path}: {exc}") from None
            written.append(path)
    return written


def _generate(model: SuiteModel, seed: int) -> onnx.ModelProto:
    try:
        return model.generate(seed)
    except MemoryError:
        raise ModelBuildError(f"{model.name}: out of memory while generating the model") from None
    except Exception as exc:
        raise ModelBuildError(f"{model.name}: the generator failed: {exc}") from exc


def _side_files(model: SuiteModel, seed: int) -> dict[str, bytes]:
    if model.side_files is None:
        return {}
    try:
        return dict(model.side_files.make(seed))
    except Exception as exc:
        raise ModelBuildError(f"{model.name}: its side files failed: {exc}") from exc


def _write_file(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def _write_model(
    model: SuiteModel, version_dir: Path, proto: onnx.ModelProto, seed: int, started: float
) -> tuple[int, int]:
    """Count its FLOPs, stream the model to a temporary file, check it, rename it into place,
    write its side files, stamp it; returns (bytes, FLOPs)."""
    path = version_dir / MODEL_FILE
    flops = count_flops(proto, model.flops_dims)
    side = _side_files(model, seed)
    temporary = version_dir / f".{MODEL_FILE}.tmp{os.getpid()}"
    digest = hashlib.sha256()
    size = 0
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
        (version_dir / STAMP_FILE).unlink(missing_ok=True)
        with temporary.open("wb") as handle:
            for chunk in serialized_chunks(proto):
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        del proto  # the caller holds no reference: the model is freed before the check
        try:
            onnx.checker.check_model(str(temporary))
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelBuildError(
                f"{model.name}: the generated model fails onnx.checker: {first}"
            ) from None
        os.replace(temporary, path)
        for name, data in side.items():
            _write_file(version_dir / name, data)
        files = {name: hashlib.sha256(data).hexdigest() for name, data in side.items()}
        seconds = time.perf_counter() - started
        stamp = _stamp(model, seed, size, digest.hexdigest(), flops, seconds, files)
        (version_dir / STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n")
    except OSError as exc:
        raise ModelBuildError(f"{model.name}: cannot write {path}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    return size, flops


def _build_one(
    model: SuiteModel, repository: Path, seed: int, force: bool, say: Callable[[str], None]
) -> BuildResult:
    version_dir = repository / model.name / VERSION
    path = version_dir / MODEL_FILE
    write_configs(repository, [model.name])
    try:
        if not force and _up_to_date(model, version_dir, seed):
            size = path.stat().st_size
            say(f"{model.name}: up to date ({human_bytes(size)}, seed {seed})")
            flops = stamp_int(read_stamp(version_dir), "flops")
            return BuildResult(model.name, path, size, 0.0, skipped=True, flops=flops)
    except OSError as exc:
        raise ModelBuildError(f"{model.name}: cannot read {path}: {exc}") from None
    say(f"{model.name}: building (seed {seed}) ...")
    started = time.perf_counter()
    # no local reference to the proto: _write_model frees it before onnx.checker reads the file
    size, flops = _write_model(model, version_dir, _generate(model, seed), seed, started)
    seconds = time.perf_counter() - started
    say(f"{model.name}: built {human_bytes(size)} in {seconds:.1f} s")
    return BuildResult(model.name, path, size, seconds, skipped=False, flops=flops)


def build_repository(
    repository: Path,
    names: Sequence[str] | None = None,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[BuildResult]:
    """Build `names` (default: every model with default_build) into `repository`.

    Writes each model's configs and, unless up to date for this seed, its model.onnx and stamp.
    Raises ModelBuildError (one line naming the model and the cause) for an unknown name, a
    repository path that is not a directory, a failed generator or an unwritable file.
    """
    chosen = resolve_names(names)
    _check_repository_dir(repository)
    say = progress or (lambda _text: None)
    return [_build_one(SUITE[name], repository, seed, force, say) for name in chosen]
