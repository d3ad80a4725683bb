"""The next-token distribution: what the model proposed, and what was drawn.

At every step where a sequence samples, the model scores every vocabulary token; softmax turns
the scores into probabilities. The recorder keeps the top k. Two bars per token:

- the model's probability (softmax of the logits): what the model believes;
- the sampling probability: the distribution the token was actually drawn from, after
  temperature, top-k and top-p reshaped it (greedy decoding puts all of it on the top token).

The sampled token's bar is red. Entropy (in nats) sums up how unsure the model was: 0 means
certain; a flat choice between n tokens is ln(n). A sampled token of low probability or high
rank is where generations go off course: the history view plots both over the run.
"""

from __future__ import annotations

import plotly.graph_objects as go

from inspector.trace.model import Trace
from inspector.views.colors import SAMPLED_COLOR, sequence_color, tint
from inspector.views.figure import (
    LEGEND_AT_BOTTOM,
    MARGIN,
    clamp_height,
    cursor_line,
    empty_figure,
    make_figure,
    sequence_or_placeholder,
    step_ticks,
)
from inspector.views.queries import scheduled_in
from inspector.views.selection import Selection
from inspector.views.tokens import axis_label


def logits_figure(trace: Trace, index: int, selection: Selection | None = None) -> go.Figure:
    """Top-k bars of the selected sequence's token sampled at step `index`."""
    picked = sequence_or_placeholder(trace, index, selection, "Next token")
    if isinstance(picked, go.Figure):
        return picked
    seq_id, title = picked
    token = trace.steps[index].token_of(seq_id)
    if token is None:
        return empty_figure(_why_no_token(trace, seq_id, index), title)
    if token.logits is None:
        dropped = trace.dropped_from("logits")
        return empty_figure(f"the memory budget stopped recording logits at step {dropped}", title)
    g = token.logits
    ranks = list(range(len(g.top_ids)))
    labels = [axis_label(text or f"[{i}]", 16) for i, text in zip(g.top_ids, g.top_texts)]
    model_p, sampling_p = list(g.top_probs), list(g.top_sampling_probs)
    # The token's own text (the top-k list has it when it ranks there; text_delta is "" for a
    # token that ends mid-character or a special token like end-of-sequence).
    own = g.top_texts[g.sampled_rank] if g.sampled_rank < len(g.top_texts) else token.text_delta
    sampled_label = axis_label(own or f"[{token.token_id}]", 16)
    if g.sampled_rank >= len(ranks):  # drawn from outside the top k: one more bar, at its rank
        ranks.append(len(ranks))
        labels.append(f"rank {g.sampled_rank}: {sampled_label}")
        model_p.append(g.sampled_prob)
        sampling_p.append(None)
    sampled = min(g.sampled_rank, len(ranks) - 1)
    seq_color = sequence_color(seq_id)
    bars = [
        dict(type="bar", orientation="h", name="model p", y=ranks, x=model_p, customdata=labels,
             marker=dict(color=[SAMPLED_COLOR if r == sampled else seq_color for r in ranks]),
             hovertemplate="%{customdata}<br>model p=%{x:.4f}<extra></extra>"),
        dict(type="bar", orientation="h", name="sampling p", y=ranks, x=sampling_p, customdata=labels,
             marker=dict(color=tint(seq_color, 0.35)),
             hovertemplate="%{customdata}<br>sampling p=%{x:.4f}<extra></extra>"),
    ]
    title += (f" · sampled {sampled_label} p={g.sampled_prob:.3f} rank {g.sampled_rank}"
              f" · entropy {g.entropy:.2f} nats")
    return make_figure(
        bars, title, clamp_height(90 + 22 * len(ranks)), f"logits-{seq_id}",
        barmode="group", bargap=0.25,
        xaxis=dict(title=dict(text="probability"), range=[0, 1.08]),
        # A fixed left margin for labels of at most 16 characters: automargin would measure every
        # label and lay the figure out twice, on every redraw.
        yaxis=dict(tickvals=ranks, ticktext=[("▶ " if r == sampled else "") + label for r, label in zip(ranks, labels)],
                   autorange="reversed", tickfont=dict(size=11)),
        margin=dict(MARGIN, l=130),
        legend=LEGEND_AT_BOTTOM,
    )


