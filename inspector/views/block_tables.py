"""Block tables: each sequence's map from logical KV blocks to physical ones, at the cursor.

A sequence's tokens are contiguous to the model (positions 0, 1, 2...) but its K/V live in
whatever physical blocks were free: logical block i (positions i*block_size ..) sits in physical
block table[i]. Reading the rows side by side shows the sharing the grid only hints at, as the
vLLM paper draws it: two sequences with the same prompt prefix, a fork and its parent, the
samples of one prompt or the beams of a search point their first logical blocks at the same
physical blocks. A shared block looks the same in every table that holds it: the colour of its
oldest holder (as in the KV grid), a dashed border and "×2" (its reference count); hover says
who holds it. The block a copy on write filled in this step is marked C (hover: copied from
which block, how many slots, for whom; sharing.py), and a block reused from the prefix cache
in this step is outlined (H). Other cells take their sequence's colour, like the KV grid.
"""

from __future__ import annotations

from inspector.trace.model import KVBlockEntry, Trace
from inspector.views.figure import step_problem
from inspector.views.markup import empty_panel, panel, seq_background, seq_label
from inspector.views.sharing import copied_blocks, copy_notes, shared_words


def block_tables_html(trace: Trace, index: int) -> str:
    """One row per sequence holding blocks at the end of step `index`."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_panel(problem)
    kv, block_size = trace.steps[index].kv, trace.engine.block_size
    caption = (
        f'<div class="mlv-caption">Block tables · step {index} · logical block → physical block, {block_size} tokens '
        "per block · dashed ×n: shared by n sequences (its reference count), coloured as its oldest holder · "
        "C: copied on write in this step · outlined H: prefix-cache hit in this step</div>"
    )
    tables = kv.block_tables()
    if not tables:
        return panel(f'{caption}<div class="mlv-empty">No sequence holds KV blocks at step {index}</div>')
    entries = {e.block_id: e for e in kv.entries()}
    notes, copied = copy_notes(trace, index), copied_blocks(trace, index)
    rows = []
    for seq_id, table in tables.items():
        cells = [_cell(seq_id, logical, physical, entries.get(physical), block_size, notes.get(physical, []),
                       physical in copied) for logical, physical in enumerate(table)]
        rows.append(f"<tr><th>{seq_label(seq_id)}</th>{''.join(cells)}</tr>")
    return panel(f'{caption}<table>{"".join(rows)}</table>', "mlv-kv")


def _cell(seq_id: int, logical: int, physical: int, e: KVBlockEntry | None, block_size: int, notes: list[str],
          copied: bool) -> str:
    """Logical block `logical` of `seq_id`'s table, held in block `physical` (ids and counts only)."""
    shared = e is not None and e.ref_count > 1
    hit = e is not None and e.hit
    classes = "mlv-block" + (" mlv-shared" if shared else "") + (" mlv-hit" if hit else "") + \
        (" mlv-copied" if copied else "")
    first = logical * block_size
    fill = e.fill if e is not None else 0
    title = ", ".join([f"logical {logical} (positions {first}..{first + block_size - 1}) → physical {physical}, "
                       f"{fill}/{block_size} tokens", *([shared_words(e)] if shared else []),
                       *(["prefix-cache hit"] if hit else []), *notes])
    marks = " ".join(m for m, on in ((f"×{e.ref_count}" if shared else "", shared), ("H", hit), ("C", copied)) if on)
    # A shared block takes its oldest holder's colour in every table: the same block looks the same.
    owner = e.owners[0] if shared and e.owners else seq_id
    return (f'<td class="{classes}" style="background:{seq_background(owner)}" data-block="{physical}" '
            f'title="{title}">{logical}→{physical}{f" <sup>{marks}</sup>" if marks else ""}</td>')
