"""Result files -> one self-contained HTML report (plots, verdicts, settings), pure string building.

Why plotly with its JavaScript embedded once (not matplotlib SVG, not a CDN):
- **offline, one file**: plotly.js (~4.8 MB) is inlined once in <head>; every figure is a small JSON
  blob drawn by it, so the file can be mailed, attached to CI artifacts or opened on an air-gapped
  box. No <script src=…>, no web fonts, no MathJax.
- **interactivity matters for latency**: hover shows the exact percentile/latency, zoom finds the
  second where p99 jumped, legend clicks hide runs. Static SVG cannot, and matplotlib would add a
  larger install (with its compiled font/image stack) for less.
- cost: ~5 MB per report and the plotly wheel in the environment; acceptable for a report artifact.
Figures get fixed div ids, and times are formatted from the file's own `created_unix_s`, so the same
inputs give the same bytes (no clock, no random ids).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from plotly.offline import get_plotlyjs

from loadtest.core.units import NS_PER_S, NS_PER_US
from loadtest.report import figures
from loadtest.report.curves import SOURCE_TEXT, best_curve
from loadtest.report.html_blocks import Raw, esc, figure_html, fmt_value, ms, obj, table
from loadtest.report.resultfile import COMPARE, FIND_PEAK, MIX, RUN, SWEEP, ResultFile, from_data
from loadtest.report.token_html import tokens_figures_html, tokens_html
from loadtest.rules.stats import PERCENTILE_METHOD, Timeline, timeline

SPLIT_KEYS = ("split_ns", "split", "server_split", "breakdown", "latency_split")
# The phases of a run's server_side.split (observe.split.ServerSplit.to_dict), in µs, which add up
# to the client's mean latency from send.
RUN_SPLIT_PHASES_US = (
    "queue_us",
    "compute_input_us",
    "compute_infer_us",
    "compute_output_us",
    "residual_us",
    "client_network_us",
)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1320px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.valid{color:#1a7f37;font-weight:600}.invalid{color:#c62828;font-weight:600}
.pass{color:#1a7f37}.fail{color:#c62828}
.banner{background:#fff4e5;border-left:5px solid #f57c00;padding:8px 12px;margin:8px 0}
.note{color:#555;font-size:13px}.figure{margin:12px 0 24px;border:1px solid #eee}
details{margin:6px 0 12px}code{background:#f4f4f4;padding:1px 4px}
"""


LIST_SHOWN = 12  # a longer list in a result file is shown by its length and first values


def stages_html(stages: Any) -> str:
    """--stages: each stage's offered and carried rate, latency and own verdict ("" if none)."""
    rows = []
    for stage in stages if isinstance(stages, list) else []:
        stage = obj(stage)
        percentiles = obj(stage.get("percentiles_ns"))
        judged = stage.get("latency_ns")
        rows.append(
            [
                stage.get("number", ""),
                stage.get("spec", ""),
                fmt_value("offered_qps", stage.get("offered_qps")),
                stage.get("scheduled", ""),
                fmt_value("completed_qps", stage.get("completed_qps")),
                ms(percentiles.get("p50")),
                ms(percentiles.get("p99")),
                "∞" if judged is None and stage.get("scheduled") else ms(judged),
                Raw(
                    '<span class="pass">yes</span>'
                    if stage.get("met")
                    else '<span class="fail">no</span>'
                ),
            ]
        )
    if not rows:
        return ""
    return (
        "<h3>Stages</h3>"
        + table(
            [
                "#",
                "stage",
                "offered QPS",
                "scheduled",
                "completed QPS",
                "p50",
                "p99",
                "judged percentile",
                "met the bound",
            ],
            rows,
            numeric=2,
        )
        + '<p class="note">Each stage is judged on the queries scheduled in it, failed or '
        "unanswered ones counted as over the bound; the run is VALID only if every stage is. "
        "The timeline below shows the offered (scheduled) rate beside the completed one.</p>"
    )


