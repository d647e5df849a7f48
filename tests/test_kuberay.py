"""The KubeRay manifest (deploy/kuberay/): well-formed, and on the Ray the `ray` extra pins.

Only this much is checked here: no Kubernetes cluster is available to apply it to."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pinned_ray() -> str:
    match = re.search(
        r'ray = \["ray\[client\]==([0-9.]+)"\]', (ROOT / "pyproject.toml").read_text()
    )
    assert match, "pyproject.toml pins the ray extra"
    return match.group(1)


def test_raycluster_manifest_matches_the_pinned_ray() -> None:
    cluster = yaml.safe_load((ROOT / "deploy/kuberay/raycluster.yaml").read_text())
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    assert spec["rayVersion"] == _pinned_ray()
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # shards on workers only
    for group in spec["workerGroupSpecs"]:
        cpus = group["rayStartParams"]["num-cpus"]
        container = group["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["cpu"] == cpus  # one real CPU per shard
    dockerfile = (ROOT / "deploy/kuberay/Dockerfile").read_text()
    assert f"FROM rayproject/ray:{_pinned_ray()}-py311" in dockerfile
