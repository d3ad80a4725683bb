"""Forks, samples and beams in the views: the KV grid and the block tables show shared blocks
(reference count, holders) and the copy on write at the step it was made; the text panel lists
a request's samples or beams under it, a pruned beam greyed with the step that pruned it.

The run: the tiny random model's recorded run (test_inspector_support), then a user's fork
inside a block and a request of n = 2 samples (add_forks), then a request of n = 3 samples and
a beam search of width 3. Last, the README tour's fork step, on the embedded model.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from test_inspector_support import add_forks, record_tiny_run

from inspector import DebugSession
from inspector.trace.model import Trace
from inspector.views import (
    block_tables_html,
    kv_cache_figure,
    sequence_states,
    step_details_html,
    text_html,
    timeline_figure,
)
from inspector.views.colors import contrast, sequence_color, tint
from inspector.views.groups import Group, text_order
from minillama import LLMEngine, SamplingParams
from webui import defaults


@pytest.fixture(scope="module")
def run():
    run = record_tiny_run()
    ids = add_forks(run)
    prompt = torch.randint(0, 256, (7,), generator=torch.Generator().manual_seed(8)).tolist()
    ids["three"] = run.session.add(prompt, SamplingParams(temperature=1.0, seed=11, max_tokens=4, n=3))
    ids["beams"] = run.session.add(prompt, SamplingParams(max_tokens=6, beam_width=3))
    assert run.session.run().finished
    run.ids = ids
    return run


@pytest.fixture(scope="module")
def trace(run) -> Trace:
    return run.session.trace


def fork_step(trace: Trace, child: int) -> int:
    return next(e.step for e in trace.events if e.kind == "fork" and e.seq_id == child)


def grid_marks(fig) -> dict[int, str]:
    """Block -> the text drawn on its cell in the KV grid."""
    columns = np.asarray(fig.data[0].z).shape[1]
    texts = next((d for d in fig.data[1:] if d.mode == "text"), None)
    return {} if texts is None else {int(y) * columns + int(x): t for x, y, t in zip(texts.x, texts.y, texts.text)}


def grid_ink(fig, block: int) -> str:
    """The colour of the text drawn on block's cell."""
    columns = np.asarray(fig.data[0].z).shape[1]
    texts = next(d for d in fig.data[1:] if d.mode == "text")
    return next(ink for x, y, ink in zip(texts.x, texts.y, texts.textfont.color) if int(y) * columns + int(x) == block)


