"""BurstGPT's CSV trace (HPMLL/BurstGPT, README "Schema"): `Timestamp` in seconds from 0:00:00 on
the first day, `Model` (ChatGPT or GPT-4), `Request tokens`, `Response tokens`, `Total tokens`,
`Log Type` (Conversation log or API log).

The times are taken from the first row (a file starts days into the collection); the model and
both lengths are carried on each query. Failed requests (`Response tokens` 0) are replayed like
the others: the `*_without_fails_*` files leave them out.
"""

from __future__ import annotations

from pathlib import Path

from loadtest.core.trace import Trace
from loadtest.engine.traces.common import counts, finish, floats, to_ns
from loadtest.engine.traces.table import read_csv

TIME, MODEL, INPUT, OUTPUT = "Timestamp", "Model", "Request tokens", "Response tokens"
HEADER = (TIME, INPUT, OUTPUT)  # what tells the format (Model is read when present)


def read_burstgpt(path: Path) -> Trace:
    _, columns = read_csv(path, (TIME, MODEL, INPUT, OUTPUT), required=HEADER)
    lines = columns.lines
    times = to_ns(path, floats(path, columns[TIME], lines, TIME), "s", lines, TIME)
    models = [str(m).strip() for m in columns[MODEL]] if MODEL in columns else None
    return finish(
        path,
        times,
        f"BurstGPT trace {path.name}",
        input_tokens=counts(path, columns[INPUT], lines, INPUT),
        output_tokens=counts(path, columns[OUTPUT], lines, OUTPUT),
        models=models,
    )
