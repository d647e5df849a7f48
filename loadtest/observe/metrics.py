"""Triton's Prometheus metrics (:8002): a small text parser, a background sampler, a run summary.

Why sample during the run rather than read once: utilization and power are gauges (a value now),
so the run's figure is their mean over samples; energy and counters are cumulative, so the run's
figure is last − first. From them: inferences per joule (MLPerf power's headline, samples over
energy) when Triton reports GPU energy or power, CPU utilization and memory otherwise.

A metric the server does not export is reported as None ("absent"), never as zero: a CPU-only
Triton has no nv_gpu_* series, and a zero would read as an idle GPU.

The parser handles the text exposition format Triton writes (`name{labels} value`, `#` comments);
no dependency is added for it (prometheus_client is not installed here). The sampler is a daemon
thread using urllib, so the runner's event loop is never blocked by a scrape. An https metrics URL
is read with the target's TLS settings, and the target's headers go with it only when the metrics
are served by the same host (see `fetcher_for`): credentials are never sent anywhere else.
"""

from __future__ import annotations

import base64
import functools
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from loadtest.core.secrets import Header, redact_url
from loadtest.core.settings import TlsSettings

SAMPLE_INTERVAL_S = 1.0
# The embedded onnxruntime backend's own counter (server/backends/onnxruntime/model.py).
BATCH_FALLBACK_METRIC = "loadtest_batch_fallback_total"
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Series:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


def parse_metrics(text: str) -> list[Series]:
    """Prometheus text format -> series; malformed lines are skipped."""
    series: list[Series] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(4))
        except ValueError:
            continue
        labels = tuple(_LABEL.findall(match.group(3) or ""))
        series.append(Series(match.group(1), labels, value))
    return series


@dataclass(frozen=True)
class Scrape:
    at_ns: int  # perf_counter_ns
    series: tuple[Series, ...]

    def total(self, name: str, model: str | None = None) -> float | None:
        """Sum of a metric's series (over GPUs / versions); None when the metric is absent."""
        values = [
            s.value
            for s in self.series
            if s.name == name and (model is None or s.label("model") == model)
        ]
        return sum(values) if values else None

    def mean(self, name: str) -> float | None:
        values = [s.value for s in self.series if s.name == name]
        return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class MetricsSummary:
    """One run's figures from the metrics endpoint; None = the server does not export it."""

    samples: int
    gpu_utilization: float | None  # mean over samples of the mean over GPUs, 0..1
    gpu_power_w: float | None  # mean over samples of the sum over GPUs
    energy_j: float | None  # Δnv_energy_consumption (sum over GPUs)
    inferences: float | None  # Δnv_inference_count for the model
    inferences_per_joule: float | None
    cpu_utilization: float | None  # mean of nv_cpu_utilization, 0..1
    cpu_memory_used_bytes: float | None  # max over samples
    error: str = ""  # why nothing could be scraped, if so
    # Batches the embedded onnxruntime backend ran request by request after the whole batch
    # failed (its custom metric); None where the backend does not export it (a real ORT backend).
    batch_fallbacks: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _delta(first: float | None, last: float | None) -> float | None:
    return None if first is None or last is None else last - first


def summarize_scrapes(scrapes: list[Scrape], model: str, error: str = "") -> MetricsSummary:
    """Pure: the run's figures from the scrapes taken at its start, during it and at its end."""
    if not scrapes:
        return MetricsSummary(0, None, None, None, None, None, None, None, error)
    first, last = scrapes[0], scrapes[-1]
    energy = _delta(first.total("nv_energy_consumption"), last.total("nv_energy_consumption"))
    inferences = _delta(
        first.total("nv_inference_count", model), last.total("nv_inference_count", model)
    )
    memory = [s.total("nv_cpu_memory_used_bytes") for s in scrapes]
    present_memory = [m for m in memory if m is not None]
    return MetricsSummary(
        samples=len(scrapes),
        gpu_utilization=_mean([s.mean("nv_gpu_utilization") for s in scrapes]),
        gpu_power_w=_mean([s.total("nv_gpu_power_usage") for s in scrapes]),
        energy_j=energy,
        inferences=inferences,
        inferences_per_joule=(
            inferences / energy
            if inferences is not None and energy is not None and energy > 0
            else None
        ),
        cpu_utilization=_mean([s.mean("nv_cpu_utilization") for s in scrapes]),
        cpu_memory_used_bytes=max(present_memory) if present_memory else None,
        error=error,
        batch_fallbacks=_delta(
            first.total(BATCH_FALLBACK_METRIC, model), last.total(BATCH_FALLBACK_METRIC, model)
        ),
    )


def _without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """`http://user:pw@host/metrics` -> the URL without them, and them as Basic auth (urllib
    would otherwise take `user:pw@host` for a host and quote it in its error)."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return url, {}
    if user is None and password is None:
        return url, {}
    token = base64.b64encode(f"{unquote(user or '')}:{unquote(password or '')}".encode())
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token.decode()}"}


def fetch(
    url: str,
    timeout_s: float = 2.0,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    url, credentials = _without_credentials(url)
    request = urllib.request.Request(url, headers={**credentials, **(headers or {})})
    with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
        return str(response.read().decode("utf-8", errors="replace"))


def fetcher_for(
    url: str, target_host: str, tls: TlsSettings | None, headers: tuple[Header, ...]
) -> Callable[[str], str]:
    """How to read metrics at `url` beside a target on `target_host` (its host name, no port):
    an https URL with the target's TLS settings (system roots without any), and the target's
    headers only when `url` is on that same host."""
    from loadtest.targets.transport import ssl_context

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return fetch
    context = ssl_context(tls or TlsSettings(), alpn=()) if parts.scheme == "https" else None
    same_host = bool(host) and host == target_host.strip("[]")
    sent = {h.name: h.value.reveal() for h in headers} if same_host else None
    if context is None and not sent:
        return fetch
    return functools.partial(fetch, context=context, headers=sent)


class MetricsSampler:
    """Scrapes `url` at start, every `interval_s` in a daemon thread, and at stop."""

    def __init__(
        self,
        url: str,
        model: str,
        interval_s: float = SAMPLE_INTERVAL_S,
        fetcher: Callable[[str], str] = fetch,
    ) -> None:
        self.url = url
        self.model = model
        self.interval_s = interval_s
        self._fetch = fetcher
        self._scrapes: list[Scrape] = []
        self._error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _scrape(self) -> None:
        try:
            text = self._fetch(self.url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._error = f"cannot read metrics at {redact_url(self.url)}: {exc}"
            return
        self._scrapes.append(Scrape(time.perf_counter_ns(), tuple(parse_metrics(text))))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._scrape()

    def start(self) -> None:
        self._scrape()
        self._thread = threading.Thread(target=self._loop, name="loadtest-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> MetricsSummary:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._scrape()
        return summarize_scrapes(self._scrapes, self.model, "" if self._scrapes else self._error)
