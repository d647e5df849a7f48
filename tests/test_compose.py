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
    assert set(services) == {"models", "triton", "triton-cpu", "tensorrt-plan"}
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
