"""Shared fixtures. The `triton` marker's tests share one embedded Triton for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with tiny and resnet50 built once (resnet50 takes ~10 s to build)."""
    from loadtest.models import build_repository

    repository = tmp_path_factory.mktemp("model_repository")
    build_repository(repository, ["tiny", "resnet50"])
    return repository


@pytest.fixture(scope="session")
def triton(built_repository: Path) -> Iterator[object]:
    """One real embedded Triton serving tiny and resnet50 on free loopback ports."""
    from loadtest.server.embedded import EmbeddedTriton

    with EmbeddedTriton(built_repository, models=["tiny", "resnet50"]) as server:
        yield server


@pytest.fixture(scope="session")
def stub() -> Iterator[object]:
    """The zero-compute KServe-v2 stub (`loadtest stub`) on free loopback ports."""
    from loadtest.stub.process import running_stub

    with running_stub() as server:
        yield server
