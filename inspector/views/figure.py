"""What every figure shares: construction, placeholders, the cursor line, the step check.

Speed. Plotly checks every property it is given against its schema, the large "plotly_white"
template included, on every figure, every time the cursor moves (docs/perf-notes.md, "The web
UI's views"). make_figure skips the check (_validate=False) and passes the template already
built; tests/test_views.py rebuilds each figure *with* validation, so a misspelt property still
fails a test instead of being silently ignored by the browser.

Zoom. `uirevision` tells plotly.js to keep the user's zoom and pan when a figure with the same
uirevision replaces it. Each view passes a key that changes only when what it shows changes
meaning (another sequence, layer...), so stepping the cursor keeps the zoom.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from inspector.trace.arguments import is_int, shown
from inspector.trace.model import Trace
from inspector.views.colors import CURRENT_COLOR
from inspector.views.markup import escape
from inspector.views.selection import Selection, selected_seq_id

NO_STEP = "No step yet: add prompts and press Step"

# Every figure's look, looked up once: a validated plotly Template, never modified. A page that
# draws many figures may hold it once and put it back in each (webui/render.py figures_html).
# Every axis of every figure (a template's xaxis / yaxis are the defaults of all x and y axes)
# draws its tick labels with ticklabeloverflow "allow". plotly.js's default, "hide past div",
# measures the box of every label once per label drawn (getBoundingClientRect, n**2 of them),
# each measure forcing the browser to lay out the page the same update has just changed (the
# Text panel): about a quarter of a heatmap's redraw on a cursor move (docs/perf-notes.md). The
# views' labels are placed inside their plot's margins, so there was nothing for it to hide.
FIGURE_TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
FIGURE_TEMPLATE.layout.xaxis.ticklabeloverflow = "allow"
FIGURE_TEMPLATE.layout.yaxis.ticklabeloverflow = "allow"
MARGIN = dict(l=48, r=16, t=56, b=36)


def make_figure(data: list[dict[str, Any]], title: str, height: int, uirevision: str, **layout: Any) -> go.Figure:
    """A figure from plain trace dicts ({"type": "heatmap", ...}) with the shared look: white
    template, compact margins, a title, a fixed height."""
    base = dict(
        template=FIGURE_TEMPLATE,
        title=dict(text=wrap_title(title), x=0.01, xanchor="left", font=dict(size=14)),
        height=height,
        margin=MARGIN,
        uirevision=uirevision,
    )
    return go.Figure(data=data, layout={**base, **layout}, _validate=False)


TITLE_LINE = 60  # characters of a title's line: a plot in the tabs' pane of a 1280 px window is ~480 px wide


def wrap_title(title: str) -> str:
    """`title`'s first line broken in two when long, at its last " · " that keeps the first part
    within TITLE_LINE characters: plotly never wraps a title, and the Next token chart's ("...
    sampled ' Paris' p=0.310 rank 0 · entropy 2.83 nats") ran past a 480 px plot's edge, cut
    off. The lines a view writes itself (after a "<br>": a note in <sup>) stay as they are.
    In a narrower plot (a phone) static/app.js breaks a line again where it does not fit."""
    line, br, rest = title.partition("<br>")
    cut = line.rfind(" · ", 0, TITLE_LINE)
    if len(line) <= TITLE_LINE or cut < 0:
        return title
    return f"{line[:cut]}<br>{line[cut + 3:]}{br}{rest}"


# A legend under the plot, anchored to the figure's bottom edge: plotly keeps room for it there,
# so the x axis's title and tick labels sit above it, and it wraps onto more lines in a narrow
# plot. Placed at a fixed offset below the plot (y=-0.15 of the plot's height) it landed on the
# axis title or past the figure's edge, as the plot's height and width changed.
LEGEND_AT_BOTTOM = dict(orientation="h", x=0, xanchor="left", yref="container", y=0, yanchor="bottom")


def empty_figure(message: str, title: str = "") -> go.Figure:
    """A placeholder: no axes, `message` in the middle (escaped: it may quote trace data)."""
    note = dict(text=escape(message), x=0.5, y=0.5, xref="paper", yref="paper",
                showarrow=False, font=dict(size=13, color="#666"))
    hidden = dict(visible=False)
    return make_figure([], title, 260, "empty", annotations=[note], xaxis=hidden, yaxis=hidden)


def step_problem(trace: Trace, index: int) -> str | None:
    """Why step `index` cannot be shown (None when it can): not a step index at all (a view
    never raises, so 1.5, "3", None or True, no step number, say so too), no step yet, or out
    of range. Every view's first check."""
    if not is_int(index):
        return f"No step {shown(index)}: a step is an integer"
    if index < 0 or not trace.steps:
        return NO_STEP
    if index >= len(trace.steps):
        return f"No step {index}: the trace has {len(trace.steps)} steps"
    return None


def sequence_or_placeholder(trace: Trace, index: int, selection: Selection | None,
                            title: str) -> tuple[int, str] | go.Figure:
    """For a panel about one sequence: (the selected sequence's id, `title` naming the step and
    the sequence), or a placeholder saying why there is nothing to show (no step, no sequence)."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_figure(problem)
    seq_id = selected_seq_id(trace, selection or Selection(), index)
    title = f"{title} · step {index}"
    if seq_id is None or seq_id not in trace.sequences:
        missing = "No sequence in this trace" if seq_id is None else f"There is no sequence #{seq_id} in this trace"
        return empty_figure(missing, title)
    return seq_id, f"{title} · seq #{seq_id}"


def cursor_line(x: float) -> dict[str, Any]:
    """A vertical band over data column `x` (a step), the full height of the plot."""
    return dict(type="rect", x0=x - 0.5, x1=x + 0.5, y0=0, y1=1, yref="paper",
                line=dict(color=CURRENT_COLOR, width=2), fillcolor="rgba(0,0,0,0)", layer="above")


def discrete_colorscale(colors: list[str]) -> list[list[Any]]:
    """A colorscale of flat bands: with zmin=-0.5 and zmax=len(colors)-0.5, the integer z = i
    gets exactly colors[i] (a heatmap of categories instead of a gradient)."""
    n = len(colors)
    scale: list[list[Any]] = []
    for i, color in enumerate(colors):
        scale += [[i / n, color], [(i + 1) / n, color]]
    return scale


def step_ticks(num_steps: int) -> dict[str, int]:
    """An axis of steps: on a short run, one tick per step from 0. Plotly's own ticks on a run
    of a few steps fell on halves ("0.5", "1.5"), steps that do not exist; past a dozen it
    picks whole numbers (2, 5, 10...) by itself."""
    return dict(tick0=0, dtick=1) if num_steps <= 12 else {}


def clamp_height(height: float, low: int = 260, high: int = 380) -> int:
    return int(min(max(height, low), high))
