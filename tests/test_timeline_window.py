"""The scheduler timeline holds at most MAX_CELLS cells: every update sends it whole, a cursor
move too, and a run of many sequences over many steps (256 x 2,000 within the server's limits)
sent 11.6 MB of JSON per arrow press. Past the bound it shows a window of steps that follows
the cursor, and says so. Counted in cells and bytes, never timed."""

from __future__ import annotations

import numpy as np
import plotly.io as pio
from wide_traces import wide_trace

from inspector.views import timeline_figure
from inspector.views.states import STATES, sequence_states
from inspector.views.timeline import MAX_CELLS, step_window


def test_a_wide_long_run_is_shown_as_a_window_of_steps_around_the_cursor():
    trace = wide_trace(128, 600, waits=True)
    states = sequence_states(trace)
    for index in (0, 137, 599):
        fig = timeline_figure(trace, index)
        heat = fig.data[0]
        z = np.asarray(heat.z)
        steps = [int(x) for x in heat.x]
        assert z.size <= MAX_CELLS and 0 < len(steps) < 600
        assert index in steps and steps == list(range(steps[0], steps[-1] + 1))  # real step numbers, the cursor's among them
        # Each cell is still that sequence's state at that step, its hover words the same.
        for row, seq_id in enumerate(states):
            assert [STATES[int(v)] for v in z[row]] == states[seq_id][steps[0]:steps[-1] + 1]
        assert f"steps {steps[0]}–{steps[-1]} of 0–599 shown" in fig.layout.title.text
        assert fig.layout.title.text.startswith(f"Scheduler timeline · step {index}<br>")
        assert len(pio.json.to_json_plotly(fig.to_dict())) < 1_000_000  # was 3.6 MB at every step


def test_a_cursor_move_inside_the_window_keeps_the_cells():
    """The page redraws only the cursor's outline when the data is the same (static/app.js)."""
    trace = wide_trace(128, 600)
    window = step_window(600, 128, 300)
    assert all(step_window(600, 128, i) == window for i in range(296, 320))
    data = [pio.json.to_json_plotly(timeline_figure(trace, i).to_dict()["data"]) for i in (300, 301)]
    assert data[0] == data[1]


def test_a_run_within_the_bound_shows_every_step_without_a_note():
    trace = wide_trace(8, 500)
    fig = timeline_figure(trace, 250)
    assert [int(x) for x in fig.data[0].x] == list(range(500))
    assert fig.layout.title.text == "Scheduler timeline · step 250"


def test_a_wait_for_the_token_budget_names_a_few_sequences_and_counts_the_rest():
    """Each waiting cell's hover named every sequence that used the step's budget: 256 of them
    made 1.5 KB a cell, in every step the sequence waited."""
    trace = wide_trace(64, 64, waits=True)
    for step in trace.steps:
        for wait in step.schedule.waits:
            wait.kind, wait.head, wait.by = "tokens", None, list(range(200))
    fig = timeline_figure(trace, 10)
    waits = [cell for row in fig.data[0].text for cell in row if "budget" in cell]
    assert waits and all(cell.endswith("used by #0, #1, #2, #3, #4, #5, #6, #7 and 192 more") for cell in waits)
