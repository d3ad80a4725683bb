"""Block tables: each sequence's map from logical KV blocks to physical ones, at the cursor.

A sequence's tokens are contiguous to the model (positions 0, 1, 2...) but its K/V live in
whatever physical blocks were free: logical block i (positions i*block_size ..) sits in physical
block table[i]. Reading the rows side by side shows the sharing the grid only hints at: two
sequences with the same prompt prefix point their first logical blocks at the same physical
blocks (dashed border: shared), and a block reused from the prefix cache in this step is
outlined (hit). Cells are coloured like the KV grid.
"""

from __future__ import annotations

from inspector.trace.model import Trace
from inspector.views.figure import step_problem
from inspector.views.markup import empty_panel, panel, seq_background, seq_label


def block_tables_html(trace: Trace, index: int) -> str:
    """One row per sequence holding blocks at the end of step `index`."""
    problem = step_problem(trace, index)
    if problem is not None:
        return empty_panel(problem)
    kv, block_size = trace.steps[index].kv, trace.engine.block_size
    caption = (
        f'<div class="mlv-caption">Block tables · step {index} · logical block → physical block, {block_size} tokens '
        "per block · dashed S: shared (ref count &gt; 1) · outlined H: prefix-cache hit in this step</div>"
    )
    tables = kv.block_tables()
    if not tables:
        return panel(f'{caption}<div class="mlv-empty">No sequence holds KV blocks at step {index}</div>')
    entries = {e.block_id: e for e in kv.entries()}
    rows = []
    for seq_id, table in tables.items():
        cells = []
        for logical, physical in enumerate(table):
            e = entries.get(physical)
            shared = e is not None and e.ref_count > 1
            hit = e is not None and e.hit
            classes = "mlv-block" + (" mlv-shared" if shared else "") + (" mlv-hit" if hit else "")
            first = logical * block_size
            fill = e.fill if e is not None else 0
            title = f"logical {logical} (positions {first}..{first + block_size - 1}) → physical {physical}, " \
                    f"{fill}/{block_size} tokens"
            if shared:
                title += f", shared by {', '.join(f'#{o}' for o in e.owners)}"
            if hit:
                title += ", prefix-cache hit"
            marks = ("S" if shared else "") + ("H" if hit else "")
            cells.append(
                f'<td class="{classes}" style="background:{seq_background(seq_id)}" title="{title}">'
                f"{logical}→{physical}{f' <sup>{marks}</sup>' if marks else ''}</td>"
            )
        rows.append(f"<tr><th>{seq_label(seq_id)}</th>{''.join(cells)}</tr>")
    return panel(f'{caption}<table>{"".join(rows)}</table>', "mlv-kv")
