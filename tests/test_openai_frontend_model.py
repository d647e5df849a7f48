"""llm_known as docker-compose.yml's `triton-openai` service serves it (its model.py with
docker/openai_models/llm_known/config.pbtxt), run in the embedded Triton (2.51): it takes the
tensors Triton's OpenAI front end sends a TensorRT-LLM-style model, shaped as it shapes them, and
answers with both token counts in every response, which is what the front end's `usage` needs.

The front end itself (Triton ≥ 2.53) is not in the embedded 2.51 and has never run here; this
checks the half of that service that can run: the model and its config, on a real Triton.
"""

from __future__ import annotations

import queue
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

pytestmark = pytest.mark.triton

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMPT = "four words of prompt"


@pytest.fixture(scope="module")
def openai_shaped_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from loadtest.server.embedded import EmbeddedTriton

    repository = tmp_path_factory.mktemp("openai_models")
    model = repository / "llm_known"
    shutil.copytree(REPO_ROOT / "model_repository" / "llm_known" / "1", model / "1")
    config = REPO_ROOT / "docker" / "openai_models" / "llm_known" / "config.pbtxt"
    shutil.copy(config, model / "config.pbtxt")
    with EmbeddedTriton(repository, models=["llm_known"]) as server:
        yield server


def _tensor(name: str, datatype: str, value: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


def front_end_request(prompt: str, max_tokens: int) -> list[grpcclient.InferInput]:
    """What _create_trtllm_generate_request (server v2.71.0) builds for a streamed completion
    with a temperature and a seed: every tensor [1, 1]."""
    return [
        _tensor("text_input", "BYTES", np.array([[prompt.encode()]], dtype=np.object_)),
        _tensor("stream", "BOOL", np.array([[True]])),
        _tensor("max_tokens", "INT32", np.array([[max_tokens]], dtype=np.int32)),
        _tensor("temperature", "FP32", np.array([[0.5]], dtype=np.float32)),
        _tensor("seed", "UINT64", np.array([[7]], dtype=np.uint64)),
        _tensor("return_num_input_tokens", "BOOL", np.array([[True]])),
        _tensor("return_num_output_tokens", "BOOL", np.array([[True]])),
    ]


def test_the_model_answers_the_front_ends_tensors_with_both_counts(
    openai_shaped_triton: object,
) -> None:
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(openai_shaped_triton.grpc_url)  # type: ignore[attr-defined]
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("llm_known", front_end_request(PROMPT, 3), request_id="q1")
        responses = []
        while True:
            result, error = answers.get(timeout=10)
            assert error is None, error
            responses.append(result)
            final = result.get_response().parameters["triton_final_response"].bool_param
            if final:
                break
    finally:
        client.stop_stream()
        client.close()
    assert [r.as_numpy("text_output").tolist() for r in responses] == [[b"t0 "], [b"t1 "], [b"t2 "]]
    assert [int(r.as_numpy("num_output_tokens")[0]) for r in responses] == [1, 1, 1]
    assert [int(r.as_numpy("num_input_tokens")[0]) for r in responses] == [4, 4, 4]
