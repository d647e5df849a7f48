"""What `loadtest sweep` may change in a model's Triton configuration, and how a point becomes a
configuration. Pure: no server, no clock.

A point (`Candidate`) has one value per dimension:
- `instances`: instance_group count (set on every group of the config);
- `max_batch_size` (≥ 1: 0 would drop the batch dimension, a different model interface);
- `queue_delay_us`: dynamic batching's max_queue_delay_microseconds, or `off` (no dynamic batcher);
- `preferred_batch_sizes`: dynamic batching's preferred sizes (`none` = Triton's default; sizes
  above a point's max_batch_size are dropped for that point);
- `intra_op_threads`, `inter_op_threads`: the onnxruntime backend's `intra_op_thread_count` /
  `inter_op_thread_count` parameters (0 = onnxruntime's default), only for that backend.
A value of None means "as the loaded configuration has it" (the dimension is not swept).

Each dimension is an ordered list of values, so a point's neighbours are one step up or down one
dimension (sweep_search.py climbs them). The space comes from flags or a TOML file (same
names); what is not given is sized for the model and the host (`default_space`).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from loadtest.errors import SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

INTRA = "intra_op_thread_count"
INTER = "inter_op_thread_count"
THREAD_BACKENDS = ("onnxruntime",)  # backends with the intra/inter thread parameters
OFF = "off"
NONE = "none"
MAX_DEFAULT_BATCH = 128  # Model Analyzer's top power of two
MAX_DEFAULT_INSTANCES = 5  # Model Analyzer sweeps 1–5
BATCH_INPUT_BYTES_CAP = 64 << 20  # default max batches keep one batch's inputs under 64 MiB
DELAYS_US = (0, 100, 500, 1000, 2000, 5000, 10000, 20000)

PreferredSizes = tuple[int, ...]


@dataclass(frozen=True, order=True)
class Candidate:
    """One configuration to measure; None = as the loaded configuration has it."""

    instances: int
    max_batch_size: int
    queue_delay_us: int | None  # None: dynamic batching off
    preferred_batch_sizes: PreferredSizes | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None

    def normal(self) -> Candidate:
        """Without dynamic batching, preferred sizes mean nothing: one point, not several."""
        if self.queue_delay_us is None and self.preferred_batch_sizes is not None:
            return replace(self, preferred_batch_sizes=None)
        return self

    def label(self) -> str:
        parts = [
            f"instances={self.instances}",
            f"max_batch={self.max_batch_size}",
            "dynamic batching off"
            if self.queue_delay_us is None
            else f"delay={self.queue_delay_us}µs",
        ]
        if self.queue_delay_us is not None and self.preferred_batch_sizes is not None:
            sizes = ",".join(map(str, self.preferred_batch_sizes)) or NONE
            parts.append(f"preferred={sizes}")
        if self.intra_op_threads is not None:
            parts.append(f"intra={self.intra_op_threads}")
        if self.inter_op_threads is not None:
            parts.append(f"inter={self.inter_op_threads}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "max_batch_size": self.max_batch_size,
            "dynamic_batching": self.queue_delay_us is not None,
            "queue_delay_us": self.queue_delay_us,
            "preferred_batch_sizes": (
                list(self.preferred_batch_sizes) if self.preferred_batch_sizes is not None else None
            ),
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
        }


DIMENSIONS = tuple(f.name for f in fields(Candidate))


def _order_key(value: object) -> tuple[int, float, tuple[int, ...]]:
    """Ordering inside a dimension: not set / off first, then by size."""
    if value is None:
        return (0, 0.0, ())
    if isinstance(value, tuple):
        return (1, float(len(value)), value)
    assert isinstance(value, int)
    return (1, float(value), ())


@dataclass(frozen=True)
class SearchSpace:
    """An ordered tuple of values per dimension (neighbours are adjacent values)."""

    values: Mapping[str, tuple[Any, ...]]

    def __post_init__(self) -> None:
        for name in DIMENSIONS:
            if not self.values.get(name):
                raise SettingsError(f"sweep dimension {name!r} has no values")

    def axis(self, name: str) -> tuple[Any, ...]:
        return tuple(self.values[name])

    def swept(self) -> tuple[str, ...]:
        """Dimensions with more than one value."""
        return tuple(n for n in DIMENSIONS if len(self.values[n]) > 1)

    def with_point(self, point: Candidate) -> SearchSpace:
        """The space with `point`'s values added where missing (the climb starts from it)."""
        merged: dict[str, tuple[Any, ...]] = {}
        for name in DIMENSIONS:
            axis = list(self.values[name])
            value = getattr(point, name)
            if value not in axis:
                axis.append(value)
            merged[name] = tuple(sorted(axis, key=_order_key))
        return SearchSpace(merged)

    def contains(self, point: Candidate) -> bool:
        return all(getattr(point, n) in self.values[n] for n in DIMENSIONS)

    def points(self) -> Iterator[Candidate]:
        """Every distinct point (normalized: batching off ignores the preferred sizes)."""
        seen: set[Candidate] = set()
        for combo in _product([self.values[n] for n in DIMENSIONS]):
            point = Candidate(**dict(zip(DIMENSIONS, combo, strict=True))).normal()
            if point not in seen:
                seen.add(point)
                yield point

    def grid_size(self) -> int:
        """How many distinct configurations a brute-force grid would measure."""
        size = math.prod(len(self.values[n]) for n in DIMENSIONS)
        if size <= 200_000:
            return sum(1 for _ in self.points())
        return size

    def neighbours(self, point: Candidate, name: str) -> list[tuple[int, Candidate]]:
        """(direction, point) one step down (−1) and up (+1) along `name`, where they exist."""
        axis = self.values[name]
        value = getattr(point, name)
        if value not in axis:
            return []
        index = axis.index(value)
        found = []
        for direction in (-1, 1):
            j = index + direction
            if 0 <= j < len(axis):
                moved = replace(point, **{name: axis[j]}).normal()
                if moved != point.normal():
                    found.append((direction, moved))
        return found


