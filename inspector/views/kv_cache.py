"""The paged KV cache as a grid of physical blocks, coloured by the sequence holding each.

Paged attention stores each sequence's keys and values in fixed-size blocks (block_size tokens
each) taken from one shared pool, wherever free ones are, like pages of virtual memory: a
sequence's block table maps its logical blocks (positions 0..15, 16..31, ...) to physical ones.
The grid draws the pool in physical order, so you see what the scheduler sees:

- a cell in a sequence's colour is a block it holds; hover for how many tokens it holds;
- "×2", "×3"...: a block shared by that many sequences (its reference count): a common prompt
  prefix is stored once, and every sequence starting with it points at the same block; so do
  a fork, the samples of one prompt and the beams of a search (the vLLM paper's parallel
  sampling and beam search), which share their parent's blocks instead of copying them;
- "C": the block a copy on write made in this step: a fork's prefix ending inside a block
  shares the full blocks before it, but the partly filled one would be written by both, so
  the fork gets a copy of its filled slots (hover: "copy of block 5's 7 slots for #3");
- "H": a block that served a prefix-cache hit in this step: a new prompt began with tokens
  already computed, so their K/V were reused instead of computed;
- light blue-grey: a free block that still holds a cached prefix: it is free to take, but until
  then a later prompt with that prefix can still hit it;
- grey: free.

When the selected sequence is traced, circles show where the query the attention panel shows
(queries.py: the cursor step's, or the last one before it) put its attention, summed per
physical block (the selected head, or the mean of the heads when none is selected): attention
reads K/V through the block table, scattered over the pool.

The pool can hold thousands of blocks: the grid is one heatmap (one cell per block), not a shape
per block. It draws the first MAX_GRID_BLOCKS blocks, more when a recorded block lies past them
(the trace records every block in use, so those past the last recorded one are free), and
never more than MAX_DRAWN_BLOCKS: a figure's JSON grows with its cells, and is built and sent on
every redraw (docs/perf-notes.md, "The web UI's views").
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from inspector.trace.attention_rows import mass_per_block
from inspector.trace.model import KVBlockEntry, NotRecorded, Trace
from inspector.trace.why_text import eviction_text
from inspector.views.colors import CACHED_FREE_COLOR, FREE_COLOR, sequence_color, text_color_on
from inspector.views.figure import clamp_height, discrete_colorscale, empty_figure, make_figure, step_problem
from inspector.views.queries import cursor_query, query_note
from inspector.views.selection import Selection, selected_seq_id
from inspector.views.sharing import copied_blocks, copy_notes, shared_words

MAX_GRID_BLOCKS = 4096
MAX_LEGEND_HOLDERS = 24  # sequences named in the legend; the rest are counted in one entry
_OUTLINE = {"#000000": "white", "#ffffff": "black"}  # a mark's outline: the other colour
MAX_DRAWN_BLOCKS = 2**18  # bounds the figure's JSON; an 80 GB GPU's whole pool fits (docs/perf-notes.md)


def grid_columns(num_blocks: int) -> int:
    """Blocks per row: 16, or more for a large pool so the grid stays about square."""
    return 16 if num_blocks <= 256 else 32 if num_blocks <= 1024 else 64


def kv_cache_figure(trace: Trace, index: int, selection: Selection | None = None) -> go.Figure:
    """Every physical block at the end of step `index`; the selected query's attention per block."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_figure(problem)
    selection = selection or Selection()
    kv, block_size = trace.steps[index].kv, trace.engine.block_size
    entries = kv.entries()
    holders = list(kv.block_tables())  # the sequences holding blocks, in arrival order
    # Categories, each one colour of the grid: free, free but cached, then one per holder.
    names = ["free", "free, cached", *(f"#{s}" for s in holders)]
    colors = [FREE_COLOR, CACHED_FREE_COLOR, *(sequence_color(s) for s in holders)]
    category = {seq_id: 2 + i for i, seq_id in enumerate(holders)}

    highest = entries[-1].block_id if entries else -1
    shown = min(kv.num_blocks, max(MAX_GRID_BLOCKS, min(highest + 1, MAX_DRAWN_BLOCKS)))
    entries = [e for e in entries if e.block_id < shown]
    columns = min(grid_columns(shown), shown)  # a pool of 12 blocks gets 12 columns, not 16 with 4 empty
    rows = math.ceil(shown / columns)
    z = np.full(rows * columns, np.nan)  # NaN: past the pool's end, drawn as nothing
    z[:shown] = 0
    hover = ["free"] * (rows * columns)

    mass, note = _attention_mass(trace, index, selection)
    copied = copied_blocks(trace, index)
    labels: dict[int, list[str]] = {}  # block -> its marks: "×2" (shared by 2), "H" (hit), "C" (copied)
    for e in entries:
        if e.owners:
            z[e.block_id] = category[e.owners[0]]  # a shared block takes its oldest holder's colour
        elif e.cached:
            z[e.block_id] = 1
        hover[e.block_id] = _describe(e, block_size, mass.get(e.block_id))
        labels[e.block_id] = [m for m, on in ((f"×{e.ref_count}", e.ref_count > 1), ("H", e.hit)) if on]
    # The copies on write of this step, on both blocks (a block freed since is drawn free, still noted).
    for block, lines in copy_notes(trace, index).items():
        if block < shown:
            hover[block] = "<br>".join([hover[block], *lines])
    # The cached blocks this step reused for another sequence: whose prefix went, for whom.
    for e in trace.steps[index].schedule.evictions:
        if e.block_id < shown:
            hover[e.block_id] = "<br>".join([hover[e.block_id], eviction_text(e)])
    for block in copied:
        if block < shown:
            labels.setdefault(block, []).append("C")
    marks = [(block, " ".join(m)) for block, m in sorted(labels.items()) if m]

    data = [
        dict(
            type="heatmap",
            z=z.reshape(rows, columns),
            customdata=np.arange(rows * columns).reshape(rows, columns),
            text=[hover[r * columns : (r + 1) * columns] for r in range(rows)],
            hovertemplate="block %{customdata}<br>%{text}<extra></extra>",
            hoverongaps=False,
            colorscale=discrete_colorscale(colors),
            zmin=-0.5,
            zmax=len(colors) - 0.5,
            xgap=2,
            ygap=2,
            showscale=False,  # the legend below says what each colour is (_legend)
            meta=names,  # each colour code's name, for a reader of the figure's JSON
        )
    ]
    if mass:
        blocks = [b for b in mass if b < shown]
        data.append(dict(
            type="scatter", mode="markers", showlegend=False,
            x=[b % columns for b in blocks], y=[b // columns for b in blocks],
            marker=dict(size=[4 + 18 * math.sqrt(mass[b]) for b in blocks], color="rgba(20,20,20,0.55)",
                        line=dict(width=1, color="white")),
            customdata=[[b, mass[b]] for b in blocks],
            hovertemplate="block %{customdata[0]}<br>attention mass %{customdata[1]:.1%}<extra></extra>",
        ))
    if marks:
        # Black or white, whichever reads on the block's colour (a fixed dark grey read at 3.4:1 on
        # #0's blue), outlined in the other: readable on an attention circle too.
        ink = [text_color_on(colors[int(z[b])]) for b, _ in marks]
        data.append(dict(
            type="scatter", mode="text", hoverinfo="skip", showlegend=False,
            x=[b % columns for b, _ in marks], y=[b // columns for b, _ in marks],
            text=[m for _, m in marks],
            textfont=dict(size=11, color=ink, shadow=[f"0px 0px 2px {_OUTLINE[c]}" for c in ink]),
        ))

    data += _legend(names, colors)

    notes = [note]
    if copied:
        notes.append("C: a copy on write in this step (hover it)")
    if shown < kv.num_blocks:
        notes.append(f"blocks {shown}..{kv.num_blocks - 1} not drawn" + ("" if highest >= shown else ": free"))
    if not kv.cached_free_listed:
        notes.append(f"{kv.num_cached_free} free blocks hold cached prefixes (too many to list)")
    title = f"KV cache · step {index} · {kv.num_used}/{kv.num_blocks} blocks used"
    subtitle = " · ".join(n for n in notes if n)
    step_rows = max(1, rows // 12)
    step_columns = math.ceil(columns / 8)  # at most 8 labels across: readable on a phone's 300 px plot too
    return make_figure(
        data,
        title + (f"<br><sup>{subtitle}</sup>" if subtitle else ""),
        clamp_height(140 + 24 * rows),
        "kv-cache",
        xaxis=dict(showgrid=False, zeroline=False, tickvals=list(range(0, columns, step_columns)), side="top",
                   constrain="domain", range=[-0.5, columns - 0.5]),
        yaxis=dict(showgrid=False, zeroline=False, autorange="reversed", scaleanchor="x", constrain="domain",
                   tickvals=list(range(0, rows, step_rows)), ticktext=[str(r * columns) for r in range(0, rows, step_rows)]),
        margin=dict(l=48, r=16, t=72, b=16),
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.02, yanchor="top", font=dict(size=11),
                    itemclick=False, itemdoubleclick=False),
    )


def _legend(names: list[str], colors: list[str]) -> list[dict]:
    """One legend entry per colour of the grid: a square marker of a trace with no points.
    A legend, not a colour bar: it wraps its entries onto more lines in a narrow plot, where a
    bar's labels overlapped and its width squeezed the grid (unreadable on a phone)."""
    entries = [dict(type="scatter", mode="markers", x=[None], y=[None], name=name, hoverinfo="skip", showlegend=True,
                    marker=dict(symbol="square", size=12, color=color))
               for name, color in zip(names[: 2 + MAX_LEGEND_HOLDERS], colors, strict=False)]
    if len(names) > 2 + MAX_LEGEND_HOLDERS:
        more = len(names) - 2 - MAX_LEGEND_HOLDERS
        entries.append(dict(type="scatter", mode="markers", x=[None], y=[None], name=f"{more} more (hover a block)",
                            hoverinfo="skip", showlegend=True, marker=dict(symbol="square", size=12, color="rgba(0,0,0,0)")))
    return entries


def _attention_mass(trace: Trace, index: int, selection: Selection) -> tuple[dict[int, float], str]:
    """{physical block: attention mass} of the query the attention panel shows at the cursor
    step (queries.py), and a note saying whose it is, or why there is none."""
    seq_id = selected_seq_id(trace, selection, index)
    if seq_id is None or seq_id not in trace.sequences:
        return {}, ""
    heads = range(trace.model.num_heads) if selection.head is None else [selection.head]
    try:
        query = cursor_query(trace, seq_id, index)
        # Through the block table the query ran with: the physical blocks it read.
        per_head = [mass_per_block(trace.attention_row(seq_id, selection.layer, h, query.position),
                                   query.scheduled.block_table, trace.engine.block_size) for h in heads]
    except NotRecorded as exc:
        return {}, f"no attention overlay: {exc}"
    mass = {b: sum(m[b] for m in per_head) / len(per_head) for b in per_head[0]}
    head = "mean of heads" if selection.head is None else f"head {selection.head}"
    where = f"#{seq_id} pos {query.position}{query_note(trace, seq_id, index, query)}"
    return mass, f"circles: attention of {where}, layer {selection.layer}, {head}"


def _describe(e: KVBlockEntry, block_size: int, mass: float | None) -> str:
    """A block's hover text (no trace text in it: only numbers and ids)."""
    owners = ", ".join(f"#{o}" for o in e.owners) or "none"
    shared = shared_words(e)
    lines = [
        f"ref count {e.ref_count}" + (f" ({shared})" if shared else ""),
        f"holds {e.fill}/{block_size} tokens",
        f"owners {owners}",
    ]
    if e.cached:
        lines.append("cached: a later prompt with this prefix can reuse it")
    if e.hit:
        lines.append("served a prefix-cache hit in this step")
    if mass is not None:
        lines.append(f"attention mass {mass:.1%}")
    return "<br>".join(lines)
