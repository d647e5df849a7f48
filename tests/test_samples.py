"""The sample library follows the model's metadata, declared value ranges and user data."""

import numpy as np
import pytest

from loadtest.core.target import ModelSpec, TensorSpec
from loadtest.engine.samples import load_samples, random_samples
from loadtest.errors import SettingsError

BERT_LIKE = ModelSpec(
    name="bert_like",
    version="1",
    max_batch_size=8,
    inputs=(
        TensorSpec("input_ids", "INT64", (384,)),
        TensorSpec("attention_mask", "INT64", (-1,)),
        TensorSpec("features", "FP32", (3, -1)),
    ),
    outputs=(TensorSpec("out", "FP32", (384,)),),
    parameters={"loadtest.range.input_ids": "100,30522", "loadtest.range.attention_mask": "1,2"},
)


def test_shapes_dtypes_ranges_and_batch_dimension():
    samples = random_samples(BERT_LIKE, 5, seed=3, shapes={"attention_mask": (384,)})
    assert len(samples) == 5
    ids = samples[0]["input_ids"]
    assert ids.shape == (1, 384) and ids.dtype == np.int64
    assert ids.min() >= 100 and ids.max() < 30522
    assert np.all(samples[0]["attention_mask"] == 1)
    assert samples[0]["features"].shape == (1, 3, 1)  # dynamic dims default to 1
    assert samples[0]["features"].dtype == np.float32


def test_seeded_and_batched():
    a = random_samples(BERT_LIKE, 2, seed=1, batch_size=4)
    b = random_samples(BERT_LIKE, 2, seed=1, batch_size=4)
    assert a[1]["input_ids"].shape == (4, 384)
    assert np.array_equal(a[1]["features"], b[1]["features"])
    with pytest.raises(SettingsError, match="max_batch_size"):
        random_samples(BERT_LIKE, 1, batch_size=9)


def test_bad_shapes_are_settings_errors():
    with pytest.raises(SettingsError, match="does not fit"):
        random_samples(BERT_LIKE, 1, shapes={"input_ids": (128,)})
    with pytest.raises(SettingsError, match="unknown input"):
        random_samples(BERT_LIKE, 1, shapes={"nope": (1,)})


def test_user_data_npz(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(
        path,
        input_ids=np.ones((3, 384), np.int64),
        attention_mask=np.ones((3, 384), np.int64),
        features=np.zeros((3, 3, 2), np.float32),
    )
    samples = load_samples(path, BERT_LIKE)
    assert len(samples) == 3 and samples[2]["features"].shape == (1, 3, 2)
    np.savez(tmp_path / "short.npz", input_ids=np.ones((3, 384), np.int64))
    with pytest.raises(SettingsError, match="lacks input"):
        load_samples(tmp_path / "short.npz", BERT_LIKE)
    np.savez(
        tmp_path / "dtype.npz",
        input_ids=np.ones((3, 384), np.float32),
        attention_mask=np.ones((3, 384), np.int64),
        features=np.zeros((3, 3, 2), np.float32),
    )
    with pytest.raises(SettingsError, match="dtype"):
        load_samples(tmp_path / "dtype.npz", BERT_LIKE)
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(SettingsError, match=r"not an \.npz archive") as caught:
        load_samples(tmp_path / "junk.npz", BERT_LIKE)
    assert "pickled" not in str(caught.value)


def test_user_data_that_is_not_an_npz_of_sample_arrays(tmp_path):
    np.save(tmp_path / "one.npy", np.ones((3, 384), np.int64))  # one .npy for 3 inputs
    with pytest.raises(SettingsError, match=r"one \.npy file is for a model with one input"):
        load_samples(tmp_path / "one.npy", BERT_LIKE)
    np.savez(
        tmp_path / "scalar.npz",
        input_ids=np.array(7, np.int64),
        attention_mask=np.ones((3, 384), np.int64),
        features=np.zeros((3, 3, 2), np.float32),
    )
    with pytest.raises(SettingsError, match="0-d array"):
        load_samples(tmp_path / "scalar.npz", BERT_LIKE)
    with pytest.raises(SettingsError, match="no such file"):
        load_samples(tmp_path / "missing.npz", BERT_LIKE)
