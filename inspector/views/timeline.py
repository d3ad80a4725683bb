"""The scheduler timeline: what every sequence was doing at every step, as one picture.

Rows are sequences, columns are steps, each cell coloured by the sequence's state at that step
(states.py). Read along a row to follow a request's life: amber while it waits, blue while its
prompt is prefilled, green while it decodes, a red cell where it was preempted, then amber
again and blue (it recomputes what it had) before it decodes again. Read down a column to see
one step's batch: continuous batching shows as rows entering and leaving at any step, not in
lockstep. The outlined column is the cursor. Hover a waiting or preempted cell for why (the
cause the scheduler recorded: trace/why_text.py).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from inspector.trace.model import Trace
from inspector.trace.why_text import preempt_text, wait_text
from inspector.views.colors import STATE_COLORS
from inspector.views.figure import (
    clamp_height,
    cursor_line,
    discrete_colorscale,
    empty_figure,
    make_figure,
    step_problem,
    step_ticks,
)
from inspector.views.states import STATES, sequence_states

# The most cells (sequences x steps) the figure holds. Every update sends the whole figure, a
# cursor move too, and each cell carries its hover words (about 45 bytes in a real run):
# 256 sequences over 2,000 steps (the server's limits) were 11.6 MB of JSON per arrow press, 64
# samples over 265 steps 0.75 MB. Past this, the figure shows a window of the steps around the
# cursor, and its title says which.
MAX_CELLS = 2**13
MIN_WINDOW = 32  # steps shown whatever the number of sequences (a window narrower says too little)


def step_window(num_steps: int, num_rows: int, index: int) -> range:
    """The steps the timeline shows at the cursor `index`: all of them within MAX_CELLS, else a
    window of `width` steps. The window moves by half its width, so a cursor moving inside it
    keeps the same cells (the page then moves only the cursor's outline, not the data), and the
    cursor always has a quarter of it or more on each side except at the run's ends."""
    width = max(MIN_WINDOW, MAX_CELLS // max(num_rows, 1))
    if num_steps <= width:
        return range(num_steps)
    half = width // 2
    start = min(max((index // half) * half - half // 2, 0), num_steps - width)
    return range(start, start + width)


def timeline_figure(trace: Trace, index: int) -> go.Figure:
    """Sequences x steps, coloured by state; the cursor step outlined."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_figure(problem)
    states = sequence_states(trace)
    seq_ids = list(states)
    shown = step_window(len(trace.steps), len(seq_ids), index)
    code = {state: i for i, state in enumerate(STATES)}
    rows = [states[seq_id][shown.start:shown.stop] for seq_id in seq_ids]  # each sequence's states, shown steps
    z = np.array([[code[s] for s in row] for row in rows], dtype=np.int8)
    # Tokens each sequence computed in each step, for the hover.
    computed = np.zeros(z.shape, dtype=np.int32)
    row_of = {seq_id: r for r, seq_id in enumerate(seq_ids)}
    # The hover's words: the state, and for a waiting or preempted cell its recorded cause.
    text = [list(row) for row in rows]
    for i, step in enumerate(trace.steps[shown.start:shown.stop]):
        s = step.schedule
        for x in s.scheduled:
            computed[row_of[x.seq_id], i] = x.num_tokens
        for w in s.waits:
            text[row_of[w.seq_id]][i] += f"<br>{wait_text(w)}"
        for p in s.preemptions:
            text[row_of[p.seq_id]][i] += f"<br>{preempt_text(p)}"
    heatmap = dict(
        type="heatmap",
        z=z,
        x=np.arange(shown.start, shown.stop),  # step numbers: the cursor's outline is at its step
        y=[f"#{seq_id}" for seq_id in seq_ids],
        text=text,
        customdata=computed,
        hovertemplate="step %{x} · seq %{y}<br>%{text}<br>%{customdata} tokens computed<extra></extra>",
        colorscale=discrete_colorscale([STATE_COLORS[s] for s in STATES]),
        zmin=-0.5,
        zmax=len(STATES) - 0.5,
        xgap=1 if len(shown) <= 100 else 0,  # thin gaps separate steps, until they would hide the cells
        ygap=2,
        # The legend of the states, as a horizontal bar over the plot: a vertical one needs more
        # height than a timeline of a few sequences has, and its labels would overlap. Its title is
        # empty, written out: left unset, plotly gives it a placeholder ("Click to enter Colorscale
        # title"), never shown, for which it moves the figure's title up by the bar's height, out
        # of the figure where the labels stand on their side (a phone's narrow plot; static/app.js
        # gives the bar a row of its own there).
        colorbar=dict(tickvals=list(range(len(STATES))), ticktext=list(STATES), thickness=10, len=0.6,
                      orientation="h", x=1.0, xanchor="right", y=1.02, yanchor="bottom", outlinewidth=0,
                      tickfont=dict(size=10), title=dict(text="")),
    )
    title = f"Scheduler timeline · step {index}"
    if len(shown) < len(trace.steps):
        title += (f"<br><sup>steps {shown.start}–{shown.stop - 1} of 0–{len(trace.steps) - 1} shown ({len(seq_ids)} "
                  f"sequences; at most {MAX_CELLS:,} cells): the window follows the cursor</sup>")
    return make_figure(
        [heatmap],
        title,
        clamp_height(90 + 26 * len(seq_ids), low=170, high=240),  # it shares the screen with the text
        "timeline",
        shapes=[cursor_line(index)],
        xaxis=dict(showgrid=False, zeroline=False, **step_ticks(len(shown))),  # steps; the hover says so
        yaxis=dict(autorange="reversed", showgrid=False),  # #0 on top, like the other panels
    )
