"""Attention: where one query looked, computed on demand from the recorded queries and keys.

For the selected sequence and layer, the query is the last position the cursor step computed
(queries.py). Its attention row is softmax(q . K * scale) over the keys of positions 0..q: how
much each earlier token contributes to this token's output in this layer. Three shapes:

- one head: a strip over the keys, token texts below. Many heads put much of their weight on
  the first token (an "attention sink"); others look at the previous token, or at a word the
  current one refers to.
- every head of the layer (head None): one row per head, as small multiples: heads of one layer
  specialise, and comparing them side by side shows it.
- the full matrix: every recorded query (rows) x keys, lower-triangular because a token never
  sees the future (causal masking). Queries served by the prefix cache were never computed for
  this sequence, so their rows are missing.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from inspector.trace.model import NotRecorded, Trace
from inspector.views.colors import PROBABILITY_SCALE
from inspector.views.figure import clamp_height, empty_figure, make_figure, step_problem
from inspector.views.queries import Query, cursor_query, query_note
from inspector.views.selection import Selection, selected_seq_id
from inspector.views.tokens import axis_label, position_pieces

# Token labels on an axis; past that every n-th one (the hover still names each key). Each
# label is text the browser measures on every redraw (docs/perf-notes.md, "The web UI's views").
MAX_TICKS = 16
# The most cells one attention figure draws, as the KV grid (kv_cache.py): a trace may hold a
# thousand heads and thousands of positions within its file limits, and every head's row of
# 1,024 heads x 4,096 keys was a 139 MB figure, the full matrix of 4,096 queries 100 MB.
MAX_CELLS = 2**18
# The most head x cell scores the full matrix's mean of heads computes: 1,024 heads over that
# matrix would have taken minutes. Past it the matrix keeps its last queries (rows).
MAX_HEAD_CELLS = 2**24


def attention_figure(trace: Trace, index: int, selection: Selection | None = None) -> go.Figure:
    """The selected sequence's attention at step `index` (see the module docstring)."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_figure(problem)
    selection = selection or Selection()
    seq_id = selected_seq_id(trace, selection, index)
    title = f"Attention · step {index}"
    if seq_id is None:
        return empty_figure("No sequence in this trace", title)
    title += f" · seq #{seq_id} · layer {selection.layer}"
    try:
        query = cursor_query(trace, seq_id, index)
        # Asking the trace for one row first checks everything (traced? layer captured? head in
        # range? query computed, not from the prefix cache, not dropped?) and says what is missing.
        first_head = 0 if selection.head is None else selection.head
        row = trace.attention_row(seq_id, selection.layer, first_head, query.position)
    except NotRecorded as exc:
        return empty_figure(str(exc), title)
    labels = [axis_label(p) for p in position_pieces(trace, seq_id, query.position + 1)]
    where = f"query pos {query.position} {labels[query.position]}" + query_note(trace, seq_id, index, query)
    if selection.full_matrix:
        return _matrix_figure(trace, seq_id, selection, query, labels, f"{title} · {_head_name(selection)} · {where}")
    if selection.head is None:
        return _heads_figure(trace, seq_id, selection, query, labels, f"{title} · all heads · {where}")
    return _row_figure(row, seq_id, selection, labels, f"{title} · head {selection.head} · {where}")


def _row_figure(row: torch.Tensor, seq_id: int, selection: Selection, labels: list[str], title: str) -> go.Figure:
    heatmap = dict(
        type="heatmap", z=[row.tolist()], x=list(range(len(labels))), y=[f"h{selection.head}"],
        customdata=[labels], colorscale=PROBABILITY_SCALE, zmin=0,
        hovertemplate="key pos %{x} %{customdata}<br>attention %{z:.4f}<extra></extra>",
        colorbar=dict(thickness=12, outlinewidth=0),
    )
    return make_figure([heatmap], title, 260, _uirevision(seq_id, selection), xaxis=_token_axis(labels),
                       yaxis=dict(showgrid=False))


