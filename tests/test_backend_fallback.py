"""The embedded onnxruntime backend counts batches that fail as a whole (they no longer vanish),
and the metrics summary and the server-side notes report the count."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

from loadtest.observe.metrics import BATCH_FALLBACK_METRIC, Scrape, parse_metrics, summarize_scrapes

BACKEND = Path(__file__).resolve().parent.parent / "loadtest/server/backends/onnxruntime/model.py"


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def increment(self, by: int) -> None:
        self.value += by


def _fake_pb_utils(counter: _Counter, warnings: list[str]) -> types.ModuleType:
    """Just enough of triton_python_backend_utils for execute() to run outside Triton."""
    pb = types.ModuleType("triton_python_backend_utils")

    class MetricFamily:
        COUNTER = "counter"

        def __init__(self, name: str, description: str, kind: str) -> None:
            assert name == BATCH_FALLBACK_METRIC

        def Metric(self, labels: dict[str, str]) -> _Counter:
            return counter

    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self.name, self.array = name, array

        def as_numpy(self) -> np.ndarray:
            return self.array

    class InferenceResponse:
        def __init__(self, tensors=None, error=None) -> None:
            self.tensors, self.error = tensors, error

    pb.MetricFamily = MetricFamily  # type: ignore[attr-defined]
    pb.Tensor = Tensor  # type: ignore[attr-defined]
    pb.InferenceResponse = InferenceResponse  # type: ignore[attr-defined]
    pb.TritonError = str  # type: ignore[attr-defined]
    pb.get_input_tensor_by_name = lambda request, name: request[name]  # type: ignore[attr-defined]
    pb.Logger = types.SimpleNamespace(log_warn=warnings.append)  # type: ignore[attr-defined]
    return pb


class _Session:
    """Fails any call with more than one row (a batch), answers single rows."""

    def run(self, names, feeds):
        x = feeds["x"]
        if x.shape[0] > 1:
            raise RuntimeError("batch rejected")
        return [x * 2]


def test_a_failed_batch_is_counted_logged_and_run_request_by_request(monkeypatch):
    counter, warnings = _Counter(), []
    pb = _fake_pb_utils(counter, warnings)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location("ort_backend_under_test", BACKEND)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.session, model.batching = _Session(), True
    model.input_names, model.output_names = ["x"], ["y"]
    _family, model.fallbacks = module._fallback_counter({"model_name": "m", "model_version": "1"})
    requests = [{"x": pb.Tensor("x", np.full((1, 2), i, np.float32))} for i in range(3)]
    responses = model.execute(requests)
    assert counter.value == 1
    assert len(warnings) == 1 and "batch of 3 requests failed" in warnings[0]
    assert [r.tensors[0].array[0, 0] for r in responses] == [0.0, 2.0, 4.0]


def test_metrics_summary_and_notes_carry_the_fallback_count():
    def scrape(value: float) -> Scrape:
        text = f'{BATCH_FALLBACK_METRIC}{{model="tiny",version="1"}} {value}\n'
        return Scrape(0, tuple(parse_metrics(text)))

    summary = summarize_scrapes([scrape(2), scrape(7)], "tiny")
    assert summary.batch_fallbacks == 5
    assert summarize_scrapes([scrape(2), scrape(7)], "other").batch_fallbacks is None