def key_values(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> (dotted key, shown value) rows; lists are shown inline."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(key_values(value, f"{name}."))
        elif isinstance(value, list) and len(value) > LIST_SHOWN:
            # e.g. a replayed trace's times in the settings: its length and its first values
            head = ", ".join(str(v) for v in value[:LIST_SHOWN])
            rows.append((name, f"{len(value):,} values: {head}, …"))
        elif isinstance(value, list):
            rows.append((name, ", ".join(str(v) for v in value) or "—"))
        else:
            rows.append((name, fmt_value(str(key), value)))
    return rows


def utc(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


# --- runs --------------------------------------------------------------------------------------


def run_series(runs: Sequence[ResultFile]) -> list[figures.RunSeries]:
    series = []
    for index, run in enumerate(runs):
        records = run.records()
        latencies = records.latency_from_scheduled_ns() if records is not None else None
        line = timeline(records, NS_PER_S) if records is not None and len(records) else None
        written = run.data.get("timeline")
        if line is None and isinstance(written, dict):
            line = Timeline.from_dict(written)  # every run since #19 writes it, records or not
        series.append(
            figures.RunSeries(
                label=run.label,
                index=index,
                curve=best_curve(run.summary, latencies),
                timeline=line,
                client_kept_up=bool(run.summary.get("client_kept_up", True)),
            )
        )
    return series


def verdict_text(run: ResultFile) -> Raw:
    verdict = run.data.get("verdict")
    if not isinstance(verdict, dict) or "valid" not in verdict:
        return Raw("—")
    if verdict["valid"]:
        return Raw('<span class="valid">VALID</span>')
    return Raw('<span class="invalid">INVALID</span>')


def overview(runs: Sequence[ResultFile]) -> str:
    headers = [
        "run",
        "scenario",
        "scheduled QPS",
        "completed QPS",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "errors",
        "client kept up",
        "verdict",
    ]
    rows = []
    for run in runs:
        s = run.summary
        latency = s.get("latency", {})
        kept = s.get("client_kept_up", True)
        rows.append(
            [
                run.label,
                run.scenario,
                fmt_value("", s.get("scheduled_qps")),
                fmt_value("", s.get("completed_qps")),
                ms(latency.get("p50_ns")),
                ms(latency.get("p90_ns")),
                ms(latency.get("p99_ns")),
                ms(latency.get("p999_ns")),
                ms(latency.get("max_ns")),
                fmt_value("", s.get("errors")),
                Raw('<span class="pass">✓ yes</span>')
                if kept
                else Raw(f'<span class="fail">✗ no — {figures.CLIENT_BOUND}</span>'),
                verdict_text(run),
            ]
        )
    return table(headers, rows, numeric=2)


def checks_html(verdict: dict[str, Any]) -> str:
    checks = verdict.get("checks") or []
    rows = []
    for check in checks:
        if not isinstance(check, dict):
            continue
        passed = bool(check.get("passed"))
        mark = Raw('<span class="pass">✓</span>' if passed else '<span class="fail">✗</span>')
        rows.append([mark, check.get("name", ""), check.get("detail", "")])
    out = table(["", "check", "detail"], rows) if rows else "<p>No checks recorded.</p>"
    advice = [str(r) for r in verdict.get("recommendations") or []]
    if advice:
        out += "<p><b>What to do:</b></p><ul>" + "".join(f"<li>{esc(a)}</li>" for a in advice)
        out += "</ul>"
    return out


ENERGY_KEYS = ("energy_j", "gpu_energy_j", "energy_joules")


def metrics_html(metrics: Any, div_id: str, inferences: Any = None) -> str:
    """Triton :8002 metrics when the run recorded them; 'not recorded' otherwise.

    Scalars become a table, numeric lists a line plot. Energy per inference is derived from a
    total energy (J) and the successful query count when the file does not carry it itself.
    """
    if not isinstance(metrics, dict) or not metrics:
        return (
            '<p class="note">Server metrics (GPU utilization, power, energy per inference): '
            "not recorded in this run.</p>"
        )
    scalars: dict[str, Any] = {}
    series: dict[str, list[float]] = {}
    for key, value in metrics.items():
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            series[key] = [float(v) for v in value]
        else:
            scalars[key] = value
    energy = next(
        (scalars[k] for k in ENERGY_KEYS if isinstance(scalars.get(k), (int, float))), None
    )
    has_count = isinstance(inferences, int) and inferences > 0
    if "energy_per_inference_j" not in scalars and energy is not None and has_count:
        scalars["energy_per_inference_j (derived)"] = energy / inferences
    out = table(["metric", "value"], key_values(scalars)) if scalars else ""
    if series:
        out += figure_html(figures.metric_series_figure(series), div_id)
    return out


def _share(value: Any) -> str:
    return f"{float(value) * 100:.2f} %" if isinstance(value, (int, float)) else "—"


def goodput_html(goodput: Any) -> str:
    """--slo: each SLO's attainment, goodput (all at once) and its rates, with definitions ("" if
    the run had no SLO)."""
    goodput = obj(goodput)
    if not goodput:
        return ""
    requests = goodput.get("requests", "—")
    rows: list[list[object]] = []
    for attained in goodput.get("attainment") or []:
        attained = obj(attained)
        bound = ms(attained.get("bound_ns"))
        rows.append(
            [f"{attained.get('name')} ≤ {bound}", f"{attained.get('met')} of {requests}",
             _share(attained.get("share"))]
        )  # fmt: skip
    rows.append(
        [Raw("<b>all at once (goodput)</b>"), f"{goodput.get('good')} of {requests}",
         _share(goodput.get("share"))]
    )  # fmt: skip
    rates = [
        ["goodput requests/s", fmt_value("", goodput.get("requests_per_s")),
         f"over {ms(goodput.get('span_ns'))}"],
    ]  # fmt: skip
    if goodput.get("tokens_per_s") is not None:
        rates.append(
            ["goodput tokens/s", fmt_value("", goodput.get("tokens_per_s")),
             f"over {ms(goodput.get('tokens_span_ns'))}; {goodput.get('tokens')} tokens "
             f"({goodput.get('token_source')})"]
        )  # fmt: skip
    definitions = obj(goodput.get("definitions"))
    return (
        "<h3>Goodput under the SLOs</h3>"
        + table(["objective", "requests meeting it", "share"], rows, numeric=1)
        + table(["rate", "value", "span"], rates, numeric=1)
        + f'<p class="note">{goodput.get("failed", 0)} failed or never answered requests count '
        "as not meeting any SLO. Definitions: "
        + esc("; ".join(f"{k}: {v}" for k, v in definitions.items()))
        + "</p>"
    )


def run_details(run: ResultFile, number: int) -> str:
    data = run.data
    s = run.summary
    parts = [f'<h2 id="run-{number}">Run: {esc(run.label)}</h2>']
    if not s.get("client_kept_up", True):
        lag = s.get("send_lag", {})
        parts.append(
            '<div class="banner">⚠ <b>Client-bound run.</b> The load generator fell behind its '
            f"own schedule (send-lag p99 {ms(lag.get('p99_ns'))}, "
            f"{100 * float(lag.get('late_share', 0)):.1f} % of queries sent late). Latencies "
            "from scheduled time include the client's queue: this measures the client as much "
            "as the server.</div>"
        )
    run_info = data.get("run", {}) if isinstance(data.get("run"), dict) else {}
    if run_info.get("interrupted"):
        parts.append(
            f'<div class="banner">⚠ Interrupted run: partial result '
            f"({esc(run_info.get('stop_reason', ''))}).</div>"
        )
    parts.append(f"<h3>Verdict: {verdict_text(run)}</h3>")
    verdict = data.get("verdict")
    parts.append(checks_html(verdict if isinstance(verdict, dict) else {}))
    latency = s.get("latency", {})
    from_issue = s.get("latency_from_issue", {})
    lag = s.get("send_lag", {})
    rows = [
        [name, ms(latency.get(key)), ms(from_issue.get(key)), ms(lag.get(key))]
        for name, key in (
            ("min", "min_ns"),
            ("mean", "mean_ns"),
            ("p50", "p50_ns"),
            ("p90", "p90_ns"),
            ("p99", "p99_ns"),
            ("p99.9", "p999_ns"),
            ("max", "max_ns"),
        )
    ]
    parts.append(
        "<h3>Latency</h3>"
        + table(
            ["", "from scheduled time (MLPerf)", "from actual send (CO-prone)", "send lag"],
            rows,
            numeric=1,
        )
        + f'<p class="note">Percentiles: {esc(latency.get("method", PERCENTILE_METHOD))}. '
        "“From actual send” is what a coordinated-omission tool (e.g. perf_analyzer) would "
        "report; the gap to “from scheduled time” is the queueing it hides.</p>"
    )
    counts: dict[str, Any] = {
        k: s.get(k)
        for k in ("scheduled", "issued", "completed_ok", "errors", "pending", "not_issued")
        if k in s
    }
    counts.update({f"errors: {k}": v for k, v in (s.get("errors_by_kind") or {}).items()})
    parts.append("<h3>Counts</h3>" + table(["", "queries"], counts.items(), numeric=1))
    parts.append(tokens_html(data.get("tokens")))
    parts.append(goodput_html(data.get("goodput")))
    parts.append(stages_html(data.get("stages")))
    parts.append(run_split_html(data, number))
    parts.append(
        "<h3>Server metrics (:8002)</h3>"
        + metrics_html(metrics_of(data), f"fig-metrics-run-{number}", s.get("completed_ok"))
    )
    settings = obj(data.get("settings"))
    extra = {
        "target": data.get("target", {}),
        "model": data.get("model", {}),
        "run": run_info,
    }
    parts.append(
        "<details open><summary><b>Settings</b></summary>"
        + table(["setting", "value"], key_values(settings or {}))
        + "</details><details><summary><b>Target, model and run</b></summary>"
        + table(["field", "value"], key_values(extra))
        + "</details>"
    )
    environment = data.get("environment")
    parts.append(
        "<details><summary><b>Environment</b></summary>"
        + table(
            ["field", "value"], key_values(environment if isinstance(environment, dict) else {})
        )
        + "</details>"
    )
    return "".join(parts)


def runs_section(runs: Sequence[ResultFile]) -> str:
    series = run_series(runs)
    methods = {str(r.summary.get("latency", {}).get("method", PERCENTILE_METHOD)) for r in runs}
    sources = "; ".join(f"{s.label}: {SOURCE_TEXT[s.curve.source]}" for s in series)
    parts = [
        "<h2>Runs</h2>",
        overview(runs),
        f'<p class="note">Latency is measured from each query\'s <b>scheduled</b> time '
        f"(MLPerf Server; free of coordinated omission). Curves: {esc(sources)}.</p>",
        figure_html(figures.percentile_figure(series, " / ".join(sorted(methods))), "fig-hdr"),
        figure_html(figures.cdf_figure(series), "fig-cdf"),
    ]
    if any(s.timeline is not None for s in series):
        parts.append(figure_html(figures.timeline_figure(series), "fig-timeline"))
        missing = [s.label for s in series if s.timeline is None]
        if missing:
            parts.append(
                f'<p class="note">No timeline for {esc(", ".join(missing))}: written by an '
                "older loadtest without per-query records (--records).</p>"
            )
    else:
        parts.append(
            '<p class="note">Timeline: not available — the runs were written by an older '
            "loadtest without per-query records (--records).</p>"
        )
    parts.append(tokens_figures_html(runs, series))
    for number, run in enumerate(runs):
        parts.append(run_details(run, number))
    return "".join(parts)


# --- find-peak and compare ---------------------------------------------------------------------


def _probe_p99(probe: dict[str, Any]) -> Any:
    if "p99_ns" in probe:
        return probe["p99_ns"]
    summary = probe.get("summary")
    if isinstance(summary, dict) and isinstance(summary.get("latency"), dict):
        return summary["latency"].get("p99_ns")
    return None


def find_peak_section(result: ResultFile, number: int) -> str:
    data = result.data
    settings = obj(data.get("settings"))
    probes = [
        {**p, "p99_ns": _probe_p99(p), "qps": p.get("qps", p.get("target_qps"))}
        for p in data.get("probes", [])
        if isinstance(p, dict)
    ]
    peak = data.get("peak_qps")
    peak_qps = float(peak) if isinstance(peak, (int, float)) else None
    slo = settings.get("target_latency_ns")
    slo_ns = float(slo) if isinstance(slo, (int, float)) else None
    percentile = settings.get("percentile", 0.99)
    label = f"p{float(percentile) * 100:g}" if isinstance(percentile, (int, float)) else "p99"
    rule = obj(data.get("rule"))
    held = f"SLO {esc(ms(slo_ns))} at {label}"
    if rule.get("name") == "goodput":
        # The latency curve stays (p99 from scheduled time); its line would be no bound here.
        held, slo_ns = f"searched under the goodput rule: {esc(rule.get('text', ''))}", None
    elif rule.get("text"):
        held = f"searched under {esc(rule['text'])}"
    parts = [
        f'<h2 id="peak-{number}">Find-peak: {esc(result.label)}</h2>',
        f"<p>Chosen peak: <b>{esc(fmt_value('', peak_qps)) if peak_qps else 'none found'}</b>"
        f" QPS; {held}.</p>",
        figure_html(figures.peak_figure(probes, peak_qps, slo_ns, label), f"fig-peak-{number}"),
    ]
    if isinstance(data.get("conclusion"), str):
        parts.insert(2, f"<p>{esc(data['conclusion'])}</p>")
    # Under the goodput rule a probe's latency_ns is the search's scaled SLO ratio, not a time:
    # slo_ratio shows it as what it is.
    hidden = {"latency_ns"} if rule.get("name") == "goodput" else set()
    columns: list[str] = []
    for probe in probes:
        columns.extend(
            k
            for k, v in probe.items()
            if k not in columns and k not in hidden and not isinstance(v, (dict, list))
        )
    rows = [[fmt_value(c, p.get(c)) for c in columns] for p in probes]
    parts.append(table(columns, rows))
    if settings:
        parts.append(
            "<details><summary><b>Settings</b></summary>"
            + table(["setting", "value"], key_values(settings))
            + "</details>"
        )
    return "".join(parts)


def _row_label(row: dict[str, Any], index: int) -> str:
    name = next(
        (str(row[k]) for k in ("target", "name", "label", "backend") if row.get(k)),
        f"row {index + 1}",
    )
    qps = row.get("qps")
    return f"{name} @ {qps:g} QPS" if isinstance(qps, (int, float)) else name


def _row_split(row: dict[str, Any]) -> dict[str, float]:
    for key in SPLIT_KEYS:
        split = row.get(key)
        if isinstance(split, dict):
            return {
                str(k): float(v)
                for k, v in split.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
    return {}


def run_split_html(data: dict[str, Any], number: int) -> str:
    """A run's server-side split (Triton statistics over the run), or 'not recorded'."""
    recorded = obj(obj(data.get("server_side")).get("split"))
    split = {
        phase.removesuffix("_us") + "_ns": float(recorded[phase]) * NS_PER_US
        for phase in RUN_SPLIT_PHASES_US
        if isinstance(recorded.get(phase), (int, float))
    }
    if not split:
        return (
            '<h3>Server-side split</h3><p class="note">Server-side latency split: not recorded '
            "(the target was not a Triton, or the run predates it).</p>"
        )
    label = str(obj(data.get("target")).get("model", "run"))
    figure = figure_html(figures.split_figure([label], [split]), f"fig-split-run-{number}")
    return "<h3>Server-side split (ms per request, Triton statistics over the run)</h3>" + figure


def metrics_of(data: dict[str, Any]) -> Any:
    """A run's or compare row's :8002 metrics: top-level `metrics` or `server_side.metrics`."""
    if data.get("metrics") is not None:
        return data["metrics"]
    side = data.get("server_side")
    return side.get("metrics") if isinstance(side, dict) else None


def energy_per_inference(metrics: dict[str, Any]) -> float | None:
    """J per inference: given, or energy / inferences, or 1 / inferences-per-joule."""
    given = metrics.get("energy_per_inference_j")
    if isinstance(given, (int, float)):
        return float(given)
    energy, count = metrics.get("energy_j"), metrics.get("inferences")
    if isinstance(energy, (int, float)) and isinstance(count, (int, float)) and count > 0:
        return float(energy) / float(count)
    per_joule = metrics.get("inferences_per_joule")
    if isinstance(per_joule, (int, float)) and per_joule > 0:
        return 1.0 / float(per_joule)
    return None


def compare_metrics_html(labels: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """One line per compare row with its :8002 metrics, or 'not recorded'."""
    found = [(label, metrics_of(row)) for label, row in zip(labels, rows, strict=True)]
    found = [(label, m) for label, m in found if isinstance(m, dict) and m]
    if not found:
        return (
            '<p class="note">Server metrics (GPU utilization, power, energy per inference): '
            "not recorded.</p>"
        )
    columns: list[str] = []
    for _, metrics in found:
        columns.extend(
            k for k, v in metrics.items() if k not in columns and not isinstance(v, list)
        )
    body = [
        [label, *(fmt_value(c, m.get(c)) for c in columns), fmt_value("", energy_per_inference(m))]
        for label, m in found
    ]
    return table(["run", *columns, "energy per inference (J)"], body, numeric=1)


def _row_scalars(row: dict[str, Any]) -> dict[str, Any]:
    scalars = {k: v for k, v in row.items() if not isinstance(v, (dict, list))}
    summary = row.get("summary")
    if isinstance(summary, dict):
        latency = obj(summary.get("latency"))
        for key in ("completed_qps",):
            scalars.setdefault(key, summary.get(key))
        for key in ("p50_ns", "p99_ns"):
            scalars.setdefault(key, latency.get(key))
    return scalars


def compare_section(result: ResultFile, number: int) -> str:
    rows = [r for r in result.data.get("rows", []) if isinstance(r, dict)]
    parts = [f'<h2 id="compare-{number}">Compare: {esc(result.label)}</h2>']
    scalars = [_row_scalars(r) for r in rows]
    columns: list[str] = []
    for row in scalars:
        columns.extend(k for k in row if k not in columns)
    parts.append(
        table(columns, [[fmt_value(c, row.get(c)) for c in columns] for row in scalars])
        if columns
        else "<p>No rows.</p>"
    )
    splits = [_row_split(r) for r in rows]
    labels = [_row_label(r, i) for i, r in enumerate(rows)]
    if any(splits):
        parts.append(figure_html(figures.split_figure(labels, splits), f"fig-split-{number}"))
    else:
        parts.append('<p class="note">Server-side latency split: not recorded.</p>')
    parts.append("<h3>Server metrics (:8002)</h3>" + compare_metrics_html(labels, rows))
    comparison = [c for c in result.data.get("comparison") or [] if isinstance(c, dict)]
    if comparison:
        flat = [dict(key_values(c)) for c in comparison]
        keys: list[str] = []
        for row in flat:
            keys.extend(k for k in row if k not in keys)
        parts.append("<h3>Relative to native</h3>")
        parts.append(table(keys, [[row.get(k, "—") for k in keys] for row in flat]))
    parts.append(compare_peak_html(result.data))
    notes = [str(n) for n in result.data.get("notes") or []]
    notes += [f"compared: {n}" for n in result.data.get("compared") or []]
    if notes:
        parts.append("<ul>" + "".join(f'<li class="note">{esc(n)}</li>' for n in notes) + "</ul>")
    return "".join(parts)


def _percent(ratio: Any) -> str:
    return f"{100 * ratio:.0f} %" if isinstance(ratio, (int, float)) else "—"


def _ratio_top(ratio: dict[str, Any]) -> str:
    """A peak ratio's interval top: null beside a ratio is unbounded (a lower-bound peak)."""
    if ratio.get("ratio") is not None and ratio.get("high") is None:
        return "∞"
    return _percent(ratio.get("high"))


def _ms_span(values: Any) -> str:
    """[low, high] in ns (null = ∞) as "a–b ms"."""
    if not isinstance(values, list) or len(values) != 2:
        return "—"
    ends = [f"{v / 1e6:,.1f}" if isinstance(v, (int, float)) else "∞" for v in values]
    return f"{ends[0]}–{ends[1]} ms"


def compare_peak_html(data: dict[str, Any]) -> str:
    """compare.json's peak search (each target's peak and interval, the ratio's verdict) and its
    p99 bootstrap intervals; "" in files written before they existed."""
    search = obj(data.get("peak_search"))
    parts = []
    targets = [t for t in search.get("targets") or [] if isinstance(t, dict)]
    if targets:
        rule = search.get("rule")
        held = esc(rule) if isinstance(rule, str) else "the SLO"
        parts.append(f"<h3>Peak under {held} (searched, interleaved, boundary repeated)</h3>")
        keys = ["target", "calibration_qps", "peak_qps", "low_qps", "high_qps", "status"]
        if any(t.get("tokens_per_s_at_peak") is not None for t in targets):
            keys.insert(3, "tokens_per_s_at_peak")  # a decoder under LoadGen's token bounds
        rows = [
            [fmt_value(k, t.get(k)) for k in keys] + [len(t.get("probes") or [])] for t in targets
        ]
        parts.append(table([*keys, "probes"], rows))
    lines = [
        f"{r.get('target')} ÷ native peak: {_percent(r.get('ratio'))} "
        f"(interval {_percent(r.get('low'))}–{_ratio_top(r)}): {r.get('verdict')}"
        for r in search.get("ratios") or []
        if isinstance(r, dict)
    ]
    lines += [
        f"{r.get('target')} p99 at {r.get('qps')} QPS: {_ms_span(r.get('p99_ns'))} against "
        f"native {_ms_span(r.get('native_p99_ns'))} (bootstrap): {r.get('verdict')}"
        for r in data.get("p99_intervals") or []
        if isinstance(r, dict)
    ]
    if lines:
        parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>")
    return "".join(parts)


# --- sweep -------------------------------------------------------------------------------------


def _sweep_point(point: dict[str, Any]) -> dict[str, Any]:
    interval = point.get("peak_interval_qps") or [None, None]
    return {
        "number": point.get("number"),
        "label": str(point.get("label", "")),
        "peak_qps": point.get("peak_qps"),
        "latency_ns": point.get("latency_at_peak_ns"),
        "interval": [float(v or 0) for v in interval],
    }


def sweep_section(result: ResultFile, number: int) -> str:
    """The configurations measured: the throughput–latency Pareto front with the recommended one
    starred, a table best first, and the recommended config.pbtxt."""
    data = result.data
    settings = obj(data.get("settings"))
    points = [p for p in data.get("points", []) if isinstance(p, dict)]
    winner = obj(data.get("winner"))
    slo = settings.get("target_latency_ns")
    slo_ns = float(slo) if isinstance(slo, (int, float)) else None
    percentile = settings.get("percentile", 0.99)
    label = f"p{float(percentile) * 100:g}" if isinstance(percentile, (int, float)) else "p99"
    figure = figures.sweep_figure(
        [_sweep_point(p) for p in points], winner.get("number"), slo_ns, label
    )
    parts = [
        f'<h2 id="sweep-{number}">Sweep: {esc(result.label)}</h2>',
        f"<p>Recommended: <b>{esc(winner.get('label', 'none'))}</b>; "
        f"{esc(str(data.get('conclusion', '')))}</p>",
        f'<p class="note">{esc(data.get("points_measured"))} configurations measured of a '
        f"{esc(data.get('grid_size'))}-point grid; SLO {esc(ms(slo_ns))} at {label}; ties "
        "(overlapping peak intervals) go to the cheaper configuration.</p>",
        figure_html(figure, f"fig-sweep-{number}"),
    ]
    ranked = sorted(points, key=lambda p: (p.get("rank") is None, p.get("rank") or 0))
    rows = [
        [
            p.get("rank") or "—",
            p.get("number"),
            p.get("label"),
            fmt_value("", p.get("peak_qps")),
            "–".join(fmt_value("", v) for v in p.get("peak_interval_qps") or []),
            ms(p.get("latency_at_peak_ns")),
            fmt_value("", (p.get("memory_bytes") or 0) / 1e6) if p.get("memory_bytes") else "—",
            "yes" if p.get("failed_to_load") else "",
            "yes" if p.get("client_bound") else "",
            p.get("status"),
        ]
        for p in ranked
    ]
    headers = ["rank", "#", "configuration", "peak QPS", "interval QPS", f"{label} at peak",
               "memory MB", "failed to load", "client-bound", "status"]  # fmt: skip
    parts.append(table(headers, rows))
    pbtxt = data.get("recommended_config_pbtxt")
    if isinstance(pbtxt, str) and pbtxt:
        parts.append(
            "<details><summary><b>Recommended config.pbtxt</b></summary>"
            f"<pre>{esc(pbtxt)}</pre></details>"
        )
    return "".join(parts)


# --- mix -----------------------------------------------------------------------------------------


def _ratio(value: Any) -> str:
    ratio = obj(value)
    point, low, high = ratio.get("value"), ratio.get("low"), ratio.get("high")
    if not isinstance(point, (int, float)):
        return "—"
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return f"{point:.3f} [{low:.3f}, {high:.3f}]"
    return f"{point:.3f}"


def _latency_ms(value: Any) -> str:
    return "∞ (failures)" if value == "inf" else ms(value)


def mix_entry_runs(result: ResultFile) -> list[ResultFile]:
    """Each entry's run together, as a run result of its own (for the shared run plots)."""
    runs = []
    for entry in result.data.get("entries") or []:
        together = obj(entry).get("together")
        if isinstance(together, dict):
            runs.append(from_data(together, f"{result.label}: {obj(entry).get('name', '?')}"))
    return runs


def mix_section(result: ResultFile, number: int) -> str:
    """The interference table first (the headline), then each entry's verdict together."""
    data = result.data
    verdict = obj(data.get("verdict"))
    valid = verdict.get("valid")
    head = Raw(
        '<span class="valid">VALID</span>' if valid else '<span class="invalid">INVALID</span>'
    )
    parts = [
        f'<h2 id="mix-{number}">Mix: {esc(result.label)}</h2>',
        f"<p>Mix verdict: {head} — {esc(verdict.get('rule', ''))}.</p>",
    ]
    rows = [obj(r) for r in data.get("interference") or []]
    if rows:
        parts.append(
            "<h3>Interference: together ÷ alone, same schedule</h3>"
            + table(
                [
                    "entry",
                    "scenario",
                    "latency alone",
                    "latency together",
                    "latency ratio [95 % CI]",
                    "throughput alone",
                    "throughput together",
                    "throughput ratio [95 % CI]",
                    "client kept up (alone / together)",
                ],
                [
                    [
                        r.get("name", "?"),
                        f"{r.get('scenario', '?')} p{float(r.get('percentile', 0.99)) * 100:g}",
                        _latency_ms(r.get("latency_alone_ns")),
                        _latency_ms(r.get("latency_together_ns")),
                        _ratio(r.get("latency_ratio")),
                        fmt_value("", r.get("throughput_alone")),
                        fmt_value("", r.get("throughput_together")),
                        _ratio(r.get("throughput_ratio")),
                        f"{fmt_value('', r.get('client_kept_up_alone'))} / "
                        f"{fmt_value('', r.get('client_kept_up_together'))}",
                    ]
                    for r in rows
                ],
                numeric=2,
            )
            + '<p class="note">1 = concurrent ≈ isolated. Server latency from the scheduled '
            "time, Offline from the send; failed queries count as +∞. Throughput: completed "
            "QPS (Server), samples/s (Offline). Interval: "
            f"{esc(data.get('interference_interval', ''))}."
            " The runs alone and together are minutes apart: on a shared host, noise between "
            "them shows as interference.</p>"
        )
    else:
        parts.append('<p class="note">No runs alone (--no-isolated): no interference table.</p>')
    entries = []
    for entry in data.get("entries") or []:
        together = obj(obj(entry).get("together"))
        summary = obj(together.get("summary"))
        latency = obj(summary.get("latency"))
        entry_verdict = obj(together.get("verdict"))
        ok = entry_verdict.get("valid")
        entries.append(
            [
                obj(entry).get("name", "?"),
                together.get("scenario", "—"),
                obj(together.get("target")).get("model", "—"),
                ms(latency.get("p99_ns")),
                fmt_value("", summary.get("completed_qps")),
                Raw('<span class="valid">VALID</span>')
                if ok
                else Raw('<span class="invalid">INVALID</span>'),
                "; ".join(str(r) for r in entry_verdict.get("reasons") or []),
            ]
        )
    parts.append(
        "<h3>Each entry, all together</h3>"
        + table(
            ["entry", "scenario", "model", "p99 from scheduled", "completed QPS", "verdict", "why"],
            entries,
        )
    )
    return "".join(parts)


# --- the page ----------------------------------------------------------------------------------


def render_html(results: Sequence[ResultFile]) -> str:
    """The whole report for any mix of runs, find-peak and compare results."""
    runs = [r for r in results if r.kind == RUN]
    runs += [run for r in results if r.kind == MIX for run in mix_entry_runs(r)]
    listing = table(
        ["file", "kind", "scenario", "written", "records"],
        [
            [
                r.label,
                r.kind,
                r.scenario,
                utc(r.data.get("created_unix_s")),
                f"{r.summary.get('scheduled', 0)} queries" if r.has_records else "no",
            ]
            for r in results
        ],
    )
    body = ["<h1>loadtest report</h1>", listing]
    body += [mix_section(r, n) for n, r in enumerate(results) if r.kind == MIX]
    if runs:
        body.append(runs_section(runs))
    for number, result in enumerate(results):
        if result.kind == FIND_PEAK:
            body.append(find_peak_section(result, number))
        elif result.kind == COMPARE:
            body.append(compare_section(result, number))
        elif result.kind == SWEEP:
            body.append(sweep_section(result, number))
    body.append(
        '<p class="note">Generated by loadtest from the result files above. Latency origin: '
        "scheduled time; percentiles: exact LoadGen rule unless a plot says otherwise.</p>"
    )
    title = "loadtest report: " + ", ".join(r.label for r in results)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        + "".join(body)
        + "</body></html>\n"
    )


__all__ = ["render_html"]
