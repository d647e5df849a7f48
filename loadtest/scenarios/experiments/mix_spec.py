"""A mix of models, as asked: MIX.toml or repeated `--model NAME[@URL]:QPS[:BOUND_MS]`, validated.

Each entry names a model, where it is served (its own URL, or the default one: one Triton per MIG
slice, per node, or one for all), its protocol and its scenario: Server with its own rate (or a
weight of a total rate) and bound, or Offline. Everything is checked here, before anything
connects: a problem is one line naming the entry (`mix entry 'bert': ...`), exit code 1 for a file
and 2 for a malformed `--model` flag (commands/mix.py turns the latter into a usage error).

The file (TOML; keys at the top are defaults for every entry):

    duration = 10            # seconds, each run's minimum (default 60)
    seed = 0                 # the mix's seed: each entry's schedule seed is derived from it
    total_qps = 60           # with weights: split over the Server entries by weight
    [[model]]
    model = "tiny"           # required; `name` defaults to it (names must be unique)
    weight = 3               # or qps = 45 (never both kinds in one file)
    bound_ms = 10            # default: the suite model's MLPerf bound
    arrival = "gamma:2"      # a Server entry's law (core/arrivals.law_named; default poisson)
    [[model]]
    model = "dlrm_small"
    scenario = "Offline"     # a closed loop beside the others (expected_qps, max_in_flight)
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadtest.core.arrivals import POISSON, law_named
from loadtest.core.mix_schedule import Stream, entry_seed
from loadtest.core.settings import (
    DEFAULT_MIN_DURATION_NS,
    NS_PER_MS,
    NS_PER_S,
    OfflineSettings,
    Protocol,
    Scenario,
    ServerSettings,
)
from loadtest.errors import SettingsError
from loadtest.models import SUITE
from loadtest.scenarios.target_flags import AccessFlags, GrpcClientFlags, TargetFlags
from loadtest.server.deployment import EmbeddedMode

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project's CI runs 3.11
    import tomli as tomllib

EntrySettings = ServerSettings | OfflineSettings

TOP_KEYS = {
    "duration",
    "seed",
    "total_qps",
    "percentile",
    "protocol",
    "url",
    "samples",
    "sample_seed",
    "min_queries",
    "max_in_flight",
    "timeout",
    "model",
}
ENTRY_KEYS = {
    "name",
    "model",
    "url",
    "protocol",
    "model_version",
    "scenario",
    "qps",
    "weight",
    "bound_ms",
    "percentile",
    "input_data",
    "shape",
    "samples",
    "sample_seed",
    "min_queries",
    "expected_qps",
    "max_in_flight",
    "arrival",
}


@dataclass(frozen=True)
class MixDefaults:
    """What the command line gives every entry (a file's top-level keys override these)."""

    min_duration_ns: int = DEFAULT_MIN_DURATION_NS
    seed: int = 0
    total_qps: float | None = None
    percentile: float = 0.99
    protocol: Protocol = Protocol.GRPC
    url: str | None = None
    samples: int = 64
    sample_seed: int = 1
    min_queries: int = 100
    max_in_flight: int = 16
    timeout_s: float = 30.0
    max_duration_ns: int = 0
    late_threshold_ns: int = 1_000_000
    keep_records: bool = False
    embedded: EmbeddedMode = EmbeddedMode.AUTO
    repository: Path = Path("model_repository")
    access: AccessFlags = field(default_factory=AccessFlags)
    grpc: GrpcClientFlags = field(default_factory=GrpcClientFlags)  # every gRPC entry's client
    ignore_eos: bool = False  # every OpenAI entry's


@dataclass(frozen=True)
class MixEntry:
    """One entry: its name, what it measures (flags) and how it is played and judged."""

    name: str
    flags: TargetFlags
    settings: EntrySettings
    weight: float | None = None  # as given (None when the entry gave a rate or is Offline)
    url_given: bool = False  # its own URL (measured there) or the default (embedded if needed)

    @property
    def scenario(self) -> Scenario:
        return self.settings.scenario

    @property
    def model(self) -> str:
        return self.flags.model


@dataclass(frozen=True)
class MixSpec:
    """The validated mix: entries in the order given, plus the mix's own settings."""

    entries: tuple[MixEntry, ...]
    seed: int
    min_duration_ns: int
    total_qps: float | None  # the total a weighted mix was split from (None: rates were given)
    source: str  # the file, or "--model flags"
    max_duration_ns: int = 0

    @property
    def server_entries(self) -> tuple[MixEntry, ...]:
        return tuple(e for e in self.entries if isinstance(e.settings, ServerSettings))

    @property
    def server_qps(self) -> float:
        return sum(self.rates().values())

    def rates(self) -> dict[str, float]:
        """Each Server entry's rate, by name."""
        return {
            e.name: e.settings.qps for e in self.entries if isinstance(e.settings, ServerSettings)
        }

    def shares(self) -> dict[str, float]:
        """Each Server entry's share of the total Server rate (weights fixed when scaling)."""
        rates = self.rates()
        total = sum(rates.values())
        return {name: rate / total for name, rate in rates.items()}

    def at_total(self, total_qps: float) -> MixSpec:
        """The same mix with every Server rate scaled so they sum to `total_qps` (find-peak)."""
        shares = self.shares()
        entries = tuple(
            replace(e, settings=replace(e.settings, qps=total_qps * shares[e.name]))
            if isinstance(e.settings, ServerSettings)
            else e
            for e in self.entries
        )
        return replace(self, entries=entries, total_qps=total_qps)

    def subset(self, names: list[str]) -> MixSpec:
        return replace(self, entries=tuple(e for e in self.entries if e.name in names))

    def stream(self, entry: MixEntry, library_size: int) -> Stream:
        settings = entry.settings
        assert isinstance(settings, ServerSettings)
        return Stream(settings.arrivals, library_size, settings.sample_seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seed": self.seed,
            "min_duration_ns": self.min_duration_ns,
            "max_duration_ns": self.max_duration_ns,
            "total_qps": self.total_qps,
            "server_qps": self.server_qps,
            "entries": [
                {
                    "name": e.name,
                    "model": e.model,
                    "scenario": e.scenario.value,
                    "url_given": e.url_given,
                    "weight": e.weight,
                    "qps": getattr(e.settings, "qps", None),
                    "target_latency_ns": getattr(e.settings, "target_latency_ns", None),
                }
                for e in self.entries
            ],
        }


# --- parsing ----------------------------------------------------------------------------------

_FLAG = re.compile(
    r"^(?P<name>[^@:]+)(?:@(?P<url>fake://[^:]*|.+?:\d+))?:(?P<qps>[^:]+)(?::(?P<bound>[^:]+))?$"
)


def parse_model_flag(text: str) -> dict[str, Any]:
    """`NAME[@URL]:QPS[:BOUND_MS]` -> an entry table; QPS may be `offline` (an Offline entry).

    A URL here must end in its port (`host:8001`, `grpc://host:8001`), so the fields after it are
    never mistaken for one (or be a `fake://` URL, which has no colon after its scheme).
    SettingsError (one line) when the text does not fit.
    """
    match = _FLAG.match(text.strip())
    if match is None:
        raise SettingsError(
            f"--model {text!r} is not NAME[@HOST:PORT]:QPS[:BOUND_MS] (QPS may be 'offline')"
        )
    entry: dict[str, Any] = {"model": match["name"]}
    if match["url"]:
        entry["url"] = match["url"]
    qps = match["qps"]
    if qps.lower() == "offline":
        entry["scenario"] = Scenario.OFFLINE.value
        if match["bound"]:
            raise SettingsError(f"--model {text!r}: an Offline entry has no latency bound")
    else:
        entry["qps"] = _number(qps, f"--model {text!r}: QPS")
    if match["bound"]:
        entry["bound_ms"] = _number(match["bound"], f"--model {text!r}: BOUND_MS")
    return entry


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{what} must be finite, got {text}")
    return value


def read_mix_file(path: Path) -> dict[str, Any]:
    """The TOML document; SettingsError naming the file when it cannot be read or parsed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SettingsError(f"mix file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"mix file {path}: cannot read ({exc})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"mix file {path}: not valid TOML ({exc})") from None


def build_mix(
    document: dict[str, Any], flags: list[dict[str, Any]], defaults: MixDefaults, source: str
) -> MixSpec:
    """Entries from the file's `[[model]]` tables and the `--model` flags, with the file's
    top-level keys over the command line's defaults; every check, one line naming the entry."""
    unknown = sorted(set(document) - TOP_KEYS)
    if unknown:
        raise SettingsError(f"{source}: unknown key(s) {', '.join(unknown)}")
    tables = document.get("model", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SettingsError(f"{source}: 'model' must be a list of [[model]] tables")
    defaults = _apply_top(document, defaults, source)
    raw = [*tables, *flags]
    if not raw:
        raise SettingsError(f"{source}: no entries (add [[model]] tables or --model flags)")
    names: list[str] = []
    for index, table in enumerate(raw):
        label = _label(table, index)
        extra = sorted(set(table) - ENTRY_KEYS)
        if extra:
            raise SettingsError(f"mix entry {label}: unknown key(s) {', '.join(extra)}")
        if not isinstance(table.get("model"), str) or not table["model"]:
            raise SettingsError(f"mix entry {label}: 'model' (a model name) is required")
        name = str(table.get("name", table["model"]))
        if name in names:
            raise SettingsError(
                f"mix entry {name!r}: the name is used twice (give each entry its own 'name')"
            )
        names.append(name)
    kinds = _rate_kinds(raw, names, defaults.total_qps)
    weights = {n: float(t["weight"]) for n, t in zip(names, raw, strict=True) if "weight" in t}
    weight_sum = sum(weights.values())
    entries = []
    for index, (name, table) in enumerate(zip(names, raw, strict=True)):
        qps = None
        if kinds == "weight" and name in weights:
            assert defaults.total_qps is not None
            qps = defaults.total_qps * weights[name] / weight_sum
        try:
            entries.append(_entry(name, index, table, defaults, qps, weights.get(name)))
        except SettingsError as exc:
            raise SettingsError(f"mix entry {name!r}: {exc}") from None
    return MixSpec(
        entries=tuple(entries),
        seed=defaults.seed,
        min_duration_ns=defaults.min_duration_ns,
        total_qps=defaults.total_qps if kinds == "weight" else None,
        source=source,
        max_duration_ns=defaults.max_duration_ns,
    )


def _label(table: dict[str, Any], index: int) -> str:
    name = table.get("name", table.get("model"))
    return repr(name) if isinstance(name, str) and name else f"#{index + 1}"


def _apply_top(document: dict[str, Any], defaults: MixDefaults, source: str) -> MixDefaults:
    changes: dict[str, Any] = {}
    try:
        if "duration" in document:
            duration = _positive(document["duration"], "duration")
            changes["min_duration_ns"] = int(duration * NS_PER_S)
        if "seed" in document:
            changes["seed"] = _count(document["seed"], "seed", minimum=0)
        if "total_qps" in document:
            changes["total_qps"] = _positive(document["total_qps"], "total_qps")
        if "percentile" in document:
            changes["percentile"] = _percentile(document["percentile"])
        if "protocol" in document:
            changes["protocol"] = _protocol(document["protocol"])
        if "url" in document:
            changes["url"] = _text(document["url"], "url")
        for key in ("samples", "sample_seed", "min_queries", "max_in_flight"):
            if key in document:
                minimum = 0 if key == "sample_seed" else 1
                changes[key] = _count(document[key], key, minimum=minimum)
        if "timeout" in document:
            changes["timeout_s"] = _positive(document["timeout"], "timeout")
    except SettingsError as exc:
        raise SettingsError(f"{source}: {exc}") from None
    if defaults.total_qps is not None:  # --total-qps on the command line wins over the file
        changes.pop("total_qps", None)
    return replace(defaults, **changes)


def _rate_kinds(raw: list[dict[str, Any]], names: list[str], total: float | None) -> str:
    """'rate' or 'weight': one kind for every Server entry; mixing them is refused."""
    kind_of: dict[str, str] = {}
    for name, table in zip(names, raw, strict=True):
        offline = str(table.get("scenario", "Server")).lower() == "offline"
        has_qps, has_weight = "qps" in table, "weight" in table
        if offline:
            if has_qps or has_weight:
                raise SettingsError(
                    f"mix entry {name!r}: an Offline entry takes no qps or weight (it runs a "
                    "closed loop; use expected_qps and max_in_flight)"
                )
            continue
        if has_qps and has_weight:
            raise SettingsError(f"mix entry {name!r}: give qps or weight, not both")
        if not has_qps and not has_weight:
            raise SettingsError(f"mix entry {name!r}: a Server entry needs qps or weight")
        kind_of[name] = "weight" if has_weight else "rate"
    kinds = set(kind_of.values())
    if len(kinds) > 1:
        first = next(iter(kind_of.values()))
        odd = next(n for n, k in kind_of.items() if k != first)
        raise SettingsError(
            f"mix entry {odd!r}: weights and rates are mixed in one mix; give every Server entry "
            "a qps, or every one a weight and a total_qps"
        )
    kind = kinds.pop() if kinds else "rate"
    if kind == "weight" and total is None:
        weighted = next(iter(kind_of))
        raise SettingsError(
            f"mix entry {weighted!r}: weights need a total rate (total_qps in the file, or "
            "--total-qps)"
        )
    return kind


def _entry(
    name: str,
    index: int,
    table: dict[str, Any],
    defaults: MixDefaults,
    weighted_qps: float | None,
    weight: float | None,
) -> MixEntry:
    model = str(table["model"])
    scenario_text = str(table.get("scenario", "Server")).lower()
    if scenario_text not in ("server", "offline"):
        raise SettingsError(f"scenario must be Server or Offline, got {table['scenario']!r}")
    url = table.get("url", defaults.url)
    if url is not None:
        url = _text(url, "url")
    shapes = _shapes(table.get("shape", []))
    input_data = Path(_text(table["input_data"], "input_data")) if "input_data" in table else None
    if input_data is not None and not input_data.is_file():
        raise SettingsError(f"input_data {input_data}: no such file")
    samples = _count(table.get("samples", defaults.samples), "samples", minimum=1)
    sample_seed = _count(table.get("sample_seed", defaults.sample_seed), "sample_seed", minimum=0)
    flags = TargetFlags(
        model=model,
        url=url,
        protocol=_protocol(table.get("protocol", defaults.protocol)),
        model_version=_text(table.get("model_version", ""), "model_version", empty=True),
        timeout_s=defaults.timeout_s,
        embedded=defaults.embedded,
        repository=defaults.repository,
        input_data=input_data,
        shapes=shapes,
        access=defaults.access,
        grpc=defaults.grpc,
        ignore_eos=defaults.ignore_eos,
    )
    flags.target_settings()  # the URL, protocol and TLS fit together (one line if not)
    settings: EntrySettings
    if scenario_text == "offline":
        if "bound_ms" in table:
            raise SettingsError("an Offline entry has no latency bound (bound_ms)")
        if "arrival" in table:
            raise SettingsError("an Offline entry has no arrival law (arrival): all are due at 0")
        expected = table.get("expected_qps", "auto")
        settings = OfflineSettings(
            expected_qps=None if expected == "auto" else _positive(expected, "expected_qps"),
            min_duration_ns=defaults.min_duration_ns,
            max_in_flight=_count(
                table.get("max_in_flight", defaults.max_in_flight), "max_in_flight", minimum=1
            ),
            sample_seed=sample_seed,
            sample_count=samples,
            max_duration_ns=defaults.max_duration_ns,
            keep_records=defaults.keep_records,
            late_threshold_ns=defaults.late_threshold_ns,
        )
    else:
        for key in ("expected_qps", "max_in_flight"):
            if key in table:
                raise SettingsError(f'{key} is for Offline entries (scenario = "Offline")')
        qps = weighted_qps if weighted_qps is not None else _positive(table["qps"], "qps")
        if weight is not None and not weight > 0:
            raise SettingsError(f"weight must be > 0, got {weight:g}")
        settings = ServerSettings(
            qps=qps,
            target_latency_ns=_bound_ns(model, table.get("bound_ms")),
            percentile=_percentile(table["percentile"])
            if "percentile" in table
            else defaults.percentile,
            min_duration_ns=defaults.min_duration_ns,
            min_query_count=_count(
                table.get("min_queries", defaults.min_queries), "min_queries", minimum=1
            ),
            max_duration_ns=defaults.max_duration_ns,
            schedule_seed=entry_seed(defaults.seed, index),
            sample_seed=sample_seed,
            sample_count=samples,
            late_threshold_ns=defaults.late_threshold_ns,
            keep_records=defaults.keep_records,
            arrival_law=law_named(_text(table["arrival"], "arrival"))
            if "arrival" in table
            else POISSON,
        )
    return MixEntry(name, flags, settings, weight, url_given=url is not None)


def _bound_ns(model: str, given_ms: Any) -> int:
    if given_ms is not None:
        return int(_positive(given_ms, "bound_ms") * NS_PER_MS)
    bound = SUITE[model].target_latency_ns if model in SUITE else None
    if bound is not None:
        return bound
    if model in SUITE:
        raise SettingsError(
            f"model {model!r} has no MLPerf Server bound (MLPerf runs it Offline and "
            'SingleStream only): give bound_ms, or scenario = "Offline"'
        )
    raise SettingsError(
        f"model {model!r} is not in the benchmark suite, so it has no MLPerf bound: give bound_ms"
    )


def _positive(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value) or not value > 0:
        raise SettingsError(f"{key} must be > 0, got {value!r}")
    return float(value)


def _count(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingsError(f"{key} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _percentile(value: Any) -> float:
    number = _positive(value, "percentile")
    if not 0 < number < 100:
        raise SettingsError(f"percentile must be in (0, 100), got {value!r}")
    return number / 100


def _protocol(value: Any) -> Protocol:
    try:
        return Protocol(str(getattr(value, "value", value)).lower())
    except ValueError:
        names = ", ".join(p.value for p in Protocol)
        raise SettingsError(f"protocol must be one of {names}, got {value!r}") from None


def _text(value: Any, key: str, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise SettingsError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _shapes(value: Any) -> dict[str, tuple[int, ...]]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise SettingsError(f"shape must be 'NAME:D1,D2' or a list of them, got {value!r}")
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, _, dims = str(item).partition(":")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise SettingsError(f"shape {item!r} is not NAME:D1,D2,...") from None
        if not name or not shapes[name]:
            raise SettingsError(f"shape {item!r} is not NAME:D1,D2,...")
    return shapes


__all__ = [
    "MixDefaults",
    "MixEntry",
    "MixSpec",
    "build_mix",
    "parse_model_flag",
    "read_mix_file",
]
