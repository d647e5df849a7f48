"""docker-compose.yml, checked structurally (Docker and GPUs are not available where this runs):
the services, the image tags against the tritonclient pin, ports, healthcheck, GPU reservations,
start order, that every host path it mounts exists, and docker/serve.sh's model selection run
with a stand-in tritonserver.
"""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from tritonclient.grpc import model_config_pb2 as mc

from loadtest.models import SUITE
from loadtest.models.config import format_config, read_config, tensorrt_plan_config

REPO_ROOT = Path(__file__).resolve().parent.parent
# Triton server release <-> NGC container tag (the tritonclient version equals the server's).
TRITON_RELEASES = {"2.51.0": "24.10"}
TRITON_PIN = "2.51.0"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def _host_paths(service: dict[str, Any]) -> list[str]:
    paths = [volume.split(":")[0] for volume in service.get("volumes", [])]
    build = service.get("build")
    if isinstance(build, dict):
        paths.append(build.get("context", "."))
        paths.append(str(Path(build.get("context", ".")) / build["dockerfile"]))
    return paths


def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"models", "triton", "triton-cpu", "tensorrt-plan", "triton-openai"}
    assert services["triton-openai"]["profiles"] == ["openai"]
    assert "profiles" not in services["models"] and "profiles" not in services["triton"]
    assert services["triton-cpu"]["profiles"] == ["cpu"]
    assert services["tensorrt-plan"]["profiles"] == ["tensorrt"]


def test_image_tags_match_the_tritonclient_pin(compose: dict[str, Any]) -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'"tritonclient[grpc,http]=={TRITON_PIN}"' in pyproject
    assert version("tritonclient") == TRITON_PIN
    release = TRITON_RELEASES[TRITON_PIN]
    services = compose["services"]
    for name in ("triton", "triton-cpu"):
        assert services[name]["image"] == f"nvcr.io/nvidia/tritonserver:{release}-py3"
    assert services["tensorrt-plan"]["image"] == f"nvcr.io/nvidia/tensorrt:{release}-py3"


@pytest.mark.parametrize("name", ["triton", "triton-cpu"])
def test_triton_service(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert sorted(service["ports"]) == ["8000:8000", "8001:8001", "8002:8002"]
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:3] == ["curl", "-f"]
    assert re.fullmatch(r"(http://)?localhost:8000/v2/health/ready", test[3])
    assert service["depends_on"] == {"models": {"condition": "service_completed_successfully"}}
    assert "./model_repository:/models:ro" in service["volumes"]
    assert service["entrypoint"] == ["/bin/sh", "/opt/loadtest/serve.sh"]
    assert "./docker/serve.sh:/opt/loadtest/serve.sh:ro" in service["volumes"]


