"""What the stub says about models: configs from a repository (or a default) and canned answers.

Everything a request could ask for is built once per model and cached, so answering costs a dict
lookup: the stub must be much cheaper than the client it measures.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from loadtest.core.target import TRITON_TO_NUMPY
from loadtest.core.units import s_to_us
from loadtest.errors import ModelBuildError
from loadtest.models.config import read_config
from loadtest.stub.service import Service

STUB_VERSION = "loadtest-stub"


def default_config(name: str) -> mc.ModelConfig:
    """The shape answered for a model the repository does not hold: `tiny`'s (16 FP32 in/out)."""
    config = mc.ModelConfig(name=name, max_batch_size=64, backend="stub")
    config.input.add(name="INPUT0", data_type=mc.TYPE_FP32, dims=[16])
    config.output.add(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=[16])
    return config


def _datatype(data_type: int) -> str:
    return mc.DataType.Name(data_type).removeprefix("TYPE_").replace("STRING", "BYTES")


@dataclass(frozen=True)
class StubOutput:
    name: str
    datatype: str
    shape: list[int]  # with a batch dimension of 1 when the model batches
    zeros: bytes


@dataclass(frozen=True)
class StubModel:
    config: mc.ModelConfig

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def outputs(self) -> list[StubOutput]:
        result = []
        for output in self.config.output:
            dims = [max(int(d), 1) for d in output.dims]  # variable dims answered as 1
            shape = [1, *dims] if self.config.max_batch_size > 0 else dims
            dtype = np.dtype(TRITON_TO_NUMPY.get(_datatype(output.data_type), "uint8"))
            # BYTES: each element an empty string, i.e. its 4-byte length 0
            itemsize = 4 if dtype.kind == "O" else dtype.itemsize
            zeros = bytes(int(np.prod(shape)) * itemsize)
            result.append(StubOutput(output.name, _datatype(output.data_type), shape, zeros))
        return result

    @cached_property
    def stream_law(self) -> StreamLaw:
        return StreamLaw.of(self.config)

    def config_json(self) -> dict[str, Any]:
        return json_format.MessageToDict(self.config, preserving_proto_field_name=True)

    def metadata_json(self) -> dict[str, Any]:
        def tensors(entries: Any) -> list[dict[str, Any]]:
            batch = [-1] if self.config.max_batch_size > 0 else []
            return [
                {"name": t.name, "datatype": _datatype(t.data_type), "shape": batch + list(t.dims)}
                for t in entries
            ]

        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "stub",
            "inputs": tensors(self.config.input),
            "outputs": tensors(self.config.output),
        }

    def infer_response_http(self) -> tuple[bytes, int]:
        """(body, JSON header length) of a binary-tensor infer response."""
        header = {
            "model_name": self.name,
            "model_version": "1",
            "outputs": [
                {
                    "name": o.name,
                    "datatype": o.datatype,
                    "shape": o.shape,
                    "parameters": {"binary_data_size": len(o.zeros)},
                }
                for o in self.outputs
            ],
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        return head + b"".join(o.zeros for o in self.outputs), len(head)


@dataclass(frozen=True)
class StreamLaw:
    """A streamed answer's timing, llm_known's law (ms): the first token a + b × words of
    text_input after the request, then one every c. All 0 (a model without the parameters) =
    every token at once: the stub as the streaming client's roofline."""

    a_ms: float = 0.0
    b_ms: float = 0.0
    c_ms: float = 0.0
    # `stub_eos_after` = K > 0: the model "meets its end-of-sequence token" after K tokens, so an
    # answer stops there unless the request asks ignore_eos (a real model's early stop, for the
    # requested-against-achieved length figures); 0 = never.
    eos_after: int = 0

    @classmethod
    def of(cls, config: mc.ModelConfig) -> StreamLaw:
        def number(key: str) -> float:
            entry = config.parameters.get(key)
            try:
                return float(entry.string_value) if entry is not None else 0.0
            except ValueError:
                return 0.0

        return cls(
            number("ttft_base_ms"),
            number("ttft_per_input_token_ms"),
            number("ms_per_output_token"),
            max(int(number("stub_eos_after")), 0),
        )

    def token_due_s(self, words: int, k: int) -> float:
        """When token k (0-based) is due, in seconds after the request."""
        return (self.a_ms + self.b_ms * words + self.c_ms * k) / 1000.0


class Catalog:
    """Model name -> StubModel, from `repository` when it has the model, else the default shape."""

    def __init__(self, repository: Path | None = None) -> None:
        self.repository = repository
        self._models: dict[str, StubModel] = {}

    @cached_property
    def served(self) -> tuple[str, ...]:
        """The repository's models (folders with a config.pbtxt), read once: what the stub's
        OpenAI side lists and serves. Empty without a repository (the KServe side then answers
        any name with the default shape; an OpenAI client asks for a model it was listed)."""
        if self.repository is None or not self.repository.is_dir():
            return ()
        return tuple(
            sorted(p.parent.name for p in self.repository.glob("*/config.pbtxt") if p.is_file())
        )

    def model(self, name: str) -> StubModel:
        found = self._models.get(name)
        if found is None:
            found = StubModel(self._load(name))
            self._models[name] = found
        return found

    def _load(self, name: str) -> mc.ModelConfig:
        if self.repository is not None and "/" not in name and name not in ("", ".", ".."):
            path = self.repository / name / "config.pbtxt"
            if path.is_file():
                try:
                    config = read_config(path)
                except ModelBuildError:
                    return default_config(name)
                config.name = config.name or name
                return config
        return default_config(name)


class Behaviour:
    """How the stub answers inference, and what it has seen (shared by HTTP and gRPC).

    `service` says when each inference answer is due (service.py: a service time, without
    compute, and optionally a queue in front of K servers); `delay_s` is its mean, and 0 answers
    at once. A request whose Triton "timeout" parameter (µs) is shorter than the mean is rejected
    at its deadline the way Triton's scheduler words it ("Request timeout expired", UNAVAILABLE /
    503), without taking a server. `infer_count` and `last_infer_unix_ns` (arrival of the latest
    inference request) are served at GET /v2/stub/counters, so a test can see when the last
    query reached the server.
    """

    def __init__(self, delay_s: float = 0.0, service: Service | None = None) -> None:
        self.service = service if service is not None else Service(delay_s)
        self.delay_s = self.service.mean_s
        self.infer_count = 0
        self.last_infer_unix_ns = 0

    def arrived(self) -> None:
        self.infer_count += 1
        self.last_infer_unix_ns = time.time_ns()

    def counters_json(self) -> bytes:
        return json.dumps(
            {"infer_count": self.infer_count, "last_infer_unix_ns": self.last_infer_unix_ns}
        ).encode()

    def hold_s(self) -> float:
        """How long to hold back the answer to the request that just arrived (books a server)."""
        return self.service.hold_s(time.monotonic())

    def rejects(self, timeout_us: int) -> bool:
        """Would Triton drop a request with this "timeout" parameter (0 = none) before serving?"""
        return 0 < timeout_us < s_to_us(self.delay_s)


TIMEOUT_EXPIRED = "Request timeout expired"
