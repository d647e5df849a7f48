"""fixed_service: Triton's Python backend holding every request a fixed time, one at a time.

benchmarks/loadgen_compare.py's `--server triton-fixed`: with one instance and no batching the
model is an M/D/1 queue inside a real Triton (the service time is `service_ms`, plus the
backend's own hand-over), so two tools that play one schedule against it meet the same queue,
and what differs between their percentiles is their own sends and receives. INPUT0 is answered
as OUTPUT0 (tiny's tensor names and shapes, so the same samples serve).
"""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.service_s = float(config["parameters"]["service_ms"]["string_value"]) / 1e3

    def execute(self, requests):
        responses = []
        for request in requests:
            until = time.monotonic() + self.service_s
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            while (left := until - time.monotonic()) > 0:
                time.sleep(left)
            output = pb_utils.Tensor("OUTPUT0", values)
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
