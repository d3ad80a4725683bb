"""One session -> the value of every panel on the page, for the step under its cursor.

Every handler ends here, so all panels always show the same step. The figures and HTML come
from inspector.views (pure functions), and so does the rule for which sequence, layer and head
they show (inspector/views/selection.py resolve); this module only takes the session's cursor
and selection and wraps the views in Gradio updates, in the order of OUTPUT_NAMES
(webui/layout.py wires the components in the same order).

The six plotly figures travel together as JSON in one carrier element ("figures"), and
static/app.js draws each with Plotly.react into a plot that stays on the page: Gradio's own
Plot component re-creates its plot on every update (a fresh Plotly.newPlot each time), too slow
for a slider move (docs/perf-notes.md, "The web UI's views"). The Text panel travels as its
keyed parts (text_carrier), which static/app.js draws into a panel of the page's own, redrawing
only the parts that changed.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
import plotly.graph_objects as go
import plotly.io as pio

from inspector import Trace, views
from webui.sessions import UISession

OUTPUT_NAMES = ("status", "slider", "text", "figures", "tables", "details", "forks", "branch", "compare", "seq", "layer",
                "head", "step", "run", "run_bp", "fork_text_go")
# The last outputs: the buttons that run the engine (Step, Run, Run to breakpoint, Fork with text),
# greyed on a trace from a file, where each could only answer that it cannot.
STEPPING = 4
API_OUTPUT_NAMES = OUTPUT_NAMES[:-STEPPING]  # what an API client gets: Gradio leaves buttons out of the API
FIGURE_NAMES = ("timeline", "kv", "attention", "logits", "history", "lens")  # the keys of the figures' JSON
AUTO = "auto"  # the sequence picker's value for "whichever sequence the step is about"


def status_html(session: UISession | None, message: str = "", error: bool = False) -> str:
    """The banner under the debugger bar: what the session shows, and the last message.
    data-update numbers the render, for the page to acknowledge once drawn (handlers.py);
    data-steps counts the steps it shows, which the page remembers across a reload (app.js)."""
    parts = []
    steps = 0
    if session is not None:
        trace = session.trace
        reset = "; Reset starts a live engine" if session.can_start_engine else ""
        if session.shares_startup_trace:
            source = f"trace file <b>{views.escape(session.opened_name)}</b> (read-only: this server runs no model)"
        elif session.shared_view:
            source = f"shared view of <b>{views.escape(session.opened_name)}</b> (read-only{reset})"
        elif session.opened is not None:
            source = f"trace file <b>{views.escape(session.opened_name)}</b> (read-only{reset})"
        elif trace is not None:
            source = f"live engine · {len(trace.sequences)} request(s)"
        else:
            source = "live engine · add prompts to start"
        steps = len(trace.steps) if trace is not None else 0
        parts.append(f"<span class='ml-source'>{source} · {steps} step(s) recorded</span>")
        past_limit = session.past_file_limit
        if past_limit is not None:  # on every render while it holds: the run goes on past it
            parts.append(f"<span class='ml-error ml-file-limit'>{views.escape(past_limit)}</span>")
    if message:
        kind = "ml-error" if error else "ml-info"
        role = " role='alert'" if error else ""  # an info message is read out by the page's #ml-announce (app.js)
        parts.append(f"<span class='{kind}'{role}>{views.escape(message)}</span>")
    running = "1" if session is not None and session.running else "0"
    update = session.updates_sent if session is not None else 0
    return (f"<div id='ml-status-inner' data-running='{running}' data-update='{update}' data-steps='{steps}'>"
            f"{' '.join(parts)}</div>")


def figures_html(figures: dict[str, go.Figure]) -> str:
    """The carrier of the figures: {name: plotly figure JSON} in an escaped data attribute
    (static/app.js reads it and draws each figure into the plot div "ml-plot-<name>"). Every
    figure has the views' one template (views.FIGURE_TEMPLATE, 7 KB of JSON): the page holds it
    once (figure_template_html) and app.js puts it back in each layout, so it is left out here.
    Sent, it was six copies in every update, a third of the figures' bytes."""
    payload = ",".join(f'"{name}":{_without_template(figure)}' for name, figure in figures.items())
    return f"<div class='ml-figure-data' data-figures=\"{views.escape('{' + payload + '}')}\"></div>"


def _without_template(figure: go.Figure) -> str:
    """The figure's JSON, its layout without the template."""
    plain = figure.to_dict()  # a copy: the figure itself keeps its template
    plain["layout"].pop("template", None)
    return pio.json.to_json_plotly(plain)


def text_carrier(parts: views.TextParts) -> str:
    """The Text panel's value: its parts (views.text_parts) as JSON, for a hidden text field
    (webui/layout.py) that static/app.js reads. A field's value is text, never parsed as HTML,
    so the JSON needs no escaping of its own (each part is escaped HTML already). In an HTML
    carrier's attribute, as the figures travel, escape() would make every quote and angle
    bracket of every chip an entity: a third more bytes on every cursor move than the panel's
    HTML sent whole (docs/perf-notes.md, stop 41); as a field's value, slightly fewer."""
    return json.dumps(parts, ensure_ascii=False, separators=(",", ":"))


def figure_template_html() -> str:
    """The figures' template for the page's head, once (static/app.js reads it)."""
    template = pio.json.to_json_plotly(views.FIGURE_TEMPLATE.to_plotly_json())
    return f"<meta name='ml-figure-template' content=\"{views.escape(template)}\">"


