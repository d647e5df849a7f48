"""The HTML report's building blocks: escaped cells, tables, values with their units, a figure's
div. Kept apart from html.py (the page) so each section module (token_html.py, ...) builds on the
same blocks without importing the page that imports it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.io as pio
from plotly.graph_objects import Figure

from loadtest.core.units import ms_cell

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


class Raw(str):
    """A table cell that is already HTML."""


def obj(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else {} (result files are read tolerantly)."""
    return value if isinstance(value, dict) else {}


def esc(value: object) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def ms(ns: Any) -> str:
    if not isinstance(ns, (int, float)) or isinstance(ns, bool):
        return "—"
    return f"{ms_cell(ns)} ms"


def fmt_value(key: str, value: Any) -> str:
    """A scalar from a result file, shown with its unit (keys ending _ns become ms)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_ns") and isinstance(value, (int, float)):
        return ms(value)
    if isinstance(value, float):
        return f"{value:,.4g}"
    if value is None:
        return "—"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: int = 0) -> str:
    """An HTML table; columns from index `numeric` on are right-aligned when numeric is > 0."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if numeric and i >= numeric else ""
            cells.append(f"<td{cls}>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def figure_html(figure: Figure, div_id: str) -> str:
    body = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=div_id,
        config=PLOT_CONFIG,
        validate=False,
    )
    return f'<div class="figure" data-figure="{div_id}">{body}</div>'
