"""loadtest's own result.json: the run's scheduled times, so replaying a run plays its schedule
again, bit for bit (and each query's sample with it).

A run written with `--records` holds every query's `scheduled_ns` and `sample_index` (report/
results.py writes them as columns, sorted by due time; the reading side is report/resultfile.py,
one layer above, so the few fields needed are read here directly). Without records, the
schedule is drawn again from the settings, which is exact: the arrival law, the rate, the
minimums and the two seeds are all in result.json, and schedules are seeded (core/schedule.py).
The times keep the run's own origin (the run's start), not the first query's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.core.arrivals import (
    CONSTANT,
    POISSON,
    ArrivalLaw,
    Gamma,
    RenewalLaw,
    Timestamps,
)
from loadtest.core.schedule import schedule_of
from loadtest.core.stages import RateProfile, Stage, Staged
from loadtest.core.trace import Trace, TraceRows
from loadtest.engine.traces.common import finish, in_order, open_text, trace_error
from loadtest.errors import LoadtestError

SCHEMA = "loadtest.result"
READABLE_VERSION = 1


def law_from_written(written: Any) -> ArrivalLaw:
    """The arrival law as result.json's settings write it (report/results.plain of the law);
    an older file without one played Poisson. ValueError/KeyError/TypeError when malformed."""
    if written is None:
        return POISSON
    name = written["name"]
    if name == "poisson":
        return POISSON
    if name == "constant":
        return CONSTANT
    if name == "gamma":
        return Gamma(float(written["cv"]))
    if name == "staged":
        law = law_from_written(written["law"])
        if not isinstance(law, RenewalLaw):
            raise ValueError("a staged law that is not a renewal law")
        stages = tuple(
            Stage(int(s["duration_ns"]), float(s["start_qps"]), float(s["end_qps"]))
            for s in written["profile"]["stages"]
        )
        return Staged(law, RateProfile(stages))
    if name == "timestamps":
        rows = written.get("rows")
        return Timestamps(
            np.asarray(written["times_ns"], dtype=np.int64),
            rows=None if rows is None else TraceRows(**rows),
            source=str(written.get("source", "")),
        )
    raise ValueError(f"unknown arrival law {name!r}")


def _document(path: Path) -> dict[str, Any]:
    with open_text(path) as text:
        try:
            data = json.load(text)
        except json.JSONDecodeError as exc:
            raise trace_error(
                path, "", f"not valid JSON ({exc.msg} at line {exc.lineno}; truncated?)"
            ) from None
        except UnicodeDecodeError as exc:
            raise trace_error(path, "", f"not UTF-8 text ({exc.reason})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise trace_error(path, "", "not a loadtest run result (no schema 'loadtest.result')")
    if data.get("schema_version", READABLE_VERSION) != READABLE_VERSION:
        raise trace_error(
            path, "", f"written with schema_version {data.get('schema_version')!r}; this reads 1"
        )
    if data.get("scenario") != "Server":
        raise trace_error(
            path,
            "",
            f"a {data.get('scenario')} run has no open-loop schedule to replay (Server only)",
        )
    return data


def _from_records(path: Path, columns: Any) -> Trace:
    try:
        times = np.asarray(columns["scheduled_ns"], dtype=np.int64)
        samples = np.asarray(columns["sample_index"], dtype=np.int64)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise trace_error(path, "", f"malformed per-query records ({exc})") from None
    if times.ndim != 1 or times.shape != samples.shape:
        raise trace_error(path, "", "malformed per-query records (columns of other lengths)")
    if len(times) and times[0] < 0:
        raise trace_error(path, "query 0", "a negative scheduled time")
    back = np.flatnonzero(np.diff(times) < 0)
    if len(back):
        k = int(back[0]) + 1
        raise trace_error(path, f"query {k}", "scheduled before the query listed before it")
    return finish(path, times, f"loadtest result {path.name}", sample=samples)


def _from_settings(path: Path, settings: Any) -> Trace:
    try:
        law = law_from_written(settings.get("arrival_law"))
        arrivals = law.arrivals(
            float(settings["qps"]),
            int(settings["min_duration_ns"]),
            int(settings["min_query_count"]),
            int(settings["schedule_seed"]),
        )
        schedule = schedule_of(
            arrivals, int(settings["sample_count"]), int(settings["sample_seed"])
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise trace_error(
            path, "", f"malformed settings, cannot draw its schedule again ({exc!r})"
        ) from None
    except LoadtestError as exc:
        raise trace_error(path, "", f"its settings do not make a schedule ({exc})") from None
    in_order(path, schedule.scheduled_ns, range(len(schedule)), "scheduled time", row="query")
    return finish(
        path,
        schedule.scheduled_ns,
        f"loadtest result {path.name} (drawn again from its settings)",
        sample=schedule.sample_index.astype(np.int64),
    )


def read_loadtest_result(path: Path) -> Trace:
    data = _document(path)
    records = data.get("records")
    if isinstance(records, dict) and isinstance(records.get("columns"), dict):
        return _from_records(path, records["columns"])
    if not isinstance(data.get("settings"), dict):
        raise trace_error(path, "", "has neither per-query records nor settings to replay")
    return _from_settings(path, data["settings"])