def test_gpu_reservations(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("triton", "tensorrt-plan"):
        (device,) = _gpu_devices(services[name])
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert _gpu_devices(services["triton-cpu"]) == []
    assert _gpu_devices(services["models"]) == []
    assert _gpu_devices(services["triton-openai"]) == []
    assert services["triton"]["command"] == ["--model-config-name=gpu"]
    assert services["triton-cpu"]["command"] == []


def test_models_service_builds_first(compose: dict[str, Any]) -> None:
    models = compose["services"]["models"]
    assert "./model_repository:/workspace/model_repository" in models["volumes"]
    assert models["command"][0] == "build"
    dockerfile = (REPO_ROOT / models["build"]["dockerfile"]).read_text()
    assert 'ENTRYPOINT ["python", "-m", "loadtest.models"]' in dockerfile
    # its pins agree with pyproject.toml
    assert f'"tritonclient[grpc]=={TRITON_PIN}"' in dockerfile
    assert '"numpy>=1.24,<2"' in dockerfile and '"onnx>=1.16,<1.23"' in dockerfile
    deps = compose["services"]["tensorrt-plan"]["depends_on"]
    assert deps == {"models": {"condition": "service_completed_successfully"}}


def test_every_host_path_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for path in _host_paths(service):
            assert (REPO_ROOT / path).exists(), f"{name}: {path} does not exist in the repository"


def test_tensorrt_plan_path(compose: dict[str, Any]) -> None:
    """trtexec writes where the triton service's second repository looks, at the config's shapes."""
    committed = REPO_ROOT / "model_repository_trt" / "resnet50_trt" / "config.pbtxt"
    expected = tensorrt_plan_config(SUITE["resnet50"], "resnet50_trt")
    assert committed.read_text() == format_config(expected)
    config = read_config(committed)
    assert config.platform == "tensorrt_plan" and config.name == "resnet50_trt"
    script = (REPO_ROOT / "docker" / "build-trt-plan.sh").read_text()
    assert "onnx=/models/resnet50/1/model.onnx" in script
    assert "out=/models_trt/resnet50_trt/1" in script and '"$out/model.plan"' in script
    (name,) = [tensor.name for tensor in config.input]
    shapes = re.search(rf"--maxShapes={name}:(\d+)x3x224x224", script)
    assert shapes is not None and int(shapes.group(1)) == config.max_batch_size
    assert "./model_repository_trt:/models_trt" in compose["services"]["tensorrt-plan"]["volumes"]
    assert "./model_repository_trt:/models_trt:ro" in compose["services"]["triton"]["volumes"]


def test_serve_script_loads_only_built_models(tmp_path: Path) -> None:
    models, plans, empty = tmp_path / "models", tmp_path / "trt", tmp_path / "empty"
    for path in (models / "tiny/1", models / "bert_large", plans / "resnet50_trt/1", empty / "x/1"):
        path.mkdir(parents=True)
    (models / "tiny/1/model.onnx").write_bytes(b"")
    (models / "bert_large/config.pbtxt").write_text("")
    (plans / "resnet50_trt/1/model.plan").write_bytes(b"")
    env = {
        "PATH": "/usr/bin:/bin",
        "LOADTEST_REPOSITORIES": f"{models} {plans} {empty}",
        "LOADTEST_TRITONSERVER": "echo",
    }
    done = subprocess.run(
        ["/bin/sh", str(REPO_ROOT / "docker" / "serve.sh"), "--model-config-name=gpu"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout.split() == [
        "--model-control-mode=explicit",
        "--model-config-name=gpu",
        "--load-model=tiny",
        f"--model-repository={models}",
        "--load-model=resnet50_trt",
        f"--model-repository={plans}",
    ]


# What Triton's OpenAI front end sends a non-vLLM model (triton-inference-server/server v2.71.0,
# python/openai/openai_frontend/engine/utils/triton.py, _create_trtllm_generate_request): always
# the first five, the rest when the request sets them; every one [1, 1] but stop_words [1, n].
# (guided_decoding_* only with tools, lora_* only with a LoRA name: neither is offered.)
OPENAI_FRONTEND_INPUTS = {
    "text_input": ("TYPE_STRING", True),
    "stream": ("TYPE_BOOL", True),
    "max_tokens": ("TYPE_INT32", True),
    "return_num_input_tokens": ("TYPE_BOOL", True),
    "return_num_output_tokens": ("TYPE_BOOL", True),
    "stop_words": ("TYPE_STRING", False),
    "top_p": ("TYPE_FP32", False),
    "temperature": ("TYPE_FP32", False),
    "frequency_penalty": ("TYPE_FP32", False),
    "presence_penalty": ("TYPE_FP32", False),
    "seed": ("TYPE_UINT64", False),
}


def test_triton_openai_service(compose: dict[str, Any]) -> None:
    """The OpenAI front end's image is a Triton release that has it (≥ 24.12 = 2.53.0, usage
    from 2.60.0), it serves llm_known's own model.py with the config the front end's tensors
    need, and it waits for the front end's readiness route."""
    service = compose["services"]["triton-openai"]
    dockerfile = REPO_ROOT / service["build"]["context"] / service["build"]["dockerfile"]
    text = dockerfile.read_text()
    (tag,) = re.findall(r"^FROM nvcr\.io/nvidia/tritonserver:(\d\d)\.(\d\d)-py3$", text, re.M)
    assert tuple(int(part) for part in tag) >= (25, 8)  # 2.60.0: stream_options.include_usage
    assert 'ENTRYPOINT ["python3", "openai_frontend/main.py"]' in text
    assert "WORKDIR /opt/tritonserver/python/openai" in text
    command = service["command"]
    assert command[command.index("--model-repository") + 1] == "/openai_models"
    port = command[command.index("--openai-port") + 1]
    assert service["ports"] == [f"{port}:{port}"]
    assert service["healthcheck"]["test"] == ["CMD", "curl", "-f", f"localhost:{port}/health/ready"]
    assert sorted(service["volumes"]) == [
        "./docker/openai_models/llm_known/config.pbtxt:/openai_models/llm_known/config.pbtxt:ro",
        "./model_repository/llm_known/1:/openai_models/llm_known/1:ro",
    ]


def test_the_openai_config_of_llm_known_takes_what_the_front_end_sends() -> None:
    config = read_config(REPO_ROOT / "docker" / "openai_models" / "llm_known" / "config.pbtxt")
    suite = read_config(REPO_ROOT / "model_repository" / "llm_known" / "config.pbtxt")
    assert config.name == suite.name == "llm_known" and config.backend == "python"
    assert config.model_transaction_policy.decoupled and config.max_batch_size == 0
    declared = {tensor.name: tensor for tensor in config.input}
    assert set(declared) == set(OPENAI_FRONTEND_INPUTS)
    for name, (data_type, always) in OPENAI_FRONTEND_INPUTS.items():
        tensor = declared[name]
        assert mc.DataType.Name(tensor.data_type) == data_type, name
        assert list(tensor.dims) == ([1, -1] if name == "stop_words" else [1, 1]), name
        assert always or tensor.optional, f"{name} is sent only when asked: must be optional"
    # usage needs both counts in every response (_get_usage_from_response)
    assert {"text_output", "num_output_tokens", "num_input_tokens"} <= {
        tensor.name for tensor in config.output
    }
    law = ("ttft_base_ms", "ttft_per_input_token_ms", "ms_per_output_token")
    for key in law:
        assert config.parameters[key].string_value == suite.parameters[key].string_value, key
    model = (REPO_ROOT / "model_repository" / "llm_known" / "1" / "model.py").read_text()
    assert '"return_num_input_tokens"' in model and '"num_input_tokens"' in model
