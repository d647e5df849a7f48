"""The MLPerf suite models added after the first four: retinanet, ssd_mobilenet, rnnt, unet3d.

Each scaled (default-build) variant is built once per session into the shared repository; what
a model computes is checked in-process (detections well formed, padding ignored, batches
independent), generators are deterministic at reduced shapes (cheap), FLOPs are counted from the
graph, and one embedded Triton serves all four with outputs bit-equal to onnxruntime in-process
(the embedded backend runs the same onnxruntime). unet3d refuses the Server scenario in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from loadtest.errors import SettingsError
from loadtest.models import SUITE, build_repository, retinanet, rnnt, ssd_mobilenet, unet3d
from loadtest.models.build import read_stamp
from loadtest.models.flops import count_flops

NEW_MODELS = ("retinanet_320", "ssd_mobilenet", "rnnt_h256", "unet3d_64")
SMALL_RNNT = rnnt.RnntShape(
    encoder_hidden=16, frames=20, prediction_hidden=8, joint_hidden=8, max_symbols_per_step=3
)


@pytest.fixture(scope="session")
def new_models(built_repository: Path) -> Path:
    build_repository(built_repository, NEW_MODELS)
    return built_repository


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(name: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for tensor in SUITE[name].inputs:
        shape = (batch, *tensor.dims)
        if tensor.value_range is None:
            feeds[tensor.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feeds[tensor.name] = rng.integers(*tensor.value_range, size=shape, dtype=np.int64)
    return feeds


# -- what the models compute ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "k", "image"),
    [("ssd_mobilenet", 100, 1.0), ("retinanet_320", 300, 320.0)],
)
def test_detections_are_well_formed(new_models: Path, name: str, k: int, image: float) -> None:
    session = _session(new_models / name / "1" / "model.onnx")
    outputs = [t.name for t in SUITE[name].outputs]
    boxes, scores, labels, count = session.run(outputs, _feeds(name, batch=1))
    assert boxes.shape == (1, k, 4) and scores.shape == (1, k) and labels.shape == (1, k)
    n = int(count[0, 0])
    assert 0 < n <= k
    assert np.all(np.diff(scores[0, :n]) <= 0), "detections are sorted by score"
    assert np.all((boxes[0, :n] >= 0) & (boxes[0, :n] <= image))
    assert np.all(labels[0, :n] >= 0)
    assert np.all(scores[0, n:] == 0) and np.all(boxes[0, n:] == 0) and np.all(labels[0, n:] == -1)


def test_anchor_tables_have_the_reference_sizes() -> None:
    assert ssd_mobilenet.anchors().shape == (1917, 4)  # TF's SSD-MobileNet-v1 on 300x300
    assert retinanet.level_sizes(800) == [100, 50, 25, 13, 7]
    assert retinanet.level_anchors(800, 100, 32).shape == (100 * 100 * 9, 4)


def test_rnnt_ignores_padding_and_decodes_each_utterance_alone(new_models: Path) -> None:
    session = _session(new_models / "rnnt_h256" / "1" / "model.onnx")
    feeds = _feeds("rnnt_h256", batch=2, seed=3)
    feeds["feature_length"][:] = [[rnnt.RNNT_H256.frames], [120]]
    transcript, length = session.run(None, feeds)
    padded = {k: v.copy() for k, v in feeds.items()}
    padded["features"][1, 120:] = 5.0  # frames past the length must not matter
    assert np.array_equal(session.run(None, padded)[0], transcript)
    alone = session.run(None, {k: v[1:] for k, v in feeds.items()})
    assert np.array_equal(alone[0], transcript[1:]) and np.array_equal(alone[1], length[1:])
    for row, n in zip(transcript, length[:, 0], strict=True):
        assert 0 <= n <= rnnt.RNNT_H256.frames
        assert np.all(row[:n] < rnnt.RNNT_H256.blank) and np.all(row[n:] == rnnt.RNNT_H256.blank)
    assert length[0, 0] > 0, "random audio decodes to some labels"


def test_unet3d_segments_every_voxel(new_models: Path) -> None:
    session = _session(new_models / "unet3d_64" / "1" / "model.onnx")
    (logits,) = session.run(None, _feeds("unet3d_64", batch=1))
    assert logits.shape == (1, 3, 64, 64, 64) and np.isfinite(logits).all()
    assert len(np.unique(logits.argmax(axis=1))) > 1, "not one class everywhere"


# -- builds, FLOPs, listing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "generate",
    [
        lambda seed: retinanet.build(seed, image=64, name="r"),
        lambda seed: ssd_mobilenet.build(seed),
        lambda seed: rnnt.build(seed, SMALL_RNNT, "n"),
        lambda seed: unet3d.build(seed, patch=32, name="u"),
    ],
    ids=["retinanet", "ssd_mobilenet", "rnnt", "unet3d"],
)
def test_generators_are_deterministic(generate) -> None:  # type: ignore[no-untyped-def]
    model = generate(0)
    assert model.SerializeToString() == generate(0).SerializeToString()
    assert model.SerializeToString() != generate(1).SerializeToString()


def test_small_rnnt_runs_its_decode_loops() -> None:
    model = rnnt.build(0, SMALL_RNNT, "n")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    features = np.random.default_rng(0).standard_normal((3, 20, 240)).astype(np.float32)
    lengths = np.asarray([[20], [7], [1]], dtype=np.int64)
    transcript, count = session.run(None, {"features": features, "feature_length": lengths})
    assert transcript.shape == (3, 20) and count.shape == (3, 1)
    assert np.all(count <= 20)


def test_flops_are_counted_from_the_graph(new_models: Path) -> None:
    resnet = 2 * 4_089_184_256  # ResNet-50 v1.5's published 4.09 G multiply-adds
    assert count_flops(SUITE["resnet50"].generate(0)) == resnet
    # LSTM: 2 x steps x 4H x (in + H): the encoder of the small shape, by hand
    s = SMALL_RNNT
    h = s.encoder_hidden
    encoder = (
        2
        * 4
        * h
        * (s.frames * ((s.features + h) + (h + h)) + (s.frames // 2) * ((2 * h + h) + 2 * (h + h)))
    )
    step = 2 * 4 * s.prediction_hidden * 2 * s.prediction_hidden * 2 + 2 * (
        s.prediction_hidden * s.joint_hidden + s.joint_hidden * s.labels
    )
    joint_encoder = 2 * (s.frames // 2) * h * s.joint_hidden
    expected = encoder + joint_encoder + (s.frames // 2) * step
    assert count_flops(rnnt.build(0, SMALL_RNNT, "n")) == expected
    for name in NEW_MODELS:
        stamp = read_stamp(new_models / name / "1")
        assert stamp is not None and stamp["flops"] == SUITE[name].approx_flops, name
        assert isinstance(stamp["build_seconds"], float)


def test_models_list_shows_flops_build_time_and_no_server_bound(new_models: Path) -> None:
    from loadtest.commands.models import app

    result = CliRunner().invoke(
        app, ["list", "--repository", str(new_models)], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert "64.4 GFLOP" in result.output and "~402 GFLOP" in result.output
    assert "none (Offline, SingleStream only)" in result.output


def test_unet3d_has_no_server_scenario() -> None:
    from loadtest.commands.common import target_latency_ns

    with pytest.raises(
        SettingsError, match=r"unet3d_64 has no Server latency bound: MLPerf .*Offline"
    ):
        target_latency_ns("unet3d_64", None)
    assert target_latency_ns("unet3d_64", 5000.0) == 5_000_000_000  # the user's own bound
    assert target_latency_ns("rnnt", None) == 1_000_000_000


# -- served by the embedded Triton ----------------------------------------------------------------


@pytest.fixture(scope="module")
def suite_triton(new_models: Path) -> Iterator[object]:
    from loadtest.server.embedded import EmbeddedTriton

    with EmbeddedTriton(new_models, models=list(NEW_MODELS)) as server:
        yield server


@pytest.mark.triton
@pytest.mark.parametrize("name", NEW_MODELS)
def test_served_outputs_equal_onnxruntime(
    new_models: Path, suite_triton: object, name: str
) -> None:
    import tritonclient.http as http

    from loadtest.core.target import NUMPY_TO_TRITON

    client = http.InferenceServerClient(suite_triton.http_url, network_timeout=120)  # type: ignore[attr-defined]
    feeds = _feeds(name, batch=1, seed=7)
    inputs = []
    for key, value in feeds.items():
        tensor = http.InferInput(key, list(value.shape), NUMPY_TO_TRITON[value.dtype.name])
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    served = client.infer(name, inputs)
    outputs = [t.name for t in SUITE[name].outputs]
    reference = _session(new_models / name / "1" / "model.onnx").run(outputs, feeds)
    for output, expected in zip(outputs, reference, strict=True):
        assert np.array_equal(served.as_numpy(output), expected), output
