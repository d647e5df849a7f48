"""`--embedded auto` starts a Triton only in place of a silent loopback Triton URL (issue #25).

A fake:// URL, or one naming a path (an OpenAI-style http://127.0.0.1:PORT/v1), is never a
Triton endpoint: nothing is started for it, whether or not anything answers there.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from loadtest.core.settings import Protocol, TargetSettings, is_triton_url
from loadtest.errors import SettingsError
from loadtest.server import deployment
from loadtest.server.deployment import EmbeddedMode, resolve


def _silent_port() -> int:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("url", "triton"),
    [
        ("127.0.0.1:8001", True),
        ("grpc://127.0.0.1:8001", True),
        ("https://triton.example:443/", True),
        ("[::1]:8000", True),
        ("http://127.0.0.1:8000/v1", False),
        ("https://api.example/v1/chat/completions", False),
        ("http://127.0.0.1:8000?model=x", False),
        ("fake://?servers=2", False),
        ("openai://127.0.0.1:8000", False),
    ],
)
def test_which_urls_could_be_a_triton_endpoint(url, triton):
    assert is_triton_url(url) is triton


class _NoTriton:
    """Stands in for EmbeddedTriton: any attempt to build one fails the test."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("an embedded Triton was started")


def test_auto_never_starts_a_triton_for_a_fake_url(monkeypatch):
    monkeypatch.setattr(deployment, "EmbeddedTriton", _NoTriton)
    target = TargetSettings(url="fake://?servers=1", protocol=Protocol.GRPC)
    with resolve(target, EmbeddedMode.AUTO, Path("model_repository"), print) as found:
        assert found.embedded is None and found.target == target


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:{port}/v1", "http://localhost:{port}/v1/chat/completions"]
)
def test_a_url_with_a_path_never_reaches_the_deployment_as_a_triton_url(monkeypatch, url):
    """An OpenAI-style URL given as a Triton one (--protocol http) is refused in one line when
    the settings are made (#26), so nothing is started for it either."""
    monkeypatch.setattr(deployment, "EmbeddedTriton", _NoTriton)
    with pytest.raises(SettingsError, match="no path, query or fragment"):
        TargetSettings(url=url.format(port=_silent_port()), protocol=Protocol.HTTP)


def test_auto_still_starts_one_for_a_silent_loopback_triton_url(monkeypatch):
    monkeypatch.setattr(deployment, "EmbeddedTriton", _NoTriton)
    monkeypatch.setattr(deployment, "ensure_model_built", lambda *args: None)
    target = TargetSettings(url=f"127.0.0.1:{_silent_port()}", protocol=Protocol.GRPC)
    with (
        pytest.raises(AssertionError, match="embedded Triton was started"),
        resolve(target, EmbeddedMode.AUTO, Path("model_repository"), print),
    ):
        pass
