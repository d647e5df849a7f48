"""A small, deterministic ONNX graph builder shared by the suite's generators.

Why a builder: each generator is a few dozen layers, and hand-written NodeProtos would bury the
architecture under plumbing. Why this one: tensor names come from a counter, weights from one
seeded `numpy.random.Generator` drawn in a fixed order, and the model header (opset 17, IR 8,
producer) is set explicitly, so the same calls give the same bytes on every machine. Weights
become initializers at once, so the 1.3 GB bert_large is not also held as numpy arrays.

Opset 17 / IR 8: onnxruntime here (1.32) and the older ORT inside Triton 24.10 both load it, and
opset 17 has LayerNormalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
PRODUCER = "loadtest.models"
BATCH = "batch"  # the symbolic batch dimension of every suite model

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64

Dim = int | str


class GraphBuilder:
    """Collects nodes and initializers for one model; `model()` assembles the ModelProto."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[onnx.TensorProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []
        self._outputs: list[onnx.ValueInfoProto] = []
        self._counter = 0
        self.parameter_count = 0

    def _fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    # -- graph interface -----------------------------------------------------------------------
    def input(self, name: str, elem_type: int, shape: Sequence[Dim]) -> str:
        self._inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, name: str, elem_type: int, shape: Sequence[Dim]) -> None:
        """Declare tensor `name` (made by a node with `out=name`) a graph output."""
        self._outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    # -- initializers ----------------------------------------------------------------------------
    def constant(self, hint: str, array: np.ndarray, parameter: bool = False) -> str:
        """An initializer; `parameter` marks learned weights (counted), not shape constants."""
        name = self._fresh(hint)
        self._initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        if parameter:
            self.parameter_count += int(array.size)
        return name

    def ints(self, hint: str, values: Sequence[int]) -> str:
        return self.constant(hint, np.asarray(values, dtype=np.int64))

    def scalar(self, hint: str, value: float) -> str:
        return self.constant(hint, np.asarray(value, dtype=np.float32))

    def normal(self, hint: str, shape: Sequence[int], std: float, mean: float = 0.0) -> str:
        """Learned weights ~ N(mean, std²), float32."""
        values = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        values *= np.float32(std)
        if mean:
            values += np.float32(mean)
        return self.constant(hint, values, parameter=True)

    def uniform(self, hint: str, shape: Sequence[int], bound: float) -> str:
        """Learned weights ~ U(-bound, bound), float32."""
        values = self.rng.random(tuple(shape), dtype=np.float32)
        values = (values * np.float32(2 * bound) - np.float32(bound)).astype(np.float32)
        return self.constant(hint, values, parameter=True)

    def filled(self, hint: str, shape: Sequence[int], value: float) -> str:
        return self.constant(hint, np.full(tuple(shape), value, dtype=np.float32), parameter=True)

    # -- nodes -----------------------------------------------------------------------------------
    def node(self, op: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        """One node with one output (named `out`, else a fresh name); returns the output's name."""
        base = self._fresh(op.lower())
        name = out or base
        self._nodes.append(helper.make_node(op, list(inputs), [name], name=base, **attrs))
        return name

    def multi(self, op: str, inputs: Sequence[str], outputs: int, **attrs: Any) -> list[str]:
        """One node with several outputs; returns their names."""
        base = self._fresh(op.lower())
        names = [f"{base}_{i}" for i in range(outputs)]
        self._nodes.append(helper.make_node(op, list(inputs), names, name=base, **attrs))
        return names

    # -- result ----------------------------------------------------------------------------------
    def model(self, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self._nodes,
            self.name,
            self._inputs,
            self._outputs,
            initializer=self._initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=PRODUCER,
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        model.producer_version = "1"
        return model
