"""A Python-based Triton backend named `onnxruntime` that runs models with onnxruntime's Python API.

Why: the embedded Triton (the `nvidia-pytriton` wheel) ships only the Python backend, while the
official Triton image serves the same repository with its native ONNX Runtime backend. Triton uses
`<backend-dir>/onnxruntime/model.py` for `backend: "onnxruntime"` when no `libtriton_onnxruntime.so`
exists there, so one set of config.pbtxt files works unchanged in Docker and embedded.

What it mirrors from the native backend: `default_model_filename` (model.onnx), dynamic batching
(a whole batch of requests runs as one session call, concatenated on the batch axis and split
again), and the `intra_op_thread_count` / `inter_op_thread_count` parameters. A batch that fails
as a whole is run again request by request, so one bad request fails alone; each such fallback is
logged and counted in the custom metric `loadtest_batch_fallback_total` (port 8002), because
Triton's own counters then record one execution of the whole batch and its "average batch"
over-states how much work was really batched; loadtest's metrics sampler reads that counter and
the server-side split says so. One deliberate difference: ORT's intra-op threads spin by default,
which burns more than a core per server even at low load (docs/triton.md); here spinning is off
unless the config sets `session.intra_op.allow_spinning` to "1". Any parameter whose key starts
with "session." is passed to ORT as a session config entry.

This file runs inside Triton's Python stub, not in loadtest's process; it must import nothing from
loadtest.
"""

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

FALLBACK_METRIC = "loadtest_batch_fallback_total"


def _parameters(config):
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def _fallback_counter(args):
    """The metric counting batches that fell back to per-request runs, with its family (Triton
    drops a family's metrics when the family object is garbage-collected, so both are kept);
    None where the Python backend has no custom metrics."""
    try:
        family = pb_utils.MetricFamily(
            name=FALLBACK_METRIC,
            description="batches that failed as a whole and ran request by request",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        labels = {"model": args["model_name"], "version": str(args["model_version"])}
        return family, family.Metric(labels=labels)
    except Exception as exc:
        pb_utils.Logger.log_warn(f"onnxruntime: no {FALLBACK_METRIC} metric ({exc})")
        return None


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"model file not found: {path}")
        parameters = _parameters(config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_thread_count", "0") or 0)
        options.inter_op_num_threads = int(parameters.get("inter_op_thread_count", "0") or 0)
        options.add_session_config_entry(
            "session.intra_op.allow_spinning",
            parameters.get("session.intra_op.allow_spinning", "0"),
        )
        for key, value in parameters.items():
            if key.startswith("session.") and key != "session.intra_op.allow_spinning":
                options.add_session_config_entry(key, value)
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise pb_utils.TritonModelException(f"onnxruntime cannot load {path}: {exc}") from exc
        self.batching = int(config.get("max_batch_size", 0)) > 0
        counter = _fallback_counter(args)
        self._fallback_family: Any
        self.fallbacks: Any
        self._fallback_family, self.fallbacks = counter if counter else (None, None)
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def _run_one(self, request):
        feeds = {
            name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            for name in self.input_names
        }
        outputs = self.session.run(self.output_names, feeds)
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor(n, np.ascontiguousarray(o))
                for n, o in zip(self.output_names, outputs, strict=True)
            ]
        )

    def _run_batch(self, requests):
        per_request = [
            {
                name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in self.input_names
            }
            for request in requests
        ]
        sizes = [feeds[self.input_names[0]].shape[0] for feeds in per_request]
        feeds = {name: np.concatenate([f[name] for f in per_request]) for name in self.input_names}
        outputs = self.session.run(self.output_names, feeds)
        responses, offset = [], 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[offset : offset + size]))
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
            offset += size
        return responses

    def execute(self, requests):
        if self.batching and len(requests) > 1:
            try:
                return self._run_batch(requests)
            except Exception as exc:  # run one call per request so one bad request fails alone
                if self.fallbacks is not None:
                    self.fallbacks.increment(1)
                pb_utils.Logger.log_warn(
                    f"onnxruntime: a batch of {len(requests)} requests failed ({exc}); "
                    "running them one by one"
                )
        responses = []
        for request in requests:
            try:
                responses.append(self._run_one(request))
            except Exception as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {exc}"))
                )
        return responses