def _product(axes: Sequence[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    if not axes:
        yield ()
        return
    for head in axes[0]:
        for rest in _product(axes[1:]):
            yield (head, *rest)


# --- the loaded configuration ------------------------------------------------------------------


_DTYPE_BYTES = {"BOOL": 1, "INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "FP16": 2, "BF16": 2,
                "INT32": 4, "UINT32": 4, "FP32": 4, "INT64": 8, "UINT64": 8, "FP64": 8}  # fmt: skip


def sample_input_bytes(config: Mapping[str, Any]) -> int:
    """Bytes of one sample's inputs (variable dims as 1; strings as 8 bytes an element)."""
    total = 0
    for tensor in config.get("input") or []:
        kind = str(tensor.get("data_type", "")).removeprefix("TYPE_")
        elements = math.prod(max(1, int(d)) for d in tensor.get("dims") or [])
        total += elements * _DTYPE_BYTES.get(kind, 8)
    return total


def has_thread_parameters(config: Mapping[str, Any]) -> bool:
    backend = str(config.get("backend") or "")
    platform = str(config.get("platform") or "")
    return backend in THREAD_BACKENDS or platform.startswith("onnxruntime")


def _int_parameter(config: Mapping[str, Any], key: str) -> int | None:
    parameter = (config.get("parameters") or {}).get(key)
    if not isinstance(parameter, Mapping):
        return None
    try:
        return int(str(parameter.get("string_value", "")))
    except ValueError:
        return None


def baseline_of(config: Mapping[str, Any]) -> Candidate:
    """The loaded configuration as a point (what the climb starts from)."""
    groups = config.get("instance_group") or []
    batching = config.get("dynamic_batching")
    return Candidate(
        instances=int(groups[0].get("count", 1)) if groups else 1,
        max_batch_size=int(config.get("max_batch_size", 0)),
        queue_delay_us=(
            int(batching.get("max_queue_delay_microseconds", 0) or 0)
            if isinstance(batching, Mapping)
            else None
        ),
        intra_op_threads=_int_parameter(config, INTRA) if has_thread_parameters(config) else None,
        inter_op_threads=_int_parameter(config, INTER) if has_thread_parameters(config) else None,
    )


def apply_candidate(config: Mapping[str, Any], point: Candidate) -> dict[str, Any]:
    """A complete configuration: `config` with the point's values (a Triton override replaces the
    whole configuration, so nothing may be left out)."""
    new = copy.deepcopy(dict(config))
    groups = new.get("instance_group") or [{"kind": "KIND_CPU"}]
    for group in groups:
        group["count"] = point.instances
    new["instance_group"] = groups
    new["max_batch_size"] = point.max_batch_size
    if point.queue_delay_us is None:
        new.pop("dynamic_batching", None)
    else:
        batching = dict(new.get("dynamic_batching") or {})
        batching["max_queue_delay_microseconds"] = point.queue_delay_us
        preferred = (
            batching.get("preferred_batch_size") or []
            if point.preferred_batch_sizes is None
            else list(point.preferred_batch_sizes)
        )
        kept = [int(size) for size in preferred if 0 < int(size) <= point.max_batch_size]
        if kept:
            batching["preferred_batch_size"] = kept
        else:
            batching.pop("preferred_batch_size", None)
        new["dynamic_batching"] = batching
    parameters = dict(new.get("parameters") or {})
    for key, value in ((INTRA, point.intra_op_threads), (INTER, point.inter_op_threads)):
        if value is not None:
            parameters[key] = {"string_value": str(value)}
    new["parameters"] = parameters
    return new


# --- building the space: defaults, flags, a TOML file ------------------------------------------


def _powers_of_two(top: int) -> list[int]:
    return [1 << k for k in range(top.bit_length()) if 1 << k <= top]


def default_space(
    config: Mapping[str, Any], bound_ns: int, cores: int, sample_input_bytes: int
) -> dict[str, tuple[Any, ...]]:
    """Sized for the model and the host: instances 1..cores (2 to 5), max_batch_size the powers
    of two up to 128 whose batch of inputs stays under 64 MiB, queue delays up to a quarter of
    the latency bound (and off), intra-op threads the powers of two up to the cores."""
    base = baseline_of(config)
    top_instances = min(MAX_DEFAULT_INSTANCES, max(2, cores))
    space: dict[str, tuple[Any, ...]] = {
        "instances": tuple(range(1, top_instances + 1)),
        "preferred_batch_sizes": (None,),
        "inter_op_threads": (base.inter_op_threads,),
    }
    if base.max_batch_size > 0:
        cap = max(1, BATCH_INPUT_BYTES_CAP // max(1, sample_input_bytes))
        space["max_batch_size"] = tuple(_powers_of_two(min(MAX_DEFAULT_BATCH, cap)))
        delays = [d for d in DELAYS_US if d * 1000 <= bound_ns / 4]
        space["queue_delay_us"] = (None, *delays)
    else:
        space["max_batch_size"] = (0,)
        space["queue_delay_us"] = (base.queue_delay_us,)
    if has_thread_parameters(config):
        space["intra_op_threads"] = tuple(_powers_of_two(max(1, cores)))
    else:
        space["intra_op_threads"] = (None,)
    return space


def _int_value(name: str, value: object, low: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SettingsError(f"sweep {name}: {value!r} is not a whole number")
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"sweep {name}: {value!r} is not a whole number") from None
    if number < low:
        raise SettingsError(f"sweep {name}: {number} is impossible ({why})")
    return number


def _delay_value(value: object) -> int | None:
    if isinstance(value, str) and value.strip().lower() == OFF:
        return None
    if value is False:
        return None
    return _int_value("queue_delay_us", value, 0, "a delay is ≥ 0 µs; 'off' turns batching off")


def _preferred_value(value: object) -> PreferredSizes:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in (NONE, ""):
            return ()
        items: Iterable[object] = [part for part in text.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise SettingsError(
            f"sweep preferred_batch_sizes: {value!r} is not a list of sizes or 'none'"
        )
    sizes = [_int_value("preferred_batch_sizes", v, 1, "a batch size is ≥ 1") for v in items]
    return tuple(sorted(set(sizes)))


PARSERS = {
    "instances": lambda v: _int_value("instances", v, 1, "a model needs ≥ 1 instance"),
    "max_batch_size": lambda v: _int_value(
        "max_batch_size",
        v,
        1,
        "≥ 1; 0 would remove the batch dimension; sweep queue_delay_us=off to stop batching",
    ),
    "queue_delay_us": _delay_value,
    "preferred_batch_sizes": _preferred_value,
    "intra_op_threads": lambda v: _int_value("intra_op_threads", v, 0, "0 = backend default"),
    "inter_op_threads": lambda v: _int_value("inter_op_threads", v, 0, "0 = backend default"),
}


def parse_axis(name: str, raw: Sequence[object]) -> tuple[Any, ...]:
    """One dimension's values, checked, deduplicated and ordered."""
    if name not in PARSERS:
        known = ", ".join(DIMENSIONS)
        raise SettingsError(f"unknown sweep parameter {name!r} (known: {known})")
    if not raw:
        raise SettingsError(f"sweep {name}: no values given")
    values = {PARSERS[name](value) for value in raw}
    return tuple(sorted(values, key=_order_key))


def parse_flag(name: str, text: str) -> tuple[Any, ...]:
    """'1,2,4' (or 'off,0,100'; preferred sizes: 'none;4,8', alternatives split by ';')."""
    separator = ";" if name == "preferred_batch_sizes" else ","
    parts = [part.strip() for part in text.split(separator) if part.strip()]
    return parse_axis(name, parts)


def read_space_file(path: Path) -> dict[str, tuple[Any, ...]]:
    """A TOML file of `name = [values]` (the same names as the flags, with underscores)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"--space {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--space {path}: not TOML ({exc})") from None
    space: dict[str, tuple[Any, ...]] = {}
    for name, raw in data.items():
        values = raw if isinstance(raw, list) else [raw]
        space[name] = parse_axis(name, values)
    return space


def build_space(
    config: Mapping[str, Any],
    given: Mapping[str, tuple[Any, ...]],
    bound_ns: int,
    cores: int,
    sample_input_bytes: int,
) -> tuple[SearchSpace, Candidate]:
    """The space to climb (defaults, overridden by what was given) and the loaded configuration's
    point, which is part of it. SettingsError for dimensions this model cannot have."""
    base = baseline_of(config)
    if config.get("sequence_batching") or config.get("ensemble_scheduling"):
        raise SettingsError(
            f"model {config.get('name')!r} uses the sequence batcher or is an ensemble: "
            "sweep changes the default and dynamic batchers only"
        )
    batching_given = [n for n in ("max_batch_size", "queue_delay_us") if n in given]
    if base.max_batch_size == 0 and batching_given:
        raise SettingsError(
            f"model {config.get('name')!r} has max_batch_size 0 (no batch dimension): "
            f"{', '.join(batching_given)} cannot be swept for it"
        )
    threads_given = [n for n in ("intra_op_threads", "inter_op_threads") if n in given]
    if threads_given and not has_thread_parameters(config):
        backend = config.get("backend") or config.get("platform") or "unknown"
        raise SettingsError(
            f"backend {backend!r} has no thread parameters ({', '.join(threads_given)} exist "
            "for the onnxruntime backend only)"
        )
    space = dict(default_space(config, bound_ns, cores, sample_input_bytes))
    space.update(given)
    return SearchSpace(space).with_point(base), base
