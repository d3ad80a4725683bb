"""The logit lens panel: what each layer would have predicted, for the token sampled at the cursor.

Rows are layers (the first at the bottom, as the residual stream flows up), columns the five
most likely tokens of that layer's guess, colour its probability. The top row is the model's
real prediction; reading downwards shows from which layer on the model "knew" the answer.
"""

from __future__ import annotations

import plotly.graph_objects as go

from inspector.trace.model import Trace
from inspector.views.colors import PROBABILITY_SCALE, scale_color, text_color_on
from inspector.views.figure import empty_figure, make_figure, sequence_or_placeholder
from inspector.views.selection import Selection
from inspector.views.tokens import axis_label

ROW_PX = 20  # height of a layer's row
NOT_RECORDED = "The logit lens was not recorded: tick 'Logit lens' under Capture, then Reset"


def logit_lens_figure(trace: Trace, index: int, selection: Selection | None = None) -> go.Figure:
    """Heatmap [layers x top-5] of the selected sequence's token sampled at step `index`."""
    picked = sequence_or_placeholder(trace, index, selection, "Logit lens")
    if isinstance(picked, go.Figure):
        return picked
    seq_id, title = picked
    token = trace.steps[index].token_of(seq_id)
    if token is None:
        return empty_figure(f"#{seq_id} sampled nothing at step {index}", title)
    if token.lens is None:
        dropped = trace.dropped_from("lens")
        if dropped is not None and index >= dropped:
            return empty_figure(f"the memory budget stopped recording the logit lens at step {dropped}", title)
        untraced = not trace.sequences[seq_id].traced
        return empty_figure(f"#{seq_id} is not a traced sequence" if untraced else NOT_RECORDED, title)
    lens = token.lens
    layers = list(range(len(lens.top_ids)))
    texts = [[axis_label(t or f"[{i}]", 10) for t, i in zip(row_texts, row_ids)]
             for row_texts, row_ids in zip(lens.top_texts, lens.top_ids)]
    # Where the sampled token first becomes the layer's best guess (and stays so).
    settled = next((layer for layer in layers if all(lens.top_ids[j][0] == token.token_id for j in layers[layer:])),
                   None)
    columns = [f"#{r + 1}" for r in range(len(lens.top_probs[0]))]
    heat = dict(
        type="heatmap", z=lens.top_probs, x=columns, y=layers, customdata=texts, zmin=0, zmax=1,
        colorscale=PROBABILITY_SCALE, colorbar=dict(title=dict(text="p"), thickness=10),
        hovertemplate="layer %{y}, guess %{x}: %{customdata} p=%{z:.3f}<extra></extra>",
    )
    # The guesses as a text layer over the cells, each black or white by its cell's colour: the
    # heatmap's own text takes one colour per trace, and plotly's pick read at 3.2-4.4:1 on the
    # mid blues.
    cells = [(column, layer, text, p) for layer, (row, probs) in enumerate(zip(texts, lens.top_probs))
             for column, text, p in zip(columns, row, probs)]
    words = dict(
        type="scatter", mode="text", hoverinfo="skip", showlegend=False, x=[c[0] for c in cells],
        y=[c[1] for c in cells], text=[c[2] for c in cells],
        textfont=dict(size=11, color=[text_color_on(scale_color(PROBABILITY_SCALE, c[3])) for c in cells]),
    )
    if settled is not None:
        title += f" · settles on the sampled token at layer {settled}"
    # A row per layer, tall enough for its five guesses to be read (30 layers: 690 px; the tab scrolls).
    height = max(380, 90 + ROW_PX * len(layers))
    return make_figure([heat, words], title, height, f"lens-{seq_id}",
                       yaxis=dict(title=dict(text="layer"), dtick=1 if len(layers) <= 40 else 5),
                       xaxis=dict(side="top"), margin=dict(l=56, r=16, t=80, b=16))
