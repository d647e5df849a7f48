"""Read a result JSON back: check it is a loadtest result this version can read; say what kind.

Four kinds of file reach `loadtest report`, `export` and `diff`:
- a **run** (`schema` "loadtest.result", one scenario run: settings, summary, verdict, optionally
  the per-query records as columns);
- a **find-peak** / sweep (`"kind": "find-peak"` or a `"probes"` list of {qps, p99_ns, valid});
- a **compare** (`"kind": "compare"` with `"rows"`, one per target);
- a **sweep** (`"kind": "sweep"` with `"points"`, one per configuration measured).
- a **mix** (`"kind": "mix"` with `"entries"`, each holding a run result together and alone).
Sweeps and compares are written by other commands; this reader only insists on what it renders
and leaves every other field alone, so those writers can grow. Anything unreadable, truncated, of
another `schema_version`, or not a loadtest result at all raises ResultFileError with one line
naming the file and the problem, never a traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.core.json_depth import JsonTooDeep, loads_bounded
from loadtest.core.records import Records
from loadtest.errors import ResultFileError

SCHEMA_PREFIX = "loadtest."
READABLE_SCHEMA_VERSION = 1

RUN = "run"
FIND_PEAK = "find-peak"
COMPARE = "compare"
SWEEP = "sweep"  # `loadtest sweep`: configurations, each with a peak ("points")
MIX = "mix"
FIND_PEAK_NAMES = frozenset({"find-peak", "find_peak", "findpeak"})


@dataclass(frozen=True, eq=False)
class ResultFile:
    """One parsed result: `label` names it in plots and tables; `data` is the JSON as read."""

    label: str
    kind: str  # RUN, FIND_PEAK, COMPARE or SWEEP
    data: dict[str, Any]

    @property
    def scenario(self) -> str:
        return str(self.data.get("scenario") or self.data.get("kind") or self.kind)

    @property
    def has_records(self) -> bool:
        records = self.data.get("records")
        return isinstance(records, dict) and isinstance(records.get("columns"), dict)

    def records(self) -> Records | None:
        """The per-query records, or None when the run was written without --records."""
        if not self.has_records:
            return None
        raw = self.data["records"]
        try:
            return Records.from_columns(
                raw["columns"], raw.get("error_kinds", []), int(raw.get("samples_per_query", 1))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultFileError(f"{self.label}: malformed per-query records ({exc})") from None

    @property
    def summary(self) -> dict[str, Any]:
        summary = self.data.get("summary")
        return summary if isinstance(summary, dict) else {}


def label_for(path: Path) -> str:
    """'results/2025-run/result.json' -> '2025-run'; 'a.json' -> 'a'."""
    if path.stem == "result" and path.parent.name:
        return path.parent.name
    return path.stem


def classify(data: Any, where: str) -> str:
    """The file's kind, or ResultFileError when it is not a loadtest result we can read."""
    if not isinstance(data, dict):
        raise ResultFileError(f"{where}: not a loadtest result (the JSON is not an object)")
    schema = data.get("schema")
    kind = str(data.get("kind") or data.get("scenario") or "").lower()
    recognisable = (
        kind in (COMPARE, SWEEP) or kind in FIND_PEAK_NAMES or "probes" in data or "rows" in data
    )
    if schema is None and not recognisable:
        raise ResultFileError(f"{where}: not a loadtest result (no 'schema' field)")
    if schema is not None and not str(schema).startswith(SCHEMA_PREFIX):
        raise ResultFileError(f"{where}: not a loadtest result (schema {schema!r})")
    version = data.get("schema_version", READABLE_SCHEMA_VERSION)
    if version != READABLE_SCHEMA_VERSION:
        raise ResultFileError(
            f"{where}: written with schema_version {version!r}; this loadtest reads version "
            f"{READABLE_SCHEMA_VERSION} only (use the loadtest version that wrote it)"
        )
    if kind == MIX:
        if not isinstance(data.get("entries"), list):
            raise ResultFileError(f"{where}: a mix result needs an 'entries' list")
        return MIX
    if kind == COMPARE or "rows" in data:
        if not isinstance(data.get("rows"), list):
            raise ResultFileError(f"{where}: a compare result needs a 'rows' list")
        return COMPARE
    if kind == SWEEP and "points" in data:
        if not isinstance(data.get("points"), list):
            raise ResultFileError(f"{where}: a sweep result needs a 'points' list")
        return SWEEP
    if kind in FIND_PEAK_NAMES or kind == SWEEP or "probes" in data:
        if not isinstance(data.get("probes"), list):
            raise ResultFileError(f"{where}: a find-peak result needs a 'probes' list")
        return FIND_PEAK
    for key in ("scenario", "summary", "verdict"):
        if key not in data:
            raise ResultFileError(f"{where}: not a complete loadtest result (no {key!r})")
    if not isinstance(data["summary"], dict) or not isinstance(
        data["summary"].get("latency"), dict
    ):
        raise ResultFileError(f"{where}: not a complete loadtest result (malformed 'summary')")
    return RUN


NUMBER_SUFFIXES = ("_ns", "_qps", "_ms", "_s")
TEXT_ONLY = frozenset({"records", "origins", "definitions"})


def check_numbers(data: Any, where: str, path: str = "") -> None:
    """Every value under a key named for a unit (p99_ns, peak_qps, ...) is a finite number or
    null: a string or NaN there was read as if measured, and diff dropped the row (#26). The
    per-query records (columns of integers, checked by Records) are not walked, nor the texts
    that say what each figure is (`origins` of the token figures, `definitions` of goodput),
    whose keys name the figure they describe."""
    if isinstance(data, list):
        for i, item in enumerate(data):
            check_numbers(item, where, f"{path}[{i}]")
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if key in TEXT_ONLY:
            continue
        at = f"{path}.{key}" if path else str(key)
        if str(key).endswith(NUMBER_SUFFIXES) and not isinstance(value, (dict, list)):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and not (number and math.isfinite(value)):
                raise ResultFileError(f"{where}: {at} is {value!r}, not a finite number")
        check_numbers(value, where, at)


def from_data(data: Any, label: str) -> ResultFile:
    """A ResultFile from an in-memory JSON value (e.g. RunReport.to_json())."""
    return ResultFile(label=label, kind=classify(data, label), data=data)


def load_result(path: Path, label: str | None = None) -> ResultFile:
    """Read and check one result file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot read ({exc})") from None
    try:
        data = loads_bounded(text)
    except JsonTooDeep as exc:
        raise ResultFileError(f"{path}: not a loadtest result ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ResultFileError(
            f"{path}: not valid JSON (truncated or corrupt? {exc.msg} at line {exc.lineno} "
            f"column {exc.colno})"
        ) from None
    kind = classify(data, str(path))
    check_numbers(data, str(path))
    return ResultFile(label=label or label_for(path), kind=kind, data=data)


def load_results(paths: list[Path]) -> list[ResultFile]:
    """Several files, with labels made unique ('run', 'run (2)', ...)."""
    loaded: list[ResultFile] = []
    seen: dict[str, int] = {}
    for path in paths:
        base = label_for(path)
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base} ({seen[base]})"
        loaded.append(load_result(path, label))
    return loaded
