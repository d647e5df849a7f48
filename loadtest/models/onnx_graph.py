"""A small, deterministic ONNX graph builder shared by the suite's generators.

Why a builder: each generator is a few dozen layers, and hand-written NodeProtos would bury the
architecture under plumbing. Why this one: tensor names come from a counter, weights from one
seeded `numpy.random.Generator` drawn in a fixed order, and the model header (opset 17, IR 8,
producer) is set explicitly, so the same calls give the same bytes on every machine (given the
same numpy: its Generator streams may change between numpy releases).

Memory: the ModelProto is assembled in place and each weight goes straight into its initializer's
raw_data, so the weights exist once in the proto rather than as numpy arrays plus the copies that
`helper.make_graph` / `make_model` take (bert_large peaked at 6.9 GB that way, 2.7 GB now).

Opset 17 / IR 8: onnxruntime here (1.32) and the older ORT inside Triton 24.10 both load it, and
opset 17 has LayerNormalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8
PRODUCER = "loadtest.models"
BATCH = "batch"  # the symbolic batch dimension of every suite model

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
BOOL = TensorProto.BOOL

Dim = int | str
ValueDecl = tuple[str, int, Sequence[Dim]]  # (name, ONNX element type, shape)


class GraphBuilder:
    """Builds one model's ModelProto in place; `model()` finishes and returns it."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self._model = onnx.ModelProto()
        self._model.graph.name = name
        self._counter = 0
        self._graphs: list[onnx.GraphProto] = [self._model.graph]  # [-1]: where nodes go
        self._scalars: dict[tuple[str, float], str] = {}
        self.parameter_count = 0

    def fresh(self, hint: str) -> str:
        """A new unique tensor name (e.g. for a subgraph's inputs)."""
        self._counter += 1
        return f"{hint}_{self._counter}"

    # -- graph interface -----------------------------------------------------------------------
    def input(self, name: str, elem_type: int, shape: Sequence[Dim]) -> str:
        self._model.graph.input.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, name: str, elem_type: int, shape: Sequence[Dim]) -> None:
        """Declare tensor `name` (made by a node with `out=name`) a graph output."""
        self._model.graph.output.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def shape_hint(self, name: str, elem_type: int, shape: Sequence[Dim]) -> str:
        """Declare a tensor's shape where ONNX shape inference cannot see it (inside a Loop body,
        where axes and shapes come from outer-scope constants); models/flops.py needs it."""
        self._graphs[-1].value_info.append(
            helper.make_tensor_value_info(name, elem_type, list(shape))
        )
        return name

    # -- initializers ----------------------------------------------------------------------------
    def constant(self, hint: str, array: np.ndarray, parameter: bool = False) -> str:
        """An initializer; `parameter` marks learned weights (counted), not shape constants."""
        name = self.fresh(hint)
        tensor = self._model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)  # 0-d scalars stay 0-d
        little_endian = array.astype(array.dtype.newbyteorder("<"), copy=False)
        tensor.raw_data = little_endian.tobytes(order="C")  # ONNX raw_data is little-endian
        if parameter:
            self.parameter_count += int(array.size)
        return name

    def ints(self, hint: str, values: Sequence[int]) -> str:
        return self.constant(hint, np.asarray(values, dtype=np.int64))

    def scalar(self, hint: str, value: float) -> str:
        """A 0-d float32 constant, made once per (hint, value) and shared by every use."""
        key = (hint, float(value))
        if key not in self._scalars:
            self._scalars[key] = self.constant(hint, np.asarray(value, dtype=np.float32))
        return self._scalars[key]

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
        base = self.fresh(op.lower())
        name = out or base
        self._graphs[-1].node.append(helper.make_node(op, list(inputs), [name], name=base, **attrs))
        return name

    def multi(self, op: str, inputs: Sequence[str], outputs: int, **attrs: Any) -> list[str]:
        """One node with several outputs; returns their names."""
        base = self.fresh(op.lower())
        names = [f"{base}_{i}" for i in range(outputs)]
        self._graphs[-1].node.append(helper.make_node(op, list(inputs), names, name=base, **attrs))
        return names

    # -- subgraphs (Loop bodies) -----------------------------------------------------------------
    def begin_subgraph(self, hint: str, inputs: Sequence[ValueDecl]) -> None:
        """Send the following nodes into a new subgraph with these (name, type, shape) inputs.

        Initializers made meanwhile still go to the main graph (a body reads them from the outer
        scope, as exporters leave it), so every weight is stored once."""
        graph = onnx.GraphProto()
        graph.name = self.fresh(hint)
        for name, elem_type, shape in inputs:
            graph.input.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        self._graphs.append(graph)

    def end_subgraph(
        self, outputs: Sequence[tuple[str, int, Sequence[Dim] | None]]
    ) -> onnx.GraphProto:
        """Finish the innermost subgraph, declaring its (name, type, shape or None) outputs."""
        if len(self._graphs) < 2:
            raise RuntimeError("end_subgraph without begin_subgraph")
        graph = self._graphs.pop()
        for name, elem_type, shape in outputs:
            shape_list = None if shape is None else list(shape)
            graph.output.append(helper.make_tensor_value_info(name, elem_type, shape_list))
        return graph

    # -- result ----------------------------------------------------------------------------------
    def model(self, doc: str) -> onnx.ModelProto:
        """The finished model. Call once: the builder hands over its proto rather than copy it."""
        if len(self._graphs) != 1:
            raise RuntimeError("model() with a subgraph still open")
        model = self._model
        model.ir_version = IR_VERSION
        model.opset_import.append(helper.make_opsetid("", OPSET))
        model.producer_name = PRODUCER
        model.producer_version = "1"
        model.doc_string = doc
        self._model = onnx.ModelProto()
        self._graphs = [self._model.graph]
        return model
