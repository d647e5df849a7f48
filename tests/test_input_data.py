"""--input-data in every form gives the same checked samples as the equivalent .npz; bad files
are one line naming the file and the input; pictures get the model's shape, dtype and preset."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loadtest.core.target import ModelSpec, TensorSpec
from loadtest.engine.inputs.images import PRESETS
from loadtest.engine.samples import load_samples
from loadtest.errors import SettingsError
from loadtest.models.suite import SUITE

TWO_INPUTS = ModelSpec(
    name="two",
    version="1",
    max_batch_size=8,
    inputs=(TensorSpec("ids", "INT32", (4,)), TensorSpec("features", "FP32", (2, -1))),
    outputs=(TensorSpec("out", "FP32", (4,)),),
)
IDS = np.arange(12, dtype=np.int32).reshape(3, 4)
FEATURES = (np.arange(18, dtype=np.float32).reshape(3, 2, 3) - 4.5) / 3


def _image_model(shape: tuple[int, ...], datatype: str = "FP32", preset: str | None = None):
    parameters = {"loadtest.image.pixels": preset} if preset else {}
    return ModelSpec(
        name="img",
        version="1",
        max_batch_size=4,
        inputs=(TensorSpec("pixels", datatype, shape),),
        outputs=(TensorSpec("out", "FP32", (10,)),),
        parameters=parameters,
    )


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            assert x[name].dtype == y[name].dtype and np.array_equal(x[name], y[name]), name


@pytest.fixture
def reference(tmp_path: Path):
    path = tmp_path / "ref.npz"
    np.savez(path, ids=IDS, features=FEATURES)
    return load_samples(path, TWO_INPUTS)


def _write_json(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"data": entries}))
    return path


def test_every_form_round_trips_to_the_npz_samples(tmp_path: Path, reference) -> None:
    assert reference[1]["features"].shape == (1, 2, 3)  # batch dim added
    stacked = tmp_path / "stacked"
    stacked.mkdir()
    np.save(stacked / "ids.npy", IDS)
    np.save(stacked / "features.npy", FEATURES)
    _same(load_samples(stacked, TWO_INPUTS), reference)

    per_sample = tmp_path / "per_sample"
    for i in range(3):
        (per_sample / f"s{i}").mkdir(parents=True)
        np.save(per_sample / f"s{i}" / "ids.npy", IDS[i])
        np.save(per_sample / f"s{i}" / "features.npy", FEATURES[i])
    _same(load_samples(per_sample, TWO_INPUTS), reference)

    flat = [{"ids": IDS[i].tolist(), "features": FEATURES[i].ravel().tolist()} for i in range(3)]
    _same(
        load_samples(_write_json(tmp_path / "flat.json", flat), TWO_INPUTS, {"features": (2, 3)}),
        reference,
    )

    content = [
        {
            "ids": {"content": IDS[i].tolist()},
            "features": {"content": FEATURES[i].tolist(), "shape": [2, 3]},
        }
        for i in range(3)
    ]
    _same(load_samples(_write_json(tmp_path / "content.json", content), TWO_INPUTS), reference)

    def b64(a: np.ndarray) -> str:
        return base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode()

    encoded = [
        {
            "ids": {"b64": b64(IDS[i])},
            "features": {"content": {"b64": b64(FEATURES[i])}, "shape": [2, 3]},
        }
        for i in range(3)
    ]
    _same(load_samples(_write_json(tmp_path / "b64.json", encoded), TWO_INPUTS), reference)
    streams = tmp_path / "streams.json"  # perf_analyzer's per-sequence streams, one after another
    streams.write_text(
        json.dumps({"data": [encoded[:2], encoded[2:]], "validation_data": [[], []]})
    )
    _same(load_samples(streams, TWO_INPUTS), reference)


def test_perf_analyzer_raw_directory_and_single_npy(tmp_path: Path, reference) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ids").write_bytes(IDS[0].astype("<i4").tobytes())
    (raw / "features").write_bytes(FEATURES[0].astype("<f4").tobytes())
    (raw / "out").write_bytes(b"expected output: skipped")
    _same(load_samples(raw, TWO_INPUTS, {"features": (2, 3)}), reference[:1])
    with pytest.raises(SettingsError, match="dynamic shape"):
        load_samples(raw, TWO_INPUTS)
    one = _image_model((4,))
    np.save(tmp_path / "anything.npy", IDS.astype(np.float32))
    samples = load_samples(tmp_path / "anything.npy", one)
    assert len(samples) == 3 and samples[2]["pixels"].shape == (1, 4)


def test_batch_size_stacks_consecutive_user_samples(tmp_path: Path, reference) -> None:
    path = tmp_path / "ref.npz"
    batched = load_samples(path, TWO_INPUTS, batch_size=2)
    assert len(batched) == 3 and batched[2]["ids"].shape == (2, 4)
    assert np.array_equal(batched[2]["ids"], IDS[[2, 0]])  # wraps around
    with pytest.raises(SettingsError, match="max_batch_size"):
        load_samples(path, TWO_INPUTS, batch_size=9)


def _png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    Image.new("RGB", size, rgb).save(path)
    return path


def test_pictures_are_resized_and_normalised_per_the_models_preset(tmp_path: Path) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    _png(pictures / "a.png", (200, 100, 50))
    _png(pictures / "b.jpg", (10, 20, 30), size=(12, 50))
    chw = _image_model((3, 16, 16), preset="mlperf-resnet50")
    samples = load_samples(pictures, chw)
    assert len(samples) == 2
    a = samples[0]["pixels"]
    assert a.shape == (1, 3, 16, 16) and a.dtype == np.float32
    # a flat colour survives any resize: the values are exactly the preset's normalisation
    assert np.allclose(a[0, :, 0, 0], np.array([200, 100, 50]) - np.array([123.68, 116.78, 103.94]))
    assert np.ptp(a[0], axis=(1, 2)).max() < 1e-4

    hwc = _image_model((16, 16, 3), preset="mlperf-ssd-mobilenet")
    b = load_samples(pictures / "a.png", hwc)[0]["pixels"]
    assert b.shape == (1, 16, 16, 3)
    assert np.allclose(b[0, 5, 5], (np.array([200, 100, 50]) - 127.5) / 127.5)
    unit = load_samples(pictures / "a.png", _image_model((3, 8, 8)))[0]["pixels"]  # the default
    assert np.allclose(unit[0, :, 3, 3], np.array([200, 100, 50]) / 255)
    raw = load_samples(pictures / "a.png", _image_model((8, 8, 3), "UINT8"))[0]["pixels"]
    assert raw.dtype == np.uint8 and raw[0, 0, 0].tolist() == [200, 100, 50]
    gray = load_samples(pictures / "a.png", _image_model((1, 8, 8)))[0]["pixels"]
    assert gray.shape == (1, 1, 8, 8)


def test_the_suite_image_models_name_known_presets() -> None:
    presets = {t.image_preset for m in SUITE.values() for t in m.inputs if t.image_preset}
    assert presets <= set(PRESETS)
    assert SUITE["resnet50"].inputs[0].image_preset == "mlperf-resnet50"


def _one_line(path: Path, model: ModelSpec, *needles: str, shapes=None) -> None:
    with pytest.raises(SettingsError) as caught:
        load_samples(path, model, shapes)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message


def test_bad_inputs_are_one_line_naming_file_and_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "shape.npz", ids=np.zeros((3, 5), np.int32), features=FEATURES)
    _one_line(tmp_path / "shape.npz", TWO_INPUTS, "input ids", "shape [5]")
    np.savez(tmp_path / "dtype.npz", ids=IDS.astype(np.int64), features=FEATURES)
    _one_line(tmp_path / "dtype.npz", TWO_INPUTS, "input ids", "dtype int64")
    nan = FEATURES.copy()
    nan[1, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", ids=IDS, features=nan)
    _one_line(tmp_path / "nan.npz", TWO_INPUTS, "input features, sample 1", "non-finite")
    extra = tmp_path / "extra"
    extra.mkdir()
    for name, array in (("ids", IDS), ("features", FEATURES), ("idz", IDS)):
        np.save(extra / f"{name}.npy", array)
    _one_line(extra, TWO_INPUTS, "unknown input(s) idz")
    (extra / "ids.npy").unlink()
    _one_line(extra, TWO_INPUTS, "lacks input(s): ids")

    def entry(**tensors: object) -> dict:
        return {"ids": [1, 2, 3, 4], "features": {"content": [0.5] * 6, "shape": [2, 3]}, **tensors}

    cases = {
        "inf": (entry(features={"content": [1e999] * 6, "shape": [2, 3]}), "non-finite"),
        "NaN": (
            '{"data": [{"ids": [1,2,3,4], "features": {"content": [NaN,0,0,0,0,0], '
            '"shape": [2,3]}}]}',
            "non-finite",
        ),
        "count": (entry(ids=[1, 2, 3]), "3 values do not fill shape [4]"),
        "float": (entry(ids=[1.5, 2, 3, 4]), "non-integer"),
        "b64": (entry(ids={"b64": "!!"}), "bad base64"),
        "b64size": (entry(ids={"b64": base64.b64encode(b"12345").decode()}), "whole number"),
        "fixed": (entry(ids={"content": [1, 2, 3, 4], "shape": [2, 2]}), "shape [2, 2]"),
        "unknown": (entry(idz=[1]), "unknown input(s) idz"),
        "nodata": ({"inputs": []}, '{"data"'),
    }
    for name, (document, needle) in cases.items():
        path = tmp_path / f"{name}.json"
        if isinstance(document, str):
            path.write_text(document)
        else:
            path.write_text(json.dumps(document if "inputs" in document else {"data": [document]}))
        _one_line(path, TWO_INPUTS, needle)
    missing = _write_json(tmp_path / "missing.json", [{"ids": [1, 2, 3, 4]}])
    _one_line(missing, TWO_INPUTS, '"data"[0] lacks input(s): features')


def test_bad_pictures_and_mixed_directories(tmp_path: Path) -> None:
    picture = _png(tmp_path / "a.png", (1, 2, 3))
    _one_line(picture, TWO_INPUTS, "one image input", "ids [4], features [2, -1]")
    _one_line(picture, _image_model((3, -1, -1)), "--shape pixels")
    samples = load_samples(picture, _image_model((3, -1, -1)), {"pixels": (3, 5, 7)})
    assert samples[0]["pixels"].shape == (1, 3, 5, 7)
    _one_line(picture, _image_model((3, 8, 8), preset="imagenet"), "names no image preset")
    _one_line(picture, _image_model((3, 8, 8), "UINT8", preset="unit"), "fractional")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SettingsError, match="cannot decode the picture") as caught:
        load_samples(broken, _image_model((3, 8, 8)))
    assert "x.jpg" in str(caught.value)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _png(mixed / "a.png", (1, 2, 3))
    np.save(mixed / "pixels.npy", np.zeros((3, 8, 8), np.float32))
    _one_line(mixed, _image_model((3, 8, 8)), "mixes npy and pictures")
    _one_line(tmp_path / "nothing.npz", TWO_INPUTS, "no such file or directory")
    (tmp_path / "notes.txt").write_text("hello")
    _one_line(tmp_path / "notes.txt", TWO_INPUTS, "not an .npz archive")


def test_cli_runs_on_perf_analyzer_json_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """End to end against the fake target (input INPUT0, FP32 [4])."""
    data = _write_json(
        tmp_path / "inputs.json",
        [{"INPUT0": [1.0, 2.0, 3.0, float(i)]} for i in range(4)]
        + [{"INPUT0": {"b64": base64.b64encode(np.ones(4, "<f4").tobytes()).decode()}}],
    )

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        out = tmp_path / path.stem
        return subprocess.run(
            [sys.executable, "-m", "loadtest.cli", "server", "--url",
             "fake://?servers=4&law=constant&service_ms=1", "--qps", "50", "--duration", "1",
             "--min-queries", "10", "--target-latency", "100", "--input-data", str(path),
             "--output", str(out)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "160"},
        )  # fmt: skip

    # 1 s at 50 QPS: too few queries for early stopping; a busy shared machine may fall behind
    # (5). Any measured verdict will do: this is about every query carrying the user's data.
    result = run(data)
    assert result.returncode in (0, 3, 5), result.stdout + result.stderr
    summary = json.loads((tmp_path / "inputs" / "result.json").read_text())["summary"]
    assert summary["scheduled"] == summary["completed_ok"] > 10  # every query sent the user's data
    bad = _write_json(tmp_path / "bad.json", [{"INPUT0": [1.0, 2.0]}])
    result = run(bad)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr  # the rest of stderr is the run's header line
    line = errors[0]
    assert str(bad) in line and "input INPUT0" in line and "do not fill shape [4]" in line