def logits_history_figure(trace: Trace, index: int, selection: Selection | None = None) -> go.Figure:
    """Entropy and the sampled token's probability at each token of the selected sequence."""
    picked = sequence_or_placeholder(trace, index, selection, "Confidence over the run")
    if isinstance(picked, go.Figure):
        return picked
    seq_id, title = picked
    seq = trace.sequences[seq_id]
    if not seq.token_steps:
        return empty_figure(f"#{seq_id} has sampled no token yet", title)
    steps, entropy, prob, hover = [], [], [], []
    for step in seq.token_steps:
        token = trace.steps[step].token_of(seq_id)
        g = token.logits if token is not None else None
        steps.append(step)
        entropy.append(g.entropy if g else None)  # None: a gap, where the budget dropped logits
        prob.append(g.sampled_prob if g else None)
        text = axis_label(token.text_delta or f"[{token.token_id}]", 16) if token is not None else ""
        hover.append(f"{text} · rank {g.sampled_rank}" if g else f"{text} · logits not recorded")
    # Lines without markers: a marker per token doubles the drawing time of a long run. The
    # cursor step's own values are marked by shapes, so moving the cursor changes the layout
    # only and the lines need no redraw.
    lines = [
        dict(type="scatter", mode="lines", name="entropy (nats)", x=steps, y=entropy, customdata=hover,
             line=dict(color=sequence_color(seq_id), width=1.5),
             hovertemplate="step %{x}: %{customdata}<br>entropy %{y:.2f} nats<extra></extra>"),
        dict(type="scatter", mode="lines", name="sampled p", x=steps, y=prob, yaxis="y2", customdata=hover,
             line=dict(color=SAMPLED_COLOR, width=1.5, dash="dot"),
             hovertemplate="step %{x}: %{customdata}<br>p=%{y:.3f}<extra></extra>"),
    ]
    shapes = [cursor_line(index)]
    if index in seq.token_steps:
        at = seq.token_steps.index(index)
        for value, axis, color in ((entropy[at], "y", sequence_color(seq_id)), (prob[at], "y2", SAMPLED_COLOR)):
            if value is not None:
                shapes.append(_dot(index, value, axis, color))
    return make_figure(
        lines, title, 280, f"logits-history-{seq_id}",
        shapes=shapes,
        xaxis=dict(title=dict(text="step"), range=[-0.5, len(trace.steps) - 0.5], **step_ticks(len(trace.steps))),
        yaxis=dict(title=dict(text="entropy (nats)"), rangemode="tozero"),
        yaxis2=dict(title=dict(text="sampled p"), overlaying="y", side="right", range=[0, 1.05], dtick=0.25,
                    showgrid=False),
        legend=LEGEND_AT_BOTTOM,
        hovermode="x unified",
    )


def _dot(x: float, y: float, axis: str, color: str) -> dict:
    """An 8-pixel dot at data point (x, y) of the y axis `axis`, drawn as a layout shape."""
    return dict(type="circle", xref="x", yref=axis, xsizemode="pixel", ysizemode="pixel", xanchor=x, yanchor=y,
                x0=-4, x1=4, y0=-4, y1=4, fillcolor=color, line=dict(width=0))


def _why_no_token(trace: Trace, seq_id: int, index: int) -> str:
    """Why sequence `seq_id` sampled nothing at step `index`, in words."""
    x = scheduled_in(trace, seq_id, index)
    if x is not None:
        return (f"#{seq_id} computed positions {x.start}..{x.start + x.num_tokens - 1} at step {index}, a prompt "
                "chunk that does not end its prompt: it samples nothing yet")
    return f"#{seq_id} was not in the batch of step {index}: it sampled nothing"
