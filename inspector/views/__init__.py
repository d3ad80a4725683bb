"""The UI's views: pure functions from (trace, cursor step, selection) to a figure or HTML.

    from inspector.views import Selection, timeline_figure, text_html
    fig = timeline_figure(trace, index)               # a plotly Figure
    html = text_html(trace, index)                    # an HTML string
    fig = attention_figure(trace, index, Selection(seq_id=0, layer=3, head=None))

Every builder reads the trace and nothing else: no globals, no I/O, no engine. So a view of a
saved trace is the same as a view of a live run, and the app redraws a panel by calling its
builder again with the new cursor. Every title and panel names "step {index}", so it is plain
which step a panel shows. When there is nothing to show (no step yet, a sequence not traced, a
layer not captured...) a builder returns a placeholder that says why, and never raises.

One idea per file: selection.py (what the user picked, and which sequence "auto" shows),
colors.py (one palette), states.py (what each sequence did at each step), tokens.py (token
texts, escaped), queries.py (which query the attention views show), sharing.py (shared blocks
and copies on write, in words), groups.py (a request's samples or beams, listed together),
lineage.py (which sequence forks which, and the "#3 ← #1" labels), compare.py (two runs of the
same requests, from their TraceDiff), figure.py and markup.py
(shared plumbing), stylesheet.py (the panels' CSS, which a page includes once: a panel's HTML
carries none), text_parts.py (the Text panel as keyed parts, for a page that redraws
only what changed), then one file per panel.
"""

from inspector.views.attention_map import attention_figure
from inspector.views.block_tables import block_tables_html
from inspector.views.branch import align, branch_html
from inspector.views.colors import STATE_COLORS, sequence_color
from inspector.views.compare import compare_figure, compare_html
from inspector.views.figure import FIGURE_TEMPLATE, NO_STEP, empty_figure
from inspector.views.fork_choices import fork_choices_html
from inspector.views.kv_cache import kv_cache_figure
from inspector.views.lineage import fork_label, fork_labels, lineage_order
from inspector.views.logit_lens import logit_lens_figure
from inspector.views.logits import logits_figure, logits_history_figure
from inspector.views.markup import escape
from inspector.views.selection import Selection, resolve
from inspector.views.states import STATES, sequence_states
from inspector.views.step_details import step_details_html
from inspector.views.stylesheet import STYLESHEET
from inspector.views.text_panel import message_parts, text_html, text_parts
from inspector.views.text_parts import TextParts, join_text
from inspector.views.timeline import timeline_figure

__all__ = [
    "FIGURE_TEMPLATE", "NO_STEP", "STATES", "STATE_COLORS", "STYLESHEET", "Selection", "align", "attention_figure", "block_tables_html",
    "branch_html", "compare_figure", "compare_html", "empty_figure", "escape", "fork_choices_html", "fork_label", "fork_labels",
    "kv_cache_figure", "lineage_order", "resolve",
    "logit_lens_figure", "logits_figure", "logits_history_figure", "message_parts", "sequence_color", "sequence_states",
    "step_details_html", "text_html", "text_parts", "TextParts", "join_text", "timeline_figure",
]
