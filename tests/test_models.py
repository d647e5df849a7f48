"""The benchmark suite: every model builds, passes onnx.checker, runs in onnxruntime with finite
outputs of the declared shapes; builds are deterministic and skipped when up to date; committed
configs parse, match the generator and the ONNX tensors; bad input fails with one clear line.

The default suite is built once per session into the shared `built_repository` (conftest, which
already holds tiny and resnet50), so resnet50 is generated once per test run; bert_large (1.3 GB)
is never built here — its graph is checked at a reduced shape and its config against the scaled
BERT's ONNX, which has the same tensors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from loadtest.errors import ModelBuildError
from loadtest.models import (
    DEFAULT_BUILD,
    DEFAULT_SERVER_MODEL,
    SOURCE_REPOSITORY,
    SUITE,
    BuildResult,
    bert,
    build_repository,
    check_repository,
    default_repository,
    dlrm,
    retinanet,
    unet3d,
    write_configs,
)
from loadtest.models.build import STAMP_FILE, config_files
from loadtest.models.check import compare_io, onnx_signature
from loadtest.models.config import format_config, model_config, read_config, value_ranges
from loadtest.models.onnx_io import ScanError, scan_model, serialized_chunks
from loadtest.models.suite import NS_PER_MS

REPO_ROOT = Path(__file__).resolve().parent.parent

# initializer element counts (learned parameters) of the default build
PARAMETERS = {
    "tiny": 16 * 64 + 64 + 64 * 16 + 16,
    "resnet50": 25_530_472,  # torchvision's 25,557,032 less the BN γ/β folded into conv biases
    "bert_l4_h256": 11_105_282,
    "dlrm_small": 49_324_545,
    # the builders' parameter counts plus the float constants (anchor tables, thresholds)
    "retinanet_320": 37_094_764 + 76_834,
    "ssd_mobilenet": 6_807_167 + 7_670,
    "rnnt_h256": 4_840_541,
    "unet3d_64": 31_190_243,
}
NUMPY_DTYPES = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}
# The default build's models whose config describes their ONNX graph (the streaming decoder's
# describes its model.py's text interface: tests/test_decoder.py runs its graph).
ONNX_SERVED = tuple(name for name in DEFAULT_BUILD if SUITE[name].backend == "onnxruntime")
DECODER = "gpt_tiny_l2_d128"


@pytest.fixture(scope="session")
def suite_repository(built_repository: Path) -> tuple[Path, list[BuildResult]]:
    """The default suite built (once per session) into the shared repository."""
    return built_repository, build_repository(built_repository, DEFAULT_BUILD, seed=0)


def _feeds(config: mc.ModelConfig, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ranges = value_ranges(config)
    feeds = {}
    for tensor in config.input:
        shape = (batch, *tensor.dims)
        if tensor.data_type == mc.TYPE_FP32:
            feeds[tensor.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            low, high = ranges[tensor.name]
            feeds[tensor.name] = rng.integers(low, high, size=shape, dtype=np.int64)
    return feeds


# -- building and running --------------------------------------------------------------------


def test_default_build_is_the_suite_without_bert_large() -> None:
    assert DEFAULT_BUILD == (
        "tiny",
        "resnet50",
        "bert_l4_h256",
        "dlrm_small",
        "retinanet_320",
        "ssd_mobilenet",
        "rnnt_h256",
        "unet3d_64",
        "gpt_tiny_l2_d128",
    )
    for faithful in ("bert_large", "retinanet", "rnnt", "unet3d"):
        assert not SUITE[faithful].default_build


def test_default_suite_builds(suite_repository: tuple[Path, list[BuildResult]]) -> None:
    repository, results = suite_repository
    assert [r.name for r in results] == list(DEFAULT_BUILD)
    for result in results:
        assert result.path == repository / result.name / "1" / "model.onnx"
        assert result.path.stat().st_size == result.bytes
        assert (repository / result.name / "config.pbtxt").is_file()
        assert (repository / result.name / "1" / STAMP_FILE).is_file()
    assert check_repository(repository, DEFAULT_BUILD) == []


def test_only_the_decoder_is_served_by_its_own_model_py() -> None:
    assert set(DEFAULT_BUILD) - set(ONNX_SERVED) == {DECODER}
    assert {m.name for m in SUITE.values() if m.side_files is not None} == {DECODER}


@pytest.mark.parametrize("name", ONNX_SERVED)
def test_model_is_valid_and_runs(
    suite_repository: tuple[Path, list[BuildResult]], name: str
) -> None:
    repository, _ = suite_repository
    path = repository / name / "1" / "model.onnx"
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 17 and model.ir_version == 8
    learned = sum(  # float tensors with at least one axis; the rest are shape/scalar constants
        int(np.prod(t.dims))
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 1
    )
    assert learned == PARAMETERS[name]
    del model
    config = read_config(repository / name / "config.pbtxt")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = session.run([t.name for t in config.output], _feeds(config, batch=2))
    for tensor, value in zip(config.output, outputs, strict=True):
        assert value.shape == (2, *tensor.dims), tensor.name
        assert value.dtype == NUMPY_DTYPES[mc.DataType.Name(tensor.data_type)]
        assert np.isfinite(value).all(), tensor.name
        assert np.abs(value).max() < 1e3, f"{tensor.name} is astronomically large"


def test_resnet50_logits_vary_with_the_image(
    suite_repository: tuple[Path, list[BuildResult]],
) -> None:
    repository, _ = suite_repository
    session = ort.InferenceSession(
        str(repository / "resnet50" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    images = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (logits,) = session.run(["logits"], {"input": images})
    assert not np.allclose(logits[0], logits[1])
    assert 0.1 < float(logits.std()) < 100


def test_bert_attention_mask_matters(suite_repository: tuple[Path, list[BuildResult]]) -> None:
    repository, _ = suite_repository
    session = ort.InferenceSession(
        str(repository / "bert_l4_h256" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    feeds = _feeds(read_config(repository / "bert_l4_h256" / "config.pbtxt"), batch=1)
    feeds["attention_mask"][:] = 1
    full = session.run(["start_logits"], feeds)[0]
    feeds["attention_mask"][:, 200:] = 0
    masked = session.run(["start_logits"], feeds)[0]
    assert not np.allclose(full[:, :200], masked[:, :200])


def test_bert_large_shape_is_faithful() -> None:
    assert bert.BERT_LARGE.parameter_count == 334_094_338  # BERT-large (335 M) less the pooler
    # the same generator at a reduced shape builds, checks and has the formula's parameter count
    shape = bert.BertShape(layers=2, hidden=32, heads=4, ffn=64)
    model = bert.build(0, shape, "bert_test")  # asserts its own parameter count
    onnx.checker.check_model(model)
    signature = onnx_signature(model)
    assert signature["input_ids"] == ("TYPE_INT64", (-1, 384))
    assert signature["start_logits"] == ("TYPE_FP32", (-1, 384))


def test_dlrm_tables_match_the_declared_index_range(
    suite_repository: tuple[Path, list[BuildResult]],
) -> None:
    repository, _ = suite_repository
    config = read_config(repository / "dlrm_small" / "config.pbtxt")
    model = onnx.load(str(repository / "dlrm_small" / "1" / "model.onnx"))
    tables = [t for t in model.graph.initializer if t.name.startswith("embedding_")]
    assert len(tables) == 26
    assert {tuple(t.dims) for t in tables} == {(dlrm.DLRM_SMALL.rows, 128)}
    assert value_ranges(config)["sparse_features"] == (0, dlrm.DLRM_SMALL.rows)
    # the last valid index works, the first invalid one is rejected by the model
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _feeds(config, batch=1)
    feeds["sparse_features"][:] = dlrm.DLRM_SMALL.rows - 1
    session.run(None, feeds)
    feeds["sparse_features"][:] = dlrm.DLRM_SMALL.rows
    with pytest.raises(Exception, match=r"(?i)indices|out of bounds"):
        session.run(None, feeds)


def test_tiny_is_committed_small_and_current() -> None:
    committed = SOURCE_REPOSITORY / "tiny" / "1" / "model.onnx"
    assert committed.stat().st_size < 50_000
    assert SUITE["tiny"].generate(0).SerializeToString() == committed.read_bytes()
    assert check_repository(SOURCE_REPOSITORY, ["tiny"]) == []


# -- determinism and up-to-date skipping -----------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = build_repository(tmp_path / "a", ["tiny"], seed=7)[0]
    second = build_repository(tmp_path / "b", ["tiny"], seed=7)[0]
    other = build_repository(tmp_path / "c", ["tiny"], seed=8)[0]
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.path.read_bytes() != other.path.read_bytes()
    assert (tmp_path / "a/tiny/config.pbtxt").read_text() == (
        tmp_path / "c/tiny/config.pbtxt"
    ).read_text()


def test_bytes_do_not_depend_on_the_process(tmp_path: Path) -> None:
    """A fresh interpreter with another hash seed writes the same bytes (no set/dict-order luck)."""
    build_repository(tmp_path / "here", ["tiny"], seed=3)
    code = (
        "import sys; from pathlib import Path; from loadtest.models import build_repository; "
        "build_repository(Path(sys.argv[1]), ['tiny'], seed=3)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "there")], check=True, env=env)
    here = (tmp_path / "here/tiny/1/model.onnx").read_bytes()
    assert here == (tmp_path / "there/tiny/1/model.onnx").read_bytes()


@pytest.mark.parametrize(
    "generate",
    [
        lambda seed: bert.build(seed, bert.BertShape(layers=1, hidden=16, heads=2, ffn=32), "b"),
        lambda seed: dlrm.build(seed, dlrm.DlrmShape(rows=50, cross_rank=8), "d"),
    ],
    ids=["bert", "dlrm"],
)
def test_generators_are_deterministic(generate) -> None:  # type: ignore[no-untyped-def]
    model = generate(0)
    assert model.SerializeToString() == generate(0).SerializeToString()
    assert model.SerializeToString() != generate(1).SerializeToString()
    # the streamed serialization the build writes is protobuf's own, byte for byte
    assert b"".join(serialized_chunks(model)) == model.SerializeToString()


def test_scan_reads_the_graph_without_the_weights(tmp_path: Path) -> None:
    model = dlrm.build(0, dlrm.DlrmShape(rows=50, cross_rank=8), "d")
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    skeleton = scan_model(str(path))
    for tensor in model.graph.initializer:
        tensor.ClearField("raw_data")
    assert skeleton.SerializeToString() == model.SerializeToString()
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ScanError, match="truncated"):
        scan_model(str(path))


def test_up_to_date_models_are_skipped(tmp_path: Path) -> None:
    messages: list[str] = []
    assert not build_repository(tmp_path, ["tiny"], progress=messages.append)[0].skipped
    again = build_repository(tmp_path, ["tiny"], progress=messages.append)[0]
    assert again.skipped and again.seconds == 0.0 and again.bytes > 0
    assert any("up to date" in m for m in messages)
    assert not build_repository(tmp_path, ["tiny"], force=True)[0].skipped
    assert not build_repository(tmp_path, ["tiny"], seed=1)[0].skipped  # another seed: rebuilt
    assert build_repository(tmp_path, ["tiny"], seed=1)[0].skipped


def test_a_damaged_model_is_detected_and_rebuilt(tmp_path: Path) -> None:
    build_repository(tmp_path, ["tiny"])
    path = tmp_path / "tiny" / "1" / "model.onnx"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    problems = check_repository(tmp_path)
    assert len(problems) == 1 and "tiny" in problems[0] and "stamp" in problems[0]
    assert not build_repository(tmp_path, ["tiny"])[0].skipped
    assert path.read_bytes() == good
    assert check_repository(tmp_path) == []


# -- configs ----------------------------------------------------------------------------------


# Models written by hand rather than generated from the suite: the decoupled Python-backend
# known-answer model (model_repository/llm_known, docs/STREAMING.md) has no ONNX graph.
HAND_WRITTEN = {"llm_known"}


def _generated_configs() -> list[Path]:
    """The committed configs that write_configs makes (every model of the suite)."""
    return [
        p
        for p in SOURCE_REPOSITORY.rglob("*.pbtxt")
        if p.relative_to(SOURCE_REPOSITORY).parts[0] not in HAND_WRITTEN
    ]


def test_hand_written_models_are_not_in_the_generated_suite() -> None:
    assert all((SOURCE_REPOSITORY / name / "config.pbtxt").is_file() for name in HAND_WRITTEN)
    assert not HAND_WRITTEN & set(SUITE)


def test_committed_configs_are_the_generated_ones(tmp_path: Path) -> None:
    write_configs(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.pbtxt"))
    committed = sorted(p.relative_to(SOURCE_REPOSITORY) for p in _generated_configs())
    assert committed == generated
    for relative in generated:
        assert (SOURCE_REPOSITORY / relative).read_text() == (tmp_path / relative).read_text(), (
            f"{relative} is stale: run write_configs(SOURCE_REPOSITORY)"
        )


def test_every_committed_config_parses_and_matches_its_onnx(
    suite_repository: tuple[Path, list[BuildResult]],
) -> None:
    repository, _ = suite_repository
    configs = sorted(_generated_configs())
    assert len(configs) == 24  # config.pbtxt x 13, configs/gpu.pbtxt x 11
    unbuilt: dict[str, onnx.ModelProto] = {  # faithful graphs: generated, not written
        "retinanet": retinanet.build(0),
        "unet3d": unet3d.build(0),
    }
    for path in configs:
        name = path.relative_to(SOURCE_REPOSITORY).parts[0]
        config = read_config(path)
        if name == DECODER:  # model.py's interface, not the graph's tensors (test_decoder.py)
            assert config.backend == "python" and config.model_transaction_policy.decoupled
            assert check_repository(repository, [name]) == []
            continue
        assert config.name == name and config.backend == "onnxruntime"
        assert config.max_batch_size > 0 and config.dynamic_batching.max_queue_delay_microseconds
        if name in unbuilt:
            assert compare_io(config, unbuilt[name], name) == [], path
            continue
        same_tensors = {"bert_large": "bert_l4_h256", "rnnt": "rnnt_h256"}
        built = same_tensors.get(name, name)
        model = onnx.load(str(repository / built / "1" / "model.onnx"), load_external_data=False)
        assert compare_io(config, model, name) == [], path
        # every integer input states its value range
        ranges = value_ranges(config)
        for tensor in config.input:
            assert (tensor.data_type == mc.TYPE_INT64) == (tensor.name in ranges), tensor.name


def test_cpu_and_gpu_configs() -> None:
    for name, model in SUITE.items():
        cpu = model_config(model)
        assert [g.kind for g in cpu.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        assert {"intra_op_thread_count", "inter_op_thread_count"} <= set(cpu.parameters)
        files = config_files(model)
        assert ("configs/gpu.pbtxt" in files) == (name not in {"tiny", DECODER})
        if name in {"tiny", DECODER}:
            continue
        gpu = model_config(model, gpu=True)
        assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        (accelerator,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "tensorrt"
        assert accelerator.parameters["precision_mode"] == "FP16"
        assert list(gpu.input) == list(cpu.input) and list(gpu.output) == list(cpu.output)


def test_suite_latency_bounds() -> None:
    bounds = {
        name: None if model.target_latency_ns is None else model.target_latency_ns // NS_PER_MS
        for name, model in SUITE.items()
    }
    assert bounds == {
        "tiny": 10,  # ours
        "resnet50": 15,
        "bert_l4_h256": 130,
        "bert_large": 130,
        "dlrm_small": 60,
        "retinanet": 100,
        "retinanet_320": 100,
        "ssd_mobilenet": 10,  # MLPerf v0.5
        "rnnt": 1000,
        "rnnt_h256": 1000,
        "unet3d": None,  # Offline and SingleStream only
        "unet3d_64": None,
        DECODER: None,  # an LLM: p99 TTFT and TPOT (--mlperf-model), no one end-to-end bound
    }
    assert all(SUITE[name].no_server for name, bound in bounds.items() if bound is None)
    assert {model.percentile for model in SUITE.values()} == {0.99}
    assert SUITE["tiny"].latency_source == "loadtest"
    assert DEFAULT_SERVER_MODEL in SUITE


# -- errors -----------------------------------------------------------------------------------


def test_unknown_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelBuildError, match=r"unknown model 'resnet51'.*resnet50"):
        build_repository(tmp_path, ["resnet51"])
    assert not any(tmp_path.iterdir())


def test_repository_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "repo"
    file.write_text("")
    with pytest.raises(ModelBuildError, match="not a directory"):
        build_repository(file, ["tiny"])
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "tiny").write_text("")  # a file where the model directory should be
    with pytest.raises(ModelBuildError, match="tiny: cannot write"):
        build_repository(blocked, ["tiny"])
    assert check_repository(file) == [
        f"model repository {file} does not exist or is not a directory"
    ]


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Path:
    shutil.copytree(SOURCE_REPOSITORY / "tiny", tmp_path / "tiny")
    assert check_repository(tmp_path) == []
    return tmp_path


def test_corrupt_model_file_is_reported(tiny_copy: Path) -> None:
    (tiny_copy / "tiny" / "1" / STAMP_FILE).unlink()  # no stamp: the parse must catch it
    path = tiny_copy / "tiny" / "1" / "model.onnx"
    good = path.read_bytes()
    path.write_bytes(b"\x08\x07garbage" * 100)
    (problem,) = check_repository(tiny_copy)
    assert problem.startswith("tiny: 1/model.onnx is not a readable ONNX model")
    path.write_bytes(good[:-10])
    (problem,) = check_repository(tiny_copy)
    assert problem.startswith("tiny: 1/model.onnx is not a readable ONNX model (corrupt?)")


def test_missing_model_file_is_reported(tiny_copy: Path) -> None:
    (tiny_copy / "tiny" / "1" / "model.onnx").unlink()
    (problem,) = check_repository(tiny_copy)
    assert "tiny: 1/model.onnx is missing" in problem and "loadtest models build" in problem


def test_config_that_disagrees_with_the_model_is_reported(tiny_copy: Path) -> None:
    path = tiny_copy / "tiny" / "config.pbtxt"
    config = read_config(path)
    config.input[0].dims[0] = 17
    config.output[0].data_type = mc.TYPE_FP16
    path.write_text(format_config(config))
    problems = check_repository(tiny_copy)
    assert any("'INPUT0' has shape [-1, 16] in ONNX" in p for p in problems)
    assert any("'OUTPUT0' is TYPE_FP32 in ONNX, TYPE_FP16" in p for p in problems)


def test_malformed_configs_are_reported(tiny_copy: Path) -> None:
    (tiny_copy / "tiny" / "config.pbtxt").write_text('name: "tiny"\nmax_batch_size: lots\n')
    (problem,) = check_repository(tiny_copy)
    assert problem.startswith("tiny: config.pbtxt:") and "does not parse" in problem
    (tiny_copy / "tiny" / "config.pbtxt").write_text(format_config(model_config(SUITE["tiny"])))
    bad = model_config(SUITE["tiny"])
    bad.parameters["loadtest.range.INPUT0"].string_value = "5"
    (tiny_copy / "tiny" / "configs").mkdir()
    (tiny_copy / "tiny" / "configs" / "odd.pbtxt").write_text(format_config(bad))
    (problem,) = check_repository(tiny_copy)
    assert "configs/odd.pbtxt" in problem and "is not 'low,high'" in problem
    assert check_repository(tiny_copy, ["nothing"]) == [
        f"nothing: no such model directory {tiny_copy / 'nothing'}"
    ]


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_build_and_list(tmp_path: Path) -> None:
    from loadtest.commands.models import app

    runner = CliRunner()
    result = runner.invoke(app, ["build", "--repository", str(tmp_path), "-m", "tiny"])
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and (tmp_path / "tiny/1/model.onnx").is_file()
    result = runner.invoke(app, ["list", "--repository", str(tmp_path)])
    assert result.exit_code == 0 and "bert_large" in result.output
    result = runner.invoke(app, ["build", "--repository", str(tmp_path), "-m", "nope"])
    assert isinstance(result.exception, ModelBuildError)


def test_python_m_loadtest_models_fails_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.models",
            "build",
            "--repository",
            str(tmp_path),
            "-m",
            "x",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: unknown model 'x': the suite has tiny, resnet50, bert_l4_h256, bert_large, "
        "dlrm_small, retinanet, retinanet_320, ssd_mobilenet, rnnt, rnnt_h256, unet3d, unet3d_64, "
        "gpt_tiny_l2_d128"
    ]


def test_default_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_repository() == SOURCE_REPOSITORY  # no ./model_repository here
    (tmp_path / "model_repository").mkdir()
    assert default_repository() == tmp_path / "model_repository"
    assert SOURCE_REPOSITORY == REPO_ROOT / "model_repository"
