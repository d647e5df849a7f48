"""BYTES inputs (text prompts): the spec, the sample library, and every way a request carries them.

tritonclient's own encoder (`tritonclient.utils.serialize_byte_tensor`) is the independent
implementation of Triton's BYTES wire format: each element's 4-byte little-endian length, then its
bytes. The shared-memory layout (our `tensor_bytes`) must write exactly that, and the prepared
gRPC and HTTP requests of both targets must carry exactly that, against the stub server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor

from loadtest.core.target import (
    NUMPY_TO_TRITON,
    ModelSpec,
    TensorSpec,
    is_bytes_tensor,
    prompt_length,
)
from loadtest.engine.samples import (
    DEFAULT_TEXT_LENGTHS,
    load_samples,
    prompt_lengths,
    random_samples,
)
from loadtest.errors import SettingsError
from loadtest.stub.process import running_stub
from loadtest.targets.shared_memory import SystemRegions
from loadtest.targets.triton_common import tensor_bytes
from loadtest.targets.triton_grpc import TritonGrpcTarget
from loadtest.targets.triton_http import TritonHttpTarget

TEXT_MODEL = ModelSpec(
    name="text",
    version="1",
    max_batch_size=4,
    inputs=(TensorSpec("PROMPT", "BYTES", (1,)), TensorSpec("LENGTH", "INT32", (1,))),
    outputs=(TensorSpec("OUTPUT0", "FP32", (4,)),),
    parameters={"loadtest.range.PROMPT": "5,40"},
)

CONFIG = """name: "text"
max_batch_size: 0
input { name: "PROMPT" data_type: TYPE_STRING dims: 2 }
output { name: "OUTPUT0" data_type: TYPE_FP32 dims: 4 }
"""


def _reference(tensor: np.ndarray) -> bytes:
    serialized = serialize_byte_tensor(tensor)
    return bytes(serialized.item()) if serialized.size else b""


def test_bytes_is_a_triton_datatype_of_object_arrays():
    spec = TensorSpec("PROMPT", "BYTES", (1,))
    assert spec.numpy_dtype == np.dtype(object)
    assert NUMPY_TO_TRITON[np.dtype(object).name] == "BYTES"


def test_text_prompts_are_seeded_each_of_its_own_length():
    samples = random_samples(TEXT_MODEL, 50, seed=4, batch_size=2)
    again = random_samples(TEXT_MODEL, 50, seed=4, batch_size=2)
    prompt = samples[0]["PROMPT"]
    assert prompt.shape == (2, 1) and prompt.dtype == object and is_bytes_tensor(prompt)
    assert all(isinstance(element, bytes) for s in samples for element in s["PROMPT"].flat)
    lengths = [len(element) for s in samples for element in s["PROMPT"].flat]
    assert min(lengths) >= 5 and max(lengths) <= 40 and len(set(lengths)) > 10
    assert [s["PROMPT"].tolist() for s in samples] == [s["PROMPT"].tolist() for s in again]
    assert samples[0]["LENGTH"].dtype == np.int32  # numeric inputs beside it as before
    per_sample = prompt_lengths(samples)
    assert per_sample.tolist() == [prompt_length(s) for s in samples]
    assert per_sample[0] == len(prompt[0, 0]) + len(prompt[1, 0])
    text = b"".join(element for s in samples for element in s["PROMPT"].flat)
    assert set(text) <= set(b"abcdefghijklmnopqrstuvwxyz ")


def test_default_lengths_and_bad_ranges():
    plain = ModelSpec("t", "1", 0, (TensorSpec("P", "BYTES", (3,)),), ())
    lengths = [len(e) for s in random_samples(plain, 20, seed=1) for e in s["P"].flat]
    low, high = DEFAULT_TEXT_LENGTHS
    assert low <= min(lengths) and max(lengths) <= high
    assert prompt_length({"x": np.zeros(3, np.float32)}) == 0
    bad = ModelSpec("t", "1", 0, plain.inputs, (), parameters={"loadtest.range.P": "9,3"})
    with pytest.raises(SettingsError, match="shortest ≤ longest"):
        random_samples(bad, 1)


def test_input_data_for_a_bytes_input_is_refused_in_one_line(tmp_path: Path):
    path = tmp_path / "data.npz"
    np.savez(path, LENGTH=np.zeros((1, 1), np.int32))
    with pytest.raises(SettingsError, match="cannot fill BYTES input"):
        load_samples(path, TEXT_MODEL)


@pytest.mark.parametrize(
    "tensor",
    [
        np.array([b"hello", b"", b"\x00\xff"], dtype=object),
        np.array([[b"a", b"bc"], [b"def", b"ghij"]], dtype=object),
        np.array([["text", "über"]], dtype=object),  # str elements go as UTF-8
        np.array([b"xy", b"z"], dtype=np.bytes_),
        np.array([], dtype=object),
    ],
    ids=["bytes", "2-d", "str", "numpy-bytes", "empty"],
)
def test_tensor_bytes_is_tritonclients_encoding(tensor):
    assert tensor_bytes(tensor) == _reference(tensor)


def test_tensor_bytes_of_a_numeric_tensor_is_its_little_endian_data():
    tensor = np.arange(6, dtype=np.float32).reshape(2, 3).T  # not C-contiguous
    assert tensor_bytes(tensor) == np.ascontiguousarray(tensor).astype("<f4").tobytes()
    assert tensor_bytes(tensor.astype(">i4")) == tensor.astype("<i4").tobytes()


def test_shared_memory_layout_writes_bytes_inputs_as_triton_reads_them():
    samples = random_samples(TEXT_MODEL, 3, seed=2)
    regions = SystemRegions("bytes")
    try:
        regions.layout(samples, TEXT_MODEL)
        for k, sample in enumerate(samples):
            slot = regions.input_slots[k]["PROMPT"]
            written = bytes(
                regions._buffer(slot.region)[slot.offset : slot.offset + slot.byte_size]
            )
            assert written == _reference(sample["PROMPT"])
            number = regions.input_slots[k]["LENGTH"]
            assert number.byte_size == 4 and number.offset == slot.byte_size
    finally:
        asyncio.run(regions.release(None))


def test_shared_memory_refuses_a_bytes_output_in_one_line():
    model = ModelSpec("t", "1", 0, (TensorSpec("P", "BYTES", (1,)),), TEXT_MODEL.inputs[:1])
    regions = SystemRegions("out")
    try:
        with pytest.raises(Exception, match="output PROMPT is BYTES"):
            regions.layout(random_samples(model, 1), model)
    finally:
        asyncio.run(regions.release(None))


@pytest.fixture(scope="module")
def text_stub(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    (repository / "text").mkdir()
    (repository / "text" / "config.pbtxt").write_text(CONFIG)
    with running_stub("--repository", str(repository)) as stub:
        yield stub


async def _prepared(target):
    spec = await target.open()
    samples = random_samples(spec, 4, seed=9)
    await target.prepare(samples)
    errors = [await target.infer(k) for k in range(len(samples))]
    return spec, samples, errors


@pytest.mark.parametrize("client", ["wire", "grpcio"])
def test_grpc_requests_carry_bytes_inputs_in_tritons_format(text_stub, client):
    target = TritonGrpcTarget(text_stub.grpc_url, "text", load_client=client)

    async def main():
        try:
            return await _prepared(target), list(target._framed or target._wire)
        finally:
            await target.close()

    (spec, samples, errors), requests = asyncio.run(main())
    assert spec.inputs == (TensorSpec("PROMPT", "BYTES", (2,)),)
    assert errors == [None] * 4
    for sample, request in zip(samples, requests, strict=True):
        message = request[5:] if client == "wire" else request
        parsed = service_pb2.ModelInferRequest.FromString(message)
        assert parsed.inputs[0].datatype == "BYTES" and list(parsed.inputs[0].shape) == [2]
        assert parsed.raw_input_contents[0] == _reference(sample["PROMPT"])


def test_http_requests_carry_bytes_inputs_in_tritons_format(text_stub):
    target = TritonHttpTarget(text_stub.http_url, "text")

    async def main():
        try:
            return await _prepared(target), list(target._plain)
        finally:
            await target.close()

    (_, samples, errors), requests = asyncio.run(main())
    assert errors == [None] * 4
    for sample, request in zip(samples, requests, strict=True):
        head, body = request.split(b"\r\n\r\n", 1)
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        json_size = int(fields[b"Inference-Header-Content-Length"])
        header = json.loads(body[:json_size])
        assert header["inputs"][0]["datatype"] == "BYTES"
        assert body[json_size:] == _reference(sample["PROMPT"])
