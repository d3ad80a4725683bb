"""What if? The alternatives at the cursor's step, as buttons that fork the sequence there.

Under the Next token chart: one button per token of the recorded top k for the selected
sequence at the cursor's step, most likely first, each with its probability under the model.
Clicking one asks the app to fork the sequence at that step with that token instead of the one
it drew (the button of the drawn token is disabled: that fork would repeat the sequence). The
buttons carry what the click needs as data attributes (data-seq, data-step, data-token,
data-rank); static/app.js sends them, and the server checks them all again, as it would any
request (webui/forking.py).

On a trace opened from a file there is no engine to run a fork: the buttons show, disabled,
and say so.
"""

from __future__ import annotations

from inspector.trace.model import Trace
from inspector.views.figure import step_problem
from inspector.views.lineage import quote
from inspector.views.markup import empty_panel, escape, panel, seq_background
from inspector.views.selection import Selection, resolve
from inspector.views.tokens import chip_text

# ".mlv.mlv-forks": two classes, so these rules outrank Gradio's own for a button in its page
# (".gradio-container-X .gradio-style button[disabled]" fades a disabled one to opacity 0.5).
FORK_CSS = """
.mlv.mlv-forks .mlv-fork-tok { font: inherit; cursor: pointer; border: 1px solid #bbb; border-radius: 4px;
  background: #fff; color: #222; padding: 1px 6px 1px 2px; margin: 0 4px 4px 0; }
.mlv.mlv-forks .mlv-fork-tok:hover:not([disabled]) { border-color: #222; background: #f6f6f6; }
/* A button that cannot fork (the drawn token, or any on a read-only trace) still names a token
   and its probability: full contrast (faded on Gradio's grey it read at 2.0:1); a dashed
   border and the cursor say it does nothing. */
.mlv.mlv-forks .mlv-fork-tok[disabled] { cursor: default; opacity: 1; filter: none; background: #fff; color: #222;
  border: 1px dashed #888; }
.mlv.mlv-forks .mlv-fork-tok .tok { margin-right: 4px; }
.mlv.mlv-forks .mlv-fork-tok small { color: #555; font-variant-numeric: tabular-nums; }
.mlv.mlv-forks .mlv-fork-tok.mlv-fork-taken { border: 2px solid #d62728; }
"""


def fork_choices_html(trace: Trace, index: int, selection: Selection | None = None, live: bool = True,
                      can_start_engine: bool = True) -> str:
    """The fork buttons for the selected sequence's token at step `index`. live: can this
    session run a fork (False for a trace opened from a file); can_start_engine: can its Reset
    start one (False where no model is loaded)."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_panel(problem)
    seq_id = resolve(trace, selection or Selection(), index).seq_id
    if seq_id is None:
        return empty_panel("No sequence in this trace")
    token = trace.steps[index].token_of(seq_id)
    if token is None:
        return empty_panel(f"What if? #{seq_id} drew no token at step {index}: move the cursor to a step where it "
                           "drew one to fork it there")
    g = token.logits
    if g is None:
        return empty_panel(f"What if? The logits of step {index} were not recorded (memory budget): no alternatives to show")
    drawn = g.top_texts[g.sampled_rank] if g.sampled_rank < len(g.top_texts) else token.text_delta
    drawn = quote(drawn or f"[{token.token_id}]")
    if live:
        how = (f"click another token to fork #{seq_id} here with it (the fork runs to #{seq_id}'s length; Pause "
               "stops it), or type text below")
    else:
        how = "forking needs a live engine: this trace is read-only" + (
            " (Reset starts one)" if can_start_engine else " and this server runs no model")
    caption = (f'<div class="mlv-caption">What if? · step {index} · #{seq_id} drew '
               f"{escape(drawn)} (p={g.sampled_prob:.3f}) · {escape(how)}</div>")
    buttons = []
    for rank, (token_id, text, prob) in enumerate(zip(g.top_ids, g.top_texts, g.top_probs)):
        taken = token_id == token.token_id
        disabled = " disabled" if taken or not live else ""
        title = f"rank {rank} · token id {token_id} · p={prob:.4f}" + (" · the token it drew" if taken else "")
        piece = chip_text(text) if text else f"⟨{token_id}⟩"
        buttons.append(
            f'<button type="button" class="mlv-fork-tok{" mlv-fork-taken" if taken else ""}"{disabled} '
            f'data-seq="{seq_id}" data-step="{index}" data-token="{token_id}" data-rank="{rank}" title="{title}">'
            f'<span class="tok" style="background:{seq_background(seq_id, 0.22)}">{piece}</span>'
            f"<small>{prob:.3f}</small></button>"
        )
    return panel(f"{caption}<div>{''.join(buttons)}</div>", "mlv-forks")