def _heads_figure(trace: Trace, seq_id: int, selection: Selection, query: Query, labels: list[str],
                  title: str) -> go.Figure:
    heads = range(min(trace.model.num_heads, max(1, MAX_CELLS // len(labels))))
    if len(heads) < trace.model.num_heads:
        title += f" · heads 0–{len(heads) - 1} of {trace.model.num_heads} (pick a head for the others)"
    z = [trace.attention_row(seq_id, selection.layer, h, query.position).tolist() for h in heads]
    heatmap = dict(
        type="heatmap", z=z, x=list(range(len(labels))), y=[f"h{h}" for h in heads],
        customdata=[labels] * len(z), colorscale=PROBABILITY_SCALE, zmin=0, ygap=1,
        hovertemplate="%{y} · key pos %{x} %{customdata}<br>attention %{z:.4f}<extra></extra>",
        colorbar=dict(thickness=12, outlinewidth=0),
    )
    return make_figure([heatmap], title, clamp_height(110 + 24 * len(z)), _uirevision(seq_id, selection),
                       xaxis=_token_axis(labels), yaxis=dict(autorange="reversed", showgrid=False))


def _matrix_figure(trace: Trace, seq_id: int, selection: Selection, query: Query, labels: list[str],
                   title: str) -> go.Figure:
    heads = trace.model.num_heads if selection.head is None else 1
    rows = max(1, min(MAX_CELLS, MAX_HEAD_CELLS // heads) // len(labels))
    queries, probs = attention_matrix(trace, seq_id, selection.layer, selection.head, query.position, rows)
    recorded = int((trace.attention[seq_id].q_step[: query.position + 1] >= 0).sum())
    if len(queries) < recorded:
        title += f" · the last {len(queries)} of {recorded} queries (a figure of every one would be too large)"
    heatmap = dict(
        type="heatmap", z=probs.numpy(), x=list(range(len(labels))), y=queries,
        colorscale=PROBABILITY_SCALE, zmin=0, hoverongaps=False,
        hovertemplate="query pos %{y} · key pos %{x}<br>attention %{z:.4f}<extra></extra>",
        colorbar=dict(thickness=12, outlinewidth=0),
    )
    y_axis = _token_axis([labels[q] for q in queries], values=queries, vertical=True)
    return make_figure([heatmap], title, 380, _uirevision(seq_id, selection), xaxis=_token_axis(labels),
                       yaxis=dict(y_axis, autorange="reversed"))


def attention_matrix(trace: Trace, seq_id: int, layer: int, head: int | None, query_pos: int,
                     max_queries: int | None = None) -> tuple[list[int], torch.Tensor]:
    """Every recorded query of `seq_id` at positions 0..query_pos (the last `max_queries` of them
    when given) against keys 0..query_pos, for one head (or the mean of all heads when head is
    None), in one batched computation.
    -> (the query positions, probs [queries, query_pos + 1] fp32 with NaN above the diagonal).
    Row r equals trace.attention_row(seq_id, layer, head, queries[r]) padded with NaN."""
    store, model = trace.attention[seq_id], trace.model
    slot = store.slot(layer)
    queries = torch.nonzero(store.q_step[: query_pos + 1] >= 0).flatten().tolist()
    if max_queries is not None:
        queries = queries[-max_queries:]
    heads = list(range(model.num_heads)) if head is None else [head]
    group = model.num_heads // model.num_kv_heads  # query heads per kv head (grouped-query attention)
    q = store.q[slot, queries]  # [R, H, D]
    k = store.k[slot, : query_pos + 1]  # [T, Hkv, D]
    future = torch.arange(query_pos + 1)[None, :] > torch.tensor(queries)[:, None]  # [R, T]: causal mask
    # A head at a time, summed: the memory stays [R, T] whatever the number of heads. In float64
    # as attention_probs computes a row: large finite queries and keys overflow fp32's products.
    total = torch.zeros(len(queries), query_pos + 1, dtype=torch.float64)
    for h in heads:
        scores = q[:, h].double() @ k[:, h // group].double().T * model.softmax_scale  # [R, T]
        total += scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return queries, (total / len(heads)).float().masked_fill(future, float("nan"))


def _token_axis(labels: list[str], values: list[int] | None = None, vertical: bool = False) -> dict:
    """An axis of positions labelled with their tokens; every n-th when there are many (a
    vertical axis has room for fewer)."""
    values = values if values is not None else list(range(len(labels)))
    every = max(1, -(-len(labels) // (MAX_TICKS // 2 if vertical else MAX_TICKS)))
    return dict(tickvals=values[::every], ticktext=labels[::every], tickangle=0 if vertical else -60, showgrid=False,
                tickfont=dict(size=10))


def _head_name(selection: Selection) -> str:
    return "mean of heads" if selection.head is None else f"head {selection.head}"


def _uirevision(seq_id: int, selection: Selection) -> str:
    """Zoom survives stepping the cursor, and resets when what the axes mean changes."""
    return f"attention-{seq_id}-{selection.layer}-{selection.head}-{selection.full_matrix}"
