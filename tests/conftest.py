"""Shared fixtures. The `triton` marker's tests share one embedded Triton for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# `./lt test` (and so CI) runs the suite as two pytest-xdist workers (-n 2 --dist loadgroup):
# one takes the files below, whose tests mostly wait (timeouts, signals, hung and silent servers,
# Ray and proxy start-ups; measured 0.07-0.58 CPU-seconds per wall second, tests/test_stopping.py
# 0.28), and every Ray test; the other takes everything else. Waiting then overlaps with work,
# and the CPU-bound, timing-sensitive tests (the client keeping its schedule, the meter's
# accuracy) never run beside each other. Without xdist the marks do nothing.
WAITING_FILES = frozenset(
    {
        "test_stopping.py",
        "test_ray.py",
        "test_tls_auth.py",
        "test_hostile_input.py",
        "test_exit_codes.py",
        "test_embedded.py",
        "test_proxies.py",
    }
)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # An xdist worker starts with COLUMNS=80 in its environment, which loadtest reads as "a
    # terminal this wide" (report/console.py) and would wrap every table the tests read at 80
    # columns: dropped, so a worker renders as a serial run does.
    os.environ.pop("COLUMNS", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        waits = item.path.name in WAITING_FILES or item.get_closest_marker("ray") is not None
        item.add_marker(pytest.mark.xdist_group("waits" if waits else "works"))


REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with tiny, resnet50 and bert_l4_h256 built once (resnet50 takes ~10 s to
    build; bert_l4_h256, for the mix of two real models, under 1 s)."""
    from loadtest.models import build_repository

    repository = tmp_path_factory.mktemp("model_repository")
    build_repository(repository, ["tiny", "resnet50", "bert_l4_h256"])
    return repository


@pytest.fixture(scope="session")
def triton(built_repository: Path) -> Iterator[object]:
    """One real embedded Triton serving tiny, resnet50 and bert_l4_h256 on free loopback ports."""
    from loadtest.server.embedded import EmbeddedTriton

    models = ["tiny", "resnet50", "bert_l4_h256"]
    with EmbeddedTriton(built_repository, models=models) as server:
        yield server


@pytest.fixture(scope="session")
def stub() -> Iterator[object]:
    """The zero-compute KServe-v2 stub (`loadtest stub`) on free loopback ports."""
    from loadtest.stub.process import running_stub

    with running_stub() as server:
        yield server


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real third-party OpenAI-compatible server (`transformers serve` streaming a tiny
    random-weight Llama, tests/openai_servers.py) on a free loopback port; skips without its
    environment, unless LOADTEST_REQUIRE_OPENAI_SERVER=1."""
    from openai_servers import transformers_serve

    with transformers_serve(tmp_path_factory.mktemp("openai-server")) as server:
        yield server