def head_label(trace: Trace, head: int) -> str:
    """A head picker entry; with tensor parallelism it names the rank that computed the head."""
    if trace.model.tensor_parallel_size == 1:
        return f"head {head}"
    return f"head {head} (rank {trace.model.rank_of_head(head)})"


def sequence_choices(trace: Trace) -> list[tuple[str, str]]:
    """The sequence picker's (label, value) of every sequence: each fork listed under its
    parent, marked ↳ and labelled with where it branched off (views.lineage_order, fork_labels)."""
    labels = views.fork_labels(trace)
    choices = []
    for seq_id, depth in views.lineage_order(trace):
        label = f"{'   ' * (depth - 1)}↳ {labels[seq_id]}" if depth else labels[seq_id]
        choices.append((label + (" · attention" if trace.sequences[seq_id].traced else ""), str(seq_id)))
    return choices


def compare_panel(session: UISession | None) -> Any:
    """The Compare tab, which only a comparison fills (handlers.py _compare): left as it is while
    it shows the session's run as it is; once the session shows another run (Reset, a step, a
    fork, an opened trace), a note instead, once. Left, the old verdict ("all 2 requests give the
    same tokens") stood beside an empty session, read as the new run's."""
    if session is None or session.compared is None:
        return gr.skip()
    trace, steps = session.compared
    if session.trace is trace and len(trace.steps) == steps:
        return gr.skip()
    session.compared = None
    return (f"<p class='ml-empty'>The comparison shown here was of an earlier run ({steps} steps); the session has "
            "changed since: press a button above to compare it again.</p>")


def render(session: UISession | None, message: str = "", error: bool = False, cursor_only: bool = False,
           slider_moved: bool = False) -> list[Any]:
    """Every panel's update, in OUTPUT_NAMES order. cursor_only: only the cursor moved, so the
    selection controls (sequence, layer, head) keep their choices and are not sent again.
    slider_moved: the user moved the slider to get here, and may have moved it on since this
    call left: its value is not sent back. Sent, it would pull the thumb back mid-drag, and the
    page's next call (Gradio sends the slider's value as it is then) would seek to that older
    step: a drag ended short of where the mouse let go."""
    trace = session.trace if session is not None else None
    index = session.index if session is not None else -1
    if session is not None:
        session.updates_sent += 1
    # A trace from a file cannot step or fork: those buttons go grey (they answered with a
    # message). A cursor move changes nothing there; an error without a session knows nothing.
    can_step = None if cursor_only or session is None else session.opened is None
    stepping = [gr.skip() if can_step is None else gr.Button(interactive=can_step)] * STEPPING
    if trace is None:
        placeholder = views.empty_figure("No step yet: add prompts and press Step")
        note = "<p class='ml-empty'>No step yet: add prompts and press Step.</p>"
        return [
            status_html(session, message, error),
            gr.Slider(minimum=0, maximum=1, value=0, interactive=False, label="Step: none recorded"),
            text_carrier(views.message_parts("No step yet: add prompts and press Step.")), figures_html(dict.fromkeys(FIGURE_NAMES, placeholder)), note, note, note, note, compare_panel(session),
            gr.Dropdown(choices=[], value=None), gr.Slider(), gr.Dropdown(), *stepping,
        ]
    selection = views.resolve(trace, session.selection, index)
    count = len(trace.steps)
    slider = gr.Slider(
        minimum=0, maximum=max(count - 1, 1), step=1, interactive=count > 1,
        label=f"Step {index} · steps 0–{count - 1} recorded" if count else "Step: none recorded",
        **({} if slider_moved else {"value": max(index, 0)}),
    )
    sequences = [("auto", AUTO)]  # README: it follows the step under the cursor
    sequences += sequence_choices(trace)
    picked = AUTO if session.selection.seq_id not in trace.sequences else str(session.selection.seq_id)
    heads = [("all heads", "all")] + [(head_label(trace, h), str(h)) for h in range(trace.model.num_heads)]
    figures = {
        "timeline": views.timeline_figure(trace, index),
        "kv": views.kv_cache_figure(trace, index, selection),
        "attention": views.attention_figure(trace, index, selection),
        "logits": views.logits_figure(trace, index, selection),
        "history": views.logits_history_figure(trace, index, selection),
        "lens": views.logit_lens_figure(trace, index, selection),
    }
    return [
        status_html(session, message, error),
        slider,
        text_carrier(views.text_parts(trace, index)),
        figures_html(figures),
        views.block_tables_html(trace, index),
        views.step_details_html(trace, index),
        views.fork_choices_html(trace, index, selection, session.live, session.can_start_engine),
        views.branch_html(trace, index, selection),
        compare_panel(session),
    ] + ([gr.skip()] * 3 if cursor_only else [
        gr.Dropdown(choices=sequences, value=picked),
        # Gradio refuses a slider whose minimum is its maximum: a one-layer model's range is 0..1,
        # fixed at 0, and hidden (shown, it offered a layer 1 the model lacks; the figures' titles
        # say "layer 0").
        gr.Slider(minimum=0, maximum=max(trace.model.num_layers - 1, 1), value=selection.layer, step=1,
                  interactive=trace.model.num_layers > 1, visible=trace.model.num_layers > 1),
        gr.Dropdown(choices=heads, value="all" if selection.head is None else str(selection.head)),
    ]) + stepping