def grid_color(fig, block: int) -> str:
    """The colour of block's cell: the z of its category's flat band in the colorscale."""
    columns = np.asarray(fig.data[0].z).shape[1]
    category = int(np.asarray(fig.data[0].z)[block // columns][block % columns])
    return fig.data[0].colorscale[2 * category][1]


def grid_hover(fig, block: int) -> str:
    columns = np.asarray(fig.data[0].z).shape[1]
    return fig.data[0].text[block // columns][block % columns]


def table_cells(page: str) -> dict[int, list[tuple[int, str, str, str]]]:
    """Sequence -> its block-table cells: (physical block, classes, background, title + text)."""
    rows = re.findall(r"<tr><th>.*?#(\d+)</b></th>(.*?)</tr>", page)
    cell = re.compile(r'<td class="([^"]*)" style="background:([^"]*)" data-block="(\d+)" title="([^"]*)">(.*?)</td>')
    return {int(s): [(int(b), c, bg, f"{title} | {text}") for c, bg, b, title, text in cell.findall(cells)]
            for s, cells in rows}


# -- the KV grid and the block tables ----------------------------------------------------------------


def test_a_shared_block_shows_its_reference_count_and_holders_in_the_grid_and_both_tables(trace, run):
    parent, child = run.ids["parent"], run.ids["fork"]
    index = fork_step(trace, child)
    fork = next(f for f in trace.forks() if f.child_id == child)
    assert fork.shared_blocks, "the fork must share full blocks"
    fig, cells = kv_cache_figure(trace, index), table_cells(block_tables_html(trace, index))
    marks = grid_marks(fig)
    for block in fork.shared_blocks:
        entry = trace.steps[index].kv.entry(block)
        holders = ", ".join(f"#{o}" for o in entry.owners)
        assert entry.ref_count == 2 and marks[block].startswith("×2")
        assert contrast(grid_ink(fig, block), grid_color(fig, block)) >= 4.5  # WCAG AA on the owner's colour
        assert f"ref count 2 (shared ×2 by {holders})" in grid_hover(fig, block)
        # The same physical block in both tables looks the same: colour, mark, hover.
        seen = [c for s in (parent, child) for c in cells[s] if c[0] == block]
        assert len(seen) == 2 and len({c[1:] for c in seen}) == 1
        _, classes, background, words = seen[0]
        assert "mlv-shared" in classes and "<sup>×2</sup>" in words and f"shared ×2 by {holders}" in words
        assert background == tint(sequence_color(entry.owners[0]), 0.55)
    # A block only one sequence holds carries no sharing mark, in its own colour.
    for seq_id, row in cells.items():
        for block, classes, background, _ in row:
            if trace.steps[index].kv.entry(block).ref_count == 1:
                assert "mlv-shared" not in classes and background == tint(sequence_color(seq_id), 0.55)
                assert "×" not in marks.get(block, "")


def test_the_copy_on_write_is_marked_at_the_step_it_was_made_and_only_there(trace, run):
    copies = {index: trace.copies_at(index) for index in range(len(trace.steps))}
    made = {index: found for index, found in copies.items() if found}
    assert len(made) >= 1 and sum(map(len, made.values())) >= 2  # the user's fork and the samples'
    for index in range(len(trace.steps)):
        fig, cells = kv_cache_figure(trace, index), table_cells(block_tables_html(trace, index))
        marked = {b for b, text in grid_marks(fig).items() if "C" in text.split()}
        assert marked == {c.dst_block for _, c in copies[index]}, index
        copied_cells = {(s, b) for s, row in cells.items() for b, classes, _, _ in row if "mlv-copied" in classes}
        assert copied_cells == {(f.child_id, c.dst_block) for f, c in copies[index]
                                if c.dst_block in trace.steps[index].kv.block_tables().get(f.child_id, [])}, index
        assert ("C: a copy on write in this step" in fig.layout.title.text) == bool(copies[index])
    fork = next(f for f in trace.forks() if f.child_id == run.ids["fork"])
    index, c = fork_step(trace, fork.child_id), fork.copy
    fig = kv_cache_figure(trace, index)
    words = f"copy of block {c.src_block}'s {c.num_slots} slots for #{fork.child_id}"
    assert words in grid_hover(fig, c.dst_block)
    assert f"its first {c.num_slots} slots copied to block {c.dst_block} for #{fork.child_id}" in grid_hover(fig, c.src_block)
    child_cell = next(cell for cell in table_cells(block_tables_html(trace, index))[fork.child_id] if cell[0] == c.dst_block)
    assert words in child_cell[3] and "<sup>C</sup>" in child_cell[3]


def test_step_details_say_why_each_sequence_runs_and_where_a_new_samples_token_came_from(trace, run):
    fork_index = fork_step(trace, run.ids["fork"])
    details = step_details_html(trace, fork_index)
    assert re.search(rf'#{run.ids["fork"]}</b></td><td>forked</td>', details)
    leader = run.ids["three"]
    samples = [s for s, r in trace.sequences.items() if r.group_id == leader and s != leader]
    first = trace.sequences[samples[0]].token_steps[0]
    details = step_details_html(trace, first)
    for sample in samples:  # drawn from the leader's row, computed nothing: not in the batch
        assert re.search(rf"""#{sample}</b></td><td colspan="5">drawn from <b[^>]*>#{leader}</b>'s logits""", details)
        assert sample not in {x.seq_id for x in trace.steps[first].schedule.scheduled}
    reasons = {x.reason for step in trace.steps for x in step.schedule.scheduled}
    assert {"admitted", "decode", "forked"} <= reasons


# -- the text panel: samples and beams under their request -----------------------------------------


def member_blocks(page: str, group: int) -> list[tuple[int, str]]:
    """The (sequence, head HTML) of each sequence listed in group `group`'s block, in order."""
    start = page.index(f'<div class="mlv-group" data-group="{group}">')
    end = page.find('<div class="mlv-group"', start + 1)
    body = page[start:] if end < 0 else page[start:end]
    return [(int(s), head) for s, head in re.findall(r'data-seq="(\d+)"[^>]*><div class="mlv-seq-head">(.*?)</div>', body)]


def test_samples_are_listed_under_their_request_in_sample_order(trace, run):
    leader = run.ids["three"]
    members = sorted((s for s, r in trace.sequences.items() if r.group_id == leader),
                     key=lambda s: trace.sequences[s].sample_index)
    assert len(members) == 3 and members[0] == leader
    last = len(trace.steps) - 1
    page = text_html(trace, last)
    listed = member_blocks(page, leader)
    assert [s for s, _ in listed] == members
    assert [re.search(r"sample (\d)", head).group(1) for _, head in listed] == ["0", "1", "2"]
    assert "3 sample(s) of one prompt" in page
    # A sample shows the request's prompt folded (it shares it), the first sequence shows it open.
    prompt = len(trace.sequences[leader].prompt_ids)
    assert f"the prompt of #{leader} · {prompt} tokens, shared" in page
    # ... sent once, in the first sequence's block: a sample's fold names it and how many of its
    # chips the page copies in when it is opened (static/app.js), and holds none of them.
    empty = (f'data-copy="{leader}" data-prompt="{prompt}"><summary>the prompt of #{leader} · {prompt} tokens, shared '
             "(click to show)</summary></details>")
    assert page.count(empty) == 2
    # Plain requests stay on their own, and every item is ordered by its first id.
    order = text_order(trace, last)
    firsts = [item.members[0] if isinstance(item, Group) else item for item in order]
    assert firsts == sorted(firsts) and run.ids["fork"] in order and run.ids["parent"] in order
    # Before the step that drew them, the samples are not listed yet: only their request.
    before = trace.sequences[members[1]].added_step - 1
    assert [s for s, _ in member_blocks(text_html(trace, before), leader)] == [leader]


def test_beams_best_first_once_finished_and_pruned_beams_greyed_with_their_step(trace, run):
    leader = run.ids["beams"]
    beams = {s: r for s, r in trace.sequences.items() if r.group_id == leader}
    finished = sorted((s for s, r in beams.items() if r.beam_score is not None), key=lambda s: -beams[s].beam_score)
    pruned = sorted(s for s, r in beams.items() if r.pruned_step is not None)
    assert len(finished) == 3 and pruned and len(finished) + len(pruned) == len(beams)
    last = len(trace.steps) - 1
    page = text_html(trace, last)
    listed = member_blocks(page, leader)
    assert [s for s, _ in listed] == finished + pruned  # best score first, then the pruned ones as made
    assert f"beam search · {len(beams)} beam(s), {len(pruned)} pruned" in page
    heads = dict(listed)
    for seq_id in finished:
        assert f"score {beams[seq_id].beam_score:.3f}" in heads[seq_id]
    for seq_id in pruned:
        assert f"pruned at step {beams[seq_id].pruned_step}" in heads[seq_id]
        assert re.search(rf'<div class="mlv-seq mlv-pruned" data-seq="{seq_id}"', page)
    for seq_id, record in beams.items():  # the first beam, then each labelled by the beam it branched from
        role = "beam" if record.parent_id is None else f"beam ← #{record.parent_id}"
        assert f'<span class="mlv-role">{role}</span>' in heads[seq_id]
    assert page.count("mlv-seq mlv-pruned") == len(pruned)
    # Before the first prune, every beam runs: none greyed, none scored, listed as made.
    first = min(beams[s].pruned_step for s in pruned)
    running = text_html(trace, first - 1)
    made = [s for s in sorted(beams) if beams[s].added_step <= first - 1]
    assert [s for s, _ in member_blocks(running, leader)] == made
    assert "mlv-seq mlv-pruned" not in running and "pruned at step" not in running and "score " not in running
    # The timeline: a pruned beam computed its row in the step that pruned it, and is finished after it.
    states = sequence_states(trace)
    for seq_id in pruned:
        step = beams[seq_id].pruned_step
        assert states[seq_id][step] == "decode" and set(states[seq_id][step + 1:]) <= {"finished"}
    assert timeline_figure(trace, last).data[0].z.shape[0] == len(trace.sequences)


def test_each_heading_counts_tokens_by_where_they_came_from(trace, run):
    """The engine counts a fork's inherited tokens as its prompt: a fork of #0's first 40 tokens
    and one forced read "41 prompt", a beam of a 35-token prompt 4 tokens in "39 prompt"."""
    last = len(trace.steps) - 1
    page = text_html(trace, last)
    heads = dict(re.findall(r'data-seq="(\d+)"[^>]*><div class="mlv-seq-head">(.*?)</div>', page))
    fork = trace.sequences[run.ids["fork"]]
    kept, forced = fork.fork_position, len(fork.prompt_ids) - fork.fork_position
    assert f"{kept} tokens of #{fork.parent_id} + {forced} forced + " in heads[str(fork.seq_id)]
    beams = [r for r in trace.sequences.values() if r.group_id == run.ids["beams"] and r.parent_id is not None]
    shared = len(trace.sequences[run.ids["beams"]].prompt_ids)
    inherited = [b for b in beams if len(b.prompt_ids) > shared]
    assert inherited  # the search forked beams after its first tokens
    for beam in inherited:
        counts = f"{shared} prompt + {len(beam.prompt_ids) - shared} of #{beam.parent_id}'s + "
        assert counts in heads[str(beam.seq_id)]
    plain = trace.sequences[run.ids["parent"]]
    assert f"{len(plain.prompt_ids)} prompt + " in heads[str(plain.seq_id)]
    # Before the fork is made it is listed under its parent, saying when it will be, not counts.
    early = text_html(trace, fork.added_step - 1)
    head = dict(re.findall(r'data-seq="(\d+)"[^>]*><div class="mlv-seq-head">(.*?)</div>', early))[str(fork.seq_id)]
    assert f"forked at step {fork.added_step}" in head and "forced" not in head and "generated" not in head


# -- the README's tour, step 6 ------------------------------------------------------------------------


def test_the_readme_fork_step_tells_the_truth(embedded_dir):
    """The embedded model in the web UI's engine settings: step 5 samples " Paris"; forking there
    with " London" (what a click on it in the Next token panel does) shares blocks 0 and 1 and
    copies block 2's 10 slots into block 3 for #1, in the step that computes only " London"."""
    engine = LLMEngine.from_pretrained(embedded_dir, dataclasses.replace(defaults.ENGINE, device="cpu"))
    session = DebugSession(engine)
    parent = session.add("What is the capital of France?", SamplingParams(temperature=0, max_tokens=48), chat=True)
    for _ in range(6):
        session.step()
    trace = session.trace
    token = trace.steps[5].token_of(parent)
    summary = token.logits
    assert token.text_delta == " Paris" and round(summary.top_probs[summary.top_texts.index(" London")], 3) == 0.004
    london = summary.top_ids[summary.top_texts.index(" London")]
    child = session.fork(parent, len(trace.sequences[parent].prompt_ids) + 5, [london])
    assert session.run().finished and trace.sequences[child].text == ", England."
    assert (child, fork_step(trace, child)) == (1, 6)
    batch = trace.steps[6].schedule.scheduled
    assert [(s.seq_id, s.num_tokens, s.reason) for s in batch] == [(1, 1, "forked")]
    assert "<td>forked</td><td>42..42</td><td>1</td>" in step_details_html(trace, 6)
    fig, cells = kv_cache_figure(trace, 6), table_cells(block_tables_html(trace, 6))
    assert grid_marks(fig) == {0: "×2", 1: "×2", 3: "C"}
    assert "copy of block 2's 10 slots for #1" in grid_hover(fig, 3)
    assert [c[0] for c in cells[0]] == [0, 1, 2] and [c[0] for c in cells[1]] == [0, 1, 3]
    assert cells[0][:2] == cells[1][:2]  # the shared blocks, alike in both tables
