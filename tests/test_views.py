"""The UI's view builders (inspector/views) are pure functions of a trace: each test records a
run of a tiny random model and checks what a panel shows against what the trace says.

The run (test_inspector_support.record_tiny_run): four requests sharing a 12-token prefix in a
14-block pool of 4-token blocks, so blocks are shared, later prompts hit the prefix cache, and
decode runs out of blocks and preempts; attention is traced for requests 0 and 2.

Speed is not tested here (docs/perf-notes.md, "The web UI's views", has each builder's time).
"""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from conftest import make_hf_model
from test_inspector_support import record_tiny_run

from inspector import CapturePolicy, DebugSession
from inspector.trace.attention_rows import mass_per_block
from inspector.trace.model import Trace
from inspector.trace.why_text import eviction_text
from inspector.views import (
    NO_STEP,
    STATES,
    Selection,
    attention_figure,
    attention_map,
    block_tables_html,
    branch_html,
    empty_figure,
    fork_choices_html,
    kv_cache_figure,
    logits_figure,
    logits_history_figure,
    sequence_color,
    sequence_states,
    step_details_html,
    text_html,
    timeline_figure,
)
from inspector.views.attention_map import MAX_TICKS
from inspector.views.colors import CACHED_FREE_COLOR, FREE_COLOR, SAMPLED_COLOR, tint
from inspector.views.figure import step_ticks
from inspector.views.markup import escape
from inspector.views.selection import resolve
from minillama import EngineConfig, LLMEngine, SamplingParams

FIGURES = (timeline_figure, kv_cache_figure, attention_figure, logits_figure, logits_history_figure)
PANELS = (text_html, block_tables_html, step_details_html, branch_html, fork_choices_html)


@pytest.fixture(scope="module")
def trace() -> Trace:
    """The tiny run's trace, each output token given a text "<id>" (a tiny model has no
    tokenizer): chips and labels become checkable, and every one needs escaping."""
    trace = copy.deepcopy(record_tiny_run().session.trace)
    for step in trace.steps:
        for token in step.tokens:
            token.text_delta = f"<{token.token_id}>"
    trace.sequences[0].prompt_tokens = [f"p{i} " for i in range(len(trace.sequences[0].prompt_ids))]
    return trace


def build(builder, trace: Trace, index: int, selection: Selection | None = None):
    selection = selection or Selection()
    return builder(trace, index, selection) if builder in (kv_cache_figure, attention_figure, logits_figure,
                                                           logits_history_figure) else builder(trace, index)


def message(fig: go.Figure) -> str:
    """A placeholder figure's centred message."""
    return fig.layout.annotations[0].text


def scheduled(trace: Trace, seq_id: int, index: int):
    return next((x for x in trace.steps[index].schedule.scheduled if x.seq_id == seq_id), None)


# -- states ----------------------------------------------------------------------------------------


def test_states_follow_the_schedule(trace):
    preempting = [s.index for s in trace.steps if s.schedule.preempted]
    assert preempting, "the run must preempt"
    states = sequence_states(trace)
    assert list(states) == sorted(trace.sequences)
    for seq_id, row in states.items():
        seq = trace.sequences[seq_id]
        assert len(row) == len(trace.steps) and set(row) <= set(STATES)
        # "preempted" exactly at the steps whose schedule lists it.
        assert [i for i, s in enumerate(row) if s == "preempted"] == \
            [s.index for s in trace.steps if seq_id in s.schedule.preempted]
        last = seq.token_steps[-1]
        for i, state in enumerate(row):
            s = trace.steps[i].schedule
            if i < seq.added_step:
                assert state == "absent"
            elif i > last:  # every request of this run finishes (max_tokens)
                assert state == "finished"
            elif scheduled(trace, seq_id, i) is not None:
                assert state == s.phase
            elif seq_id not in s.preempted:
                assert state == ("idle" if seq_id in s.running else "waiting")
                assert (seq_id in s.waiting) == (state == "waiting")
        assert row[last] in ("prefill", "decode")  # the finishing step shows what it computed
    victim = trace.steps[preempting[0]].schedule.preempted[0]
    assert states[victim][preempting[0] + 1] == "waiting"


# -- text panel ------------------------------------------------------------------------------------


class Chips(HTMLParser):
    """The token chips of a text panel: (sequence, class list, attributes, visible text)."""

    def __init__(self, page: str):
        super().__init__()
        self.seq: int | None = None
        self.chips: list[dict] = []
        self._open: dict | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "data-seq" in a:
            self.seq = int(a["data-seq"])
        if tag == "span" and "tok" in a.get("class", "").split():
            self._open = {**a, "seq": self.seq, "classes": a["class"].split(), "text": ""}

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.chips.append(self._open)
            self._open = None


def test_text_shows_the_tokens_sampled_up_to_the_cursor(trace):
    for index in (0, 1, 5, 12, len(trace.steps) - 1):
        chips = Chips(text_html(trace, index)).chips
        step = trace.steps[index]
        for seq_id, seq in trace.sequences.items():
            mine = [c for c in chips if c["seq"] == seq_id]
            prompt = [c for c in mine if "tok-prompt" in c["classes"]]
            output = [c for c in mine if "tok-out" in c["classes"]]
            assert len(prompt) == len(seq.prompt_ids)
            # Only the tokens sampled at or before the cursor; the later ones are absent.
            sampled = [(s, t) for s, t in zip(seq.token_steps, seq.output_ids) if s <= index]
            assert [c["text"] for c in output] == [f"<{t}>" for _, t in sampled]
            current = [c for c in output if "tok-current" in c["classes"]]
            token = step.token_of(seq_id)
            if token is None:
                assert current == []
            else:
                assert [c["text"] for c in current] == [f"<{token.token_id}>"] and current[0] is output[-1]
                g = token.logits
                prob, rank, entropy = current[0]["data-likely"].split(",")
                assert float(prob) == pytest.approx(g.sampled_prob, abs=1e-4)
                assert int(rank) == g.sampled_rank
                assert float(entropy) == pytest.approx(g.entropy, abs=1e-3)
                assert int(current[0]["data-id"]) == token.token_id and int(current[0]["data-step"]) == index
            # The page reads a prompt chip's position from its place among the sequence's prompt chips.
            for position, chip in enumerate(prompt):
                assert "data-id" not in chip or int(chip["data-id"]) == seq.prompt_ids[position]
        # A tiny model's prompt tokens have no text: they show as their ids.
        assert [c["text"] for c in chips if c["seq"] == 1 and "tok-prompt" in c["classes"]] == \
            [f"⟨{t}⟩" for t in trace.sequences[1].prompt_ids]
        assert [c["text"] for c in chips if c["seq"] == 0 and "tok-prompt" in c["classes"]][:2] == ["p0 ", "p1 "]


def test_text_escapes_everything_from_the_trace(trace):
    evil = "<img src=x onerror=alert(1)>"
    hostile = copy.deepcopy(trace)
    hostile.sequences[0].prompt_text = evil
    hostile.sequences[0].prompt_tokens = [evil] + hostile.sequences[0].prompt_tokens[1:]
    hostile.model.name = "<script>alert(2)</script>"
    hostile.steps[3].tokens[0].text_delta = "a\nb"
    page = text_html(hostile, 3)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;" + str(hostile.steps[2].tokens[0].token_id) + "&gt;" in page  # the "<id>" texts, escaped
    assert "a↵b" in page  # newlines made visible


def test_text_status_badges(trace):
    states = sequence_states(trace)
    victim, index = next((s.schedule.preempted[0], s.index) for s in trace.steps if s.schedule.preempted)
    assert states[victim][index] == "preempted"
    page = text_html(trace, index)
    blocks = dict(re.findall(r'data-seq="(\d+)".*?class="mlv-badge"[^>]*>([^<]*)<', page))
    assert blocks[str(victim)] == "preempted"
    last = trace.steps[-1]
    finished = {t.seq_id for t in last.tokens if t.finish_reason}
    page = text_html(trace, last.index)
    blocks = dict(re.findall(r'data-seq="(\d+)".*?class="mlv-badge"[^>]*>([^<]*)<', page))
    assert all(blocks[str(s)] == "finished: length" for s in trace.sequences) and finished
    assert dict(re.findall(r'data-seq="(\d+)".*?class="mlv-badge"[^>]*>([^<]*)<', text_html(trace, 0)))["1"] == "absent"



def test_text_on_a_coloured_cell_reads_at_wcag_aa(trace):
    """Text drawn on a coloured background (a status badge, a KV-grid mark, a logit-lens guess)
    takes black or white by that colour: #111 on the preempted badge's red measured 3.8:1, and
    plotly's dark grey on the lens's mid blues 3.2-4.4:1. Every colour a cell can take, and the
    probability scale end to end, reads at 4.5:1 or more."""
    from inspector.views.colors import (
        PROBABILITY_SCALE,
        SEQUENCE_PALETTE,
        STATE_COLORS,
        STATUS_COLORS,
        contrast,
        scale_color,
        text_color_on,
    )
    from inspector.views.markup import badge

    cells = [*SEQUENCE_PALETTE, *STATE_COLORS.values(), *STATUS_COLORS.values(), FREE_COLOR, CACHED_FREE_COLOR]
    cells += [scale_color(PROBABILITY_SCALE, p / 100) for p in range(101)]
    assert all(contrast(text_color_on(cell), cell) >= 4.5 for cell in cells)
    assert scale_color(PROBABILITY_SCALE, 0.25) == "#6baed6" and scale_color(PROBABILITY_SCALE, 0.125) == "#a8cce7"
    for status in STATUS_COLORS:
        background, ink = re.search(r'style="background:(#\w+);color:(#\w+)"', badge(status)).groups()
        assert contrast(ink, background) >= 4.5, status


# -- timeline --------------------------------------------------------------------------------------


def test_timeline_cells_are_the_states_and_the_cursor_is_marked(trace):
    states = sequence_states(trace)
    for index in (0, 8, len(trace.steps) - 1):
        fig = timeline_figure(trace, index)
        heat = fig.data[0]
        assert list(heat.y) == [f"#{s}" for s in states]
        names = list(heat.colorbar.ticktext)
        assert names == list(STATES)
        assert [[names[int(v)] for v in row] for row in np.asarray(heat.z)] == list(states.values())
        # Tokens computed, for the hover.
        for r, seq_id in enumerate(states):
            x = scheduled(trace, seq_id, index)
            assert np.asarray(heat.customdata)[r, index] == (x.num_tokens if x else 0)
        (cursor,) = fig.layout.shapes
        assert (cursor.x0, cursor.x1) == (index - 0.5, index + 0.5)
        assert fig.layout.title.text == f"Scheduler timeline · step {index}"


def test_a_long_title_wraps_at_a_separator_and_keeps_its_notes():
    """Plotly never wraps a title: the Next token chart's ran past a 480 px plot's edge."""
    from inspector.views.figure import TITLE_LINE, wrap_title

    long = "Next token · step 3 · seq #1 · sampled &quot;[12960]&quot; p=0.310 rank 0 · entropy 2.83 nats"
    first, second = wrap_title(long).split("<br>")
    assert len(first) <= TITLE_LINE and f"{first} · {second}" == long
    assert wrap_title("KV cache · step 1<br><sup>" + "x" * 80 + "</sup>") == "KV cache · step 1<br><sup>" + "x" * 80 + "</sup>"
    assert wrap_title("x" * 80) == "x" * 80  # nowhere to break


def test_the_step_axes_tick_whole_steps(trace, monkeypatch):
    """The timeline's and the history's axes are steps: on a short run plotly's own ticks fell
    on halves ("0.5"), steps that do not exist. (This trace is a long run: its ticks are
    plotly's, whole numbers; shortened, one tick a step.)"""
    assert step_ticks(12) == {"tick0": 0, "dtick": 1} and step_ticks(13) == {}
    selection = resolve(trace, Selection(), 3)
    for view in ("timeline", "logits"):
        monkeypatch.setattr(f"inspector.views.{view}.step_ticks", lambda n: step_ticks(min(n, 12)))
    for fig in (timeline_figure(trace, 3), logits_history_figure(trace, 3, selection)):
        assert (fig.layout.xaxis.tick0, fig.layout.xaxis.dtick) == (0, 1)



# -- KV cache --------------------------------------------------------------------------------------


def grid_cell(fig: go.Figure, block: int) -> tuple[str, str, str]:
    """(category name, colour, hover text) of a block's cell in the KV grid."""
    heat = fig.data[0]
    row, column = divmod(block, np.asarray(heat.z).shape[1])
    code = int(heat.z[row, column])
    return heat.meta[code], heat.colorscale[2 * code][1], heat.text[row][column]


def test_kv_grid_cells_match_the_snapshot(trace):
    shared = [s.index for s in trace.steps if any(e.ref_count > 1 for e in s.kv.entries())]
    hits = [s.index for s in trace.steps if s.kv.hit.any()]
    assert shared and hits, "the run must share blocks and hit the prefix cache"
    for index in sorted({shared[-1], *hits, len(trace.steps) - 1}):
        kv = trace.steps[index].kv
        fig = kv_cache_figure(trace, index, Selection(seq_id=1))
        z = np.asarray(fig.data[0].z)
        columns = z.shape[1]
        entries = {e.block_id: e for e in kv.entries()}
        # A cached block this step reused, and freed again by its end, is drawn free with the note.
        evicted = {e.block_id: eviction_text(e) for e in trace.steps[index].schedule.evictions}
        for block in range(kv.num_blocks):
            name, color, hover = grid_cell(fig, block)
            e = entries.get(block)
            if e is None:
                notes = [evicted[block]] if block in evicted else []
                assert (name, color, hover) == ("free", FREE_COLOR, "<br>".join(["free", *notes]))
            elif e.owners:
                assert (name, color) == (f"#{e.owners[0]}", sequence_color(e.owners[0]))
                assert f"owners {', '.join(f'#{o}' for o in e.owners)}" in hover
                assert f"ref count {e.ref_count}" in hover and f"holds {e.fill}/4 tokens" in hover
            else:
                assert (name, color) == (("free, cached", CACHED_FREE_COLOR) if e.cached else ("free", FREE_COLOR))
        assert np.isnan(z.ravel()[kv.num_blocks:]).all()  # cells past the pool draw nothing
        text = [d for d in fig.data[1:] if d.mode == "text"]
        marks = dict(zip(zip(text[0].x, text[0].y), text[0].text)) if text else {}
        expected = {(b % columns, b // columns): " ".join(m for m, on in ((f"×{e.ref_count}", e.ref_count > 1),
                                                                         ("H", e.hit)) if on)
                    for b, e in entries.items() if e.ref_count > 1 or e.hit}
        assert marks == expected
        assert fig.layout.title.text.startswith(f"KV cache · step {index} · {kv.num_used}/{kv.num_blocks} blocks used")


def test_kv_grid_overlays_the_cursor_querys_attention_per_block(trace):
    index, seq_id, layer, head = 9, 0, 1, 2
    x = scheduled(trace, seq_id, index)
    fig = kv_cache_figure(trace, index, Selection(seq_id=seq_id, layer=layer, head=head))
    overlay = next(d for d in fig.data[1:] if d.mode == "markers" and not d.showlegend)  # not a legend entry
    got = {int(b): m for b, m in overlay.customdata}
    row = trace.attention_row(seq_id, layer, head, x.start + x.num_tokens - 1)
    assert got == pytest.approx(mass_per_block(row, x.block_table, 4))
    assert sum(got.values()) == pytest.approx(1.0) and list(got) == x.block_table
    # The mean over heads when no head is selected.
    fig = kv_cache_figure(trace, index, Selection(seq_id=seq_id, layer=layer, head=None))
    mean = {int(b): m for b, m in next(d for d in fig.data[1:] if d.mode == "markers" and not d.showlegend).customdata}
    rows = [trace.attention_row(seq_id, layer, h, x.start + x.num_tokens - 1) for h in range(4)]
    assert mean == pytest.approx(mass_per_block(torch.stack(rows).mean(0), x.block_table, 4))
    # No overlay, and a note saying why, for a sequence not traced.
    fig = kv_cache_figure(trace, index, Selection(seq_id=1))
    assert all(d.mode != "markers" or d.showlegend for d in fig.data[1:])
    assert "no attention overlay: sequence 1 has no recorded queries and keys" in fig.layout.title.text


def test_block_tables_list_each_sequences_blocks(trace):
    index = next(s.index for s in trace.steps if s.kv.hit.any())
    kv = trace.steps[index].kv
    page = block_tables_html(trace, index)
    assert f"step {index}" in page
    entries = {e.block_id: e for e in kv.entries()}
    rows = re.findall(r"<tr><th>.*?#(\d+)</b></th>(.*?)</tr>", page)
    assert [int(s) for s, _ in rows] == list(kv.block_tables())
    for (seq_id, cells), table in zip(rows, kv.block_tables().values()):
        found = re.findall(r'<td class="([^"]*)" style="background:([^"]*)"[^>]*>(\d+)→(\d+)', cells)
        assert [(int(lo), int(ph)) for _, _, lo, ph in found] == list(enumerate(table))
        for classes, color, _, physical in found:
            e = entries[int(physical)]
            assert ("mlv-shared" in classes) == (e.ref_count > 1) and ("mlv-hit" in classes) == e.hit
            # The grid's colour: the sequence's, or a shared block's oldest holder's in every table.
            holder = e.owners[0] if e.ref_count > 1 else int(seq_id)
            assert color == tint(sequence_color(holder), 0.55)
    assert "No sequence holds KV blocks" in block_tables_html(trace, len(trace.steps) - 1)


# -- attention -------------------------------------------------------------------------------------


def test_attention_row_is_the_traces(trace):
    index, seq_id = 3, 0
    x = scheduled(trace, seq_id, index)
    query = x.start + x.num_tokens - 1
    fig = attention_figure(trace, index, Selection(seq_id=seq_id, layer=1, head=2))
    z = np.asarray(fig.data[0].z, dtype=np.float64)
    assert z.shape == (1, query + 1)
    np.testing.assert_allclose(z[0], trace.attention_row(seq_id, 1, 2, query).numpy(), rtol=1e-6)
    assert z.sum() == pytest.approx(1.0, abs=1e-5)
    # Keys labelled with their tokens (prompt, then output texts, escaped), every n-th one
    # when there are more than MAX_TICKS.
    num_prompt = len(trace.sequences[0].prompt_ids)
    labels = [f"p{i}·" for i in range(num_prompt)] + [
        f"&lt;{t}&gt;" for t in trace.sequences[0].output_ids[: query + 1 - num_prompt]]
    every = -(-len(labels) // MAX_TICKS)
    assert list(fig.layout.xaxis.ticktext) == labels[::every] and list(fig.layout.xaxis.tickvals) == list(
        range(query + 1))[::every]
    title = fig.layout.title.text
    assert f"step {index}" in title and "seq #0 · layer 1 · head 2" in title and f"query pos {query}" in title


def test_attention_small_multiples_and_full_matrix(trace):
    index, seq_id = 13, 2  # seq 2 comes back after a preemption: positions 0..23 from the prefix cache
    x = scheduled(trace, seq_id, index)
    assert x.num_cached_tokens == 24
    query = x.start + x.num_tokens - 1
    heads = attention_figure(trace, index, Selection(seq_id=seq_id, layer=0, head=None))
    z = np.asarray(heads.data[0].z, dtype=np.float64)
    assert z.shape == (4, query + 1)
    for h in range(4):
        np.testing.assert_allclose(z[h], trace.attention_row(seq_id, 0, h, query).numpy(), rtol=1e-6)
    matrix = attention_figure(trace, index, Selection(seq_id=seq_id, layer=0, head=3, full_matrix=True))
    rows, z = list(matrix.data[0].y), np.asarray(matrix.data[0].z, dtype=np.float64)
    store = trace.attention[seq_id]
    # Every recorded query up to the cursor's; its first 12 positions were hit at admission: no query.
    assert rows == [p for p in range(query + 1) if store.q_step[p] >= 0] and rows[0] == 12 and rows[-1] == query
    for r, position in enumerate(rows):
        np.testing.assert_allclose(z[r, : position + 1], trace.attention_row(seq_id, 0, 3, position).numpy(),
                                   rtol=1e-5, atol=1e-7)
        assert np.isnan(z[r, position + 1 :]).all()  # causal: no key after the query


def test_attention_figures_draw_at_most_max_cells(trace, monkeypatch):
    """A trace may hold a thousand heads and thousands of positions within its file limits:
    every head's row of 1,024 heads x 4,096 keys was a 139 MB figure, the full matrix of the
    heads' mean minutes of work. Past the bounds the figures keep the first heads and the last
    queries, and their titles say so (here the bounds shrunk to this trace's size)."""
    index, seq_id = 13, 2
    query = scheduled(trace, seq_id, index).start + scheduled(trace, seq_id, index).num_tokens - 1
    keys = query + 1
    monkeypatch.setattr(attention_map, "MAX_CELLS", 2 * keys)
    heads = attention_figure(trace, index, Selection(seq_id=seq_id, layer=0, head=None))
    assert np.asarray(heads.data[0].z).shape == (2, keys) and "heads 0–1 of 4" in heads.layout.title.text
    for head, bound in ((3, 5), (None, 5)):
        monkeypatch.setattr(attention_map, "MAX_CELLS", 5 * keys)
        monkeypatch.setattr(attention_map, "MAX_HEAD_CELLS", 4 * 5 * keys)  # 5 rows of the 4 heads' mean
        matrix = attention_figure(trace, index, Selection(seq_id=seq_id, layer=0, head=head, full_matrix=True))
        rows = list(matrix.data[0].y)
        assert rows[-1] == query and len(rows) == bound, head  # the last queries, up to the cursor's
        assert f"the last {bound} of" in matrix.layout.title.text


def test_attention_of_a_sequence_not_in_the_batch_is_its_last_query(trace):
    index = 12
    assert 2 in trace.steps[index].schedule.preempted
    fig = attention_figure(trace, index, Selection(seq_id=2, layer=0, head=0))
    before = scheduled(trace, 2, 11)
    assert f"query pos {before.start} " in fig.layout.title.text and "from step 11" in fig.layout.title.text


def test_the_kv_overlay_and_the_attention_panel_show_the_same_query(trace):
    """At a step where a traced sequence computed nothing (the others' prefill ran alone, or it
    was preempted), both show the last query it computed before, and say from which step."""
    cases = [(index, seq_id) for seq_id in trace.attention for index in range(len(trace.steps))
             if trace.sequences[seq_id].added_step <= index <= trace.sequences[seq_id].token_steps[-1]
             and scheduled(trace, seq_id, index) is None]
    assert {seq_id for _, seq_id in cases} == {0, 2}  # 0 waits at step 1, 2 is preempted at step 12
    for index, seq_id in cases:
        selection = Selection(seq_id=seq_id, layer=1, head=2)
        attention = attention_figure(trace, index, selection).layout.title.text
        position, before = map(int, re.search(r"query pos (\d+) .*from step (\d+)", attention).groups())
        x = scheduled(trace, seq_id, before)
        assert position == x.start + x.num_tokens - 1
        kv = kv_cache_figure(trace, index, selection)
        assert f"attention of #{seq_id} pos {position} (from step {before}: " in kv.layout.title.text
        circles = next(d for d in kv.data[1:] if d.mode == "markers")
        got = {int(b): m for b, m in circles.customdata}  # through the block table the query ran with
        assert got == pytest.approx(mass_per_block(trace.attention_row(seq_id, 1, 2, position), x.block_table, 4))


def test_attention_placeholders_say_what_was_not_recorded(trace):
    cases = {
        Selection(seq_id=1): "sequence 1 has no recorded queries and keys",
        Selection(seq_id=0, layer=7): "layer 7 was not captured",
        Selection(seq_id=0, head=9): "head 9 is out of range",
        Selection(seq_id=42): "no sequence #42",
    }
    for selection, reason in cases.items():
        fig = attention_figure(trace, 3, selection)
        assert reason in message(fig) and "step 3" in fig.layout.title.text and not fig.data


def test_dropped_capture_gives_placeholders():
    """A memory budget that stops attention, then logits, midway: the views say so."""
    trace = record_tiny_run(CapturePolicy(memory_budget=20_000)).session.trace
    attention_from, logits_from = trace.dropped_from("attention"), trace.dropped_from("logits")
    assert attention_from is not None and logits_from is not None
    seq_id = next(iter(trace.attention))
    index = next(i for i in range(attention_from, len(trace.steps)) if scheduled(trace, seq_id, i))
    fig = attention_figure(trace, index, Selection(seq_id=seq_id))
    assert f"the memory budget stopped attention capture at step {attention_from}" in message(fig)
    assert attention_figure(trace, 0, Selection(seq_id=seq_id)).data  # before the drop it is there
    index = next(s.index for s in trace.steps[logits_from:] if s.tokens)
    fig = logits_figure(trace, index, Selection(seq_id=trace.steps[index].tokens[0].seq_id))
    assert f"the memory budget stopped recording logits at step {logits_from}" in message(fig)
    history = logits_history_figure(trace, index, Selection(seq_id=trace.steps[index].tokens[0].seq_id))
    assert None in list(history.data[0].y)  # a gap where logits were dropped


# -- logits ----------------------------------------------------------------------------------------


def test_logits_bars_are_the_summary(trace):
    for index in (1, 5):
        for token in trace.steps[index].tokens:
            g = token.logits
            fig = logits_figure(trace, index, Selection(seq_id=token.seq_id))
            model, sampling = fig.data
            k = len(g.top_ids)
            assert list(model.x[:k]) == g.top_probs and list(sampling.x[:k]) == g.top_sampling_probs
            assert list(model.y[:k]) == list(range(k))
            # A tiny model's tokens have no text: labelled by id.
            sampled = [r for r, c in enumerate(model.marker.color) if c == SAMPLED_COLOR]
            assert sampled == [min(g.sampled_rank, k)]
            marked = [("▶ " if r == sampled[0] else "") + f"[{i}]" for r, i in enumerate(g.top_ids)]
            assert list(fig.layout.yaxis.ticktext[:k]) == marked
            if g.sampled_rank >= k:  # an extra bar for a token outside the top k
                assert model.x[k] == g.sampled_prob and f"rank {g.sampled_rank}" in fig.layout.yaxis.ticktext[k]
            title = fig.layout.title.text
            assert f"step {index}" in title and f"entropy {g.entropy:.2f}" in title
            assert f"p={g.sampled_prob:.3f} rank {g.sampled_rank}" in title
    # Seq 1 is waiting at step 0: nothing sampled, a placeholder says why.
    fig = logits_figure(trace, 0, Selection(seq_id=1))
    assert not fig.data and "sampled nothing" in message(fig)


def test_logits_history_follows_the_sequence(trace):
    seq = trace.sequences[2]
    fig = logits_history_figure(trace, 7, Selection(seq_id=2))
    entropy, prob = fig.data
    assert list(entropy.x) == seq.token_steps == list(prob.x)
    tokens = [trace.steps[s].token_of(2).logits for s in seq.token_steps]
    assert list(entropy.y) == [g.entropy for g in tokens] and list(prob.y) == [g.sampled_prob for g in tokens]
    at = seq.token_steps.index(7)
    cursor, entropy_now, prob_now = fig.layout.shapes  # the cursor's column, then its two dots
    assert (entropy_now.xanchor, entropy_now.yanchor, entropy_now.yref) == (7, entropy.y[at], "y")
    assert (prob_now.xanchor, prob_now.yanchor, prob_now.yref) == (7, prob.y[at], "y2")
    assert (cursor.x0 + cursor.x1) / 2 == 7 and "step 7" in fig.layout.title.text


# -- the selection -------------------------------------------------------------------------------


def test_auto_shows_the_sequence_each_step_is_about_in_every_view(trace):
    for index in range(len(trace.steps)):
        batch = trace.steps[index].schedule.scheduled
        scheduled_ids = [x.seq_id for x in batch]
        traced = [x.seq_id for x in batch if trace.sequences[x.seq_id].traced]
        sampled = [x.seq_id for x in batch if x.samples and trace.sequences[x.seq_id].traced]
        resolved = resolve(trace, Selection(layer=99, head=99), index)
        assert resolved.seq_id == (sampled or traced or scheduled_ids)[0]
        assert (resolved.layer, resolved.head) == (trace.model.num_layers - 1, 0)  # kept within the model
        assert resolve(trace, Selection(seq_id=99), index).seq_id == resolved.seq_id  # not in the trace: auto
        assert resolve(trace, Selection(seq_id=3), index).seq_id == 3  # a pick sticks
        # The views, given no sequence, follow the same rule.
        for builder in (attention_figure, logits_figure, logits_history_figure):
            assert f"seq #{resolved.seq_id}" in build(builder, trace, index).layout.title.text
    # No step: the first traced sequence.
    assert resolve(trace, Selection(), -1).seq_id == min(s for s, r in trace.sequences.items() if r.traced)


# -- step details ----------------------------------------------------------------------------------


def test_step_details(trace):
    index = next(s.index for s in trace.steps if s.schedule.preempted)
    step = trace.steps[index]
    page = step_details_html(trace, index)
    t = step.timings
    for ms in (t.schedule_ms, t.prepare_ms, t.forward_ms, t.sample_ms, t.wall_ms, t.record_ms):
        assert f"<td>{ms:.2f}</td>" in page
    assert step.attention_seqs and "recorded (" in page
    # A prefill capture runs a hook per layer (eager); a decode capture copies inside the forward.
    for s in trace.steps:
        if s.attention_seqs:
            details = step_details_html(trace, s.index)
            assert s.layer_hooks == (s.schedule.phase == "prefill") == ("ran eagerly" in details)
    preempted = re.search(r"<th>preempted</th><td>(.*?)</td>", page).group(1)
    assert re.findall(r">#(\d+)<", preempted) == [str(s) for s in step.schedule.preempted]
    for x in step.schedule.scheduled:
        assert f"<td>{x.start}..{x.start + x.num_tokens - 1}</td><td>{x.num_tokens}</td>" in page
    assert f"<b>{sum(x.num_tokens for x in step.schedule.scheduled)}</b>" in page
    assert f"{step.kv.num_used} of {step.kv.num_blocks}" in page
    quiet = next(s.index for s in trace.steps if not s.attention_seqs)
    assert "ran eagerly" not in step_details_html(trace, quiet)
    added = step_details_html(trace, 1)  # requests 1..3 arrived before step 1
    assert all(f"request {i} added" in added for i in (1, 2, 3))
    assert "<h4>Events</h4>" not in step_details_html(trace, 2)


# -- every builder ---------------------------------------------------------------------------------


def test_every_title_and_panel_names_its_step_and_every_figure_is_valid(trace):
    for index in range(len(trace.steps)):
        step_text = re.compile(rf"\bstep {index}\b")
        for builder in FIGURES:
            for selection in (Selection(), Selection(seq_id=1, head=None), Selection(seq_id=2, full_matrix=True)):
                fig = build(builder, trace, index, selection)
                assert step_text.search(fig.layout.title.text), (builder.__name__, index, fig.layout.title.text)
                assert fig.layout.uirevision and fig.layout.height <= 400
                if index % 5 == 0:
                    go.Figure(fig.to_dict())  # plotly's full validation: no misspelt property
        for builder in PANELS:
            assert step_text.search(build(builder, trace, index)), (builder.__name__, index)


def test_no_step_an_unknown_sequence_and_an_abort():
    """A session with no step yet; then a request aborted mid-run."""
    engine = LLMEngine.from_hf_model(make_hf_model("gqa-tied-llama3"), EngineConfig(device="cpu", num_kv_blocks=16,
                                                                                   block_size=4))
    session = DebugSession(engine)
    for builder in (*FIGURES, *PANELS):
        result = build(builder, session.trace, -1)
        assert NO_STEP in (result if isinstance(result, str) else message(result))
    params = SamplingParams(temperature=0, max_tokens=8)
    a, b = session.add([1, 2, 3, 4, 5], params), session.add([1, 2, 3, 9], params)
    assert NO_STEP in text_html(session.trace, -1)  # queued, but no step yet
    session.step()
    session.step()
    session.abort(b)
    session.run()
    trace = session.trace
    states = sequence_states(trace)
    assert states[b][:2] == ["prefill", "decode"] and set(states[b][2:]) == {"finished"}
    assert 'class="mlv-badge" style="background:#a0a0a0;color:#000000">finished: abort<' in text_html(trace, 2)
    assert "running" in text_html(trace, 1)
    # A selection naming no sequence of the trace: placeholders, never an exception.
    for builder in (attention_figure, logits_figure, logits_history_figure):
        assert "no sequence #99" in message(builder(trace, 1, Selection(seq_id=99))).lower()
    assert kv_cache_figure(trace, 1, Selection(seq_id=99)).data  # the grid does not depend on it
    # Past the last step.
    assert f"No step {len(trace.steps)}" in message(timeline_figure(trace, len(trace.steps)))
    assert a in trace.sequences and empty_figure("hello").layout.annotations[0].text == "hello"


def test_a_large_pool_draws_a_bounded_grid():
    """A GPU's pool holds about 131,000 blocks: the grid draws MAX_GRID_BLOCKS cells (the blocks
    past them are free: the snapshot records every block in use) and says so."""
    from inspector.views.kv_cache import MAX_GRID_BLOCKS

    engine = LLMEngine.from_hf_model(make_hf_model("gqa-tied-llama3"),
                                     EngineConfig(device="cpu", num_kv_blocks=100_000, block_size=4))
    session = DebugSession(engine, CapturePolicy(attention=False))
    session.add(list(range(1, 11)), SamplingParams(temperature=0, max_tokens=3))
    session.step()
    kv = session.trace.steps[0].kv
    fig = kv_cache_figure(session.trace, 0)
    z = np.asarray(fig.data[0].z)
    assert z.size == MAX_GRID_BLOCKS and np.count_nonzero(z >= 2) == kv.num_used == 3
    assert f"{kv.num_used}/100000 blocks used" in fig.layout.title.text
    assert f"blocks {MAX_GRID_BLOCKS}..99999 not drawn: free" in fig.layout.title.text


# -- hostile data: one escaping helper, bounded grids -------------------------------------------


def test_every_view_escapes_through_the_one_helper():
    """Only markup.py escapes (html.escape nowhere else in inspector/views): a view that
    interpolates trace text must go through markup.escape, the one route for HTML and plotly."""
    import ast
    from pathlib import Path

    import inspector.views

    folder = Path(inspector.views.__file__).parent
    for path in folder.glob("*.py"):
        imported = {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)
                    for alias in node.names}
        assert ("html" in imported) == (path.name == "markup.py"), path.name
    # Quotes become numeric references: plotly decodes those (not &quot;), and HTML attributes stay closed.
    assert escape("<a href='x'>\"&") == "&lt;a href=&#39;x&#39;&gt;&#34;&amp;"


def test_step_details_escape_the_phase(trace):
    """Issue 11, item 1: the phase went into the step details raw. The loader now refuses any
    phase but "prefill" and "decode"; the view escapes it anyway, like every text it shows."""
    hostile = copy.deepcopy(trace)
    hostile.steps[2].schedule.phase = "<img src=x onerror=alert(1)>"
    page = step_details_html(hostile, 2)
    assert "<img" not in page and "<b>&lt;img src=x onerror=alert(1)&gt;</b>" in page


def test_the_kv_grid_never_draws_more_than_max_drawn_blocks(trace):
    """A recorded block far up a huge pool used to stretch the grid to it: 2**20 cells is 24 MB
    of figure on every redraw."""
    from inspector.views.kv_cache import MAX_DRAWN_BLOCKS

    huge = copy.deepcopy(trace)
    pool = 2**20
    huge.engine.num_blocks = huge.steps[5].kv.num_blocks = pool
    kv = huge.steps[5].kv
    top = int(kv.block_ids[-1])
    kv.block_ids[-1] = pool - 1
    kv.table_blocks[kv.table_blocks == top] = pool - 1
    fig = kv_cache_figure(huge, 5)
    assert np.asarray(fig.data[0].z).size == MAX_DRAWN_BLOCKS
    # Some of the blocks not drawn are in use: the note does not call them free.
    assert re.search(rf"blocks {MAX_DRAWN_BLOCKS}\.\.{pool - 1} not drawn(?!: free)", fig.layout.title.text)


def test_a_chat_prompts_first_turn_is_folded(trace):
    from inspector.views.text_panel import MIN_FOLD, first_turn_length

    chatml = [1, 9, 10, *range(20, 30), 2, 1, 11, 40, 41, 2, 1, 12]  # system turn, user turn, assistant header
    assert first_turn_length(chatml) == 14
    llama3 = [128000, 6, 9, *range(20, 30), 7, 6, 11, 40, 7, 6, 12]  # <|begin_of_text|>, then headers
    assert first_turn_length(llama3) == 14
    assert first_turn_length([1, 2, 1, 3]) == 0 and first_turn_length([5, 6, 7]) == 0 and MIN_FOLD > 2

    chat = copy.deepcopy(trace)
    record = chat.sequences[0]
    record.chat, record.prompt_ids = True, chatml + record.prompt_ids[len(chatml):]
    page = text_html(chat, 0)
    fold = re.search(r'<details class="mlv-fold" data-fold="0"><summary>(.*?)</summary>(.*?)</details>', page)
    assert fold and fold.group(1).startswith("system prompt · 14 tokens")
    assert fold.group(2).count("class='tok tok-prompt") == 14  # the chips inside, one click away
    assert 'data-fold="1"' not in page or chat.sequences[1].chat


def test_a_system_prompt_every_request_shares_is_sent_once_a_panel(trace):
    """Every chat request starts with the same system prompt: its chips go in the first block's
    fold, and each later block's fold names that block (the page copies the chips when opened).
    A request with another system prompt holds its own, which a later one may name in turn."""
    chatml = [1, 9, 10, *range(20, 30), 2, 1, 11, 40, 41, 2, 1, 12]
    other = [1, 9, 10, *range(30, 40), 2, 1, 11, 40, 41, 2, 1, 12]
    chat = copy.deepcopy(trace)
    for seq_id, turn in zip(sorted(chat.sequences), [chatml, other, chatml, other]):
        record = chat.sequences[seq_id]
        record.chat, record.prompt_ids = True, turn + record.prompt_ids[len(turn):]
        record.prompt_tokens = []
    first, second, third, fourth = sorted(chat.sequences)
    for index in (0, len(chat.steps) - 1):
        page = text_html(chat, index)
        folds = dict(re.findall(r'<details class="mlv-fold" data-fold="(\d+)"([^>]*)>', page))
        assert folds == {str(first): "", str(second): "", str(third): f' data-copy="{first}"',
                         str(fourth): f' data-copy="{second}"'}
        for seq_id, chips in ((first, 14), (second, 14), (third, 0), (fourth, 0)):
            body = re.search(rf'data-fold="{seq_id}"[^>]*><summary>(.*?)</summary>(.*?)</details>', page)
            assert body.group(1).startswith("system prompt · 14 tokens") and body.group(2).count("tok-prompt") == chips
        # Each block still has a chip for every position after its fold, and only those.
        for seq_id, record in chat.sequences.items():
            block = page.split(f'data-seq="{seq_id}"')[1].split('data-seq="')[0]
            assert block.count("tok-prompt") == len(record.prompt_ids) - (14 if seq_id in (third, fourth) else 0)


def test_the_end_of_sequence_token_is_named(trace):
    stopped = copy.deepcopy(trace)
    seq_id = next(s for s, r in stopped.sequences.items() if r.output_ids)
    last = stopped.sequences[seq_id].token_steps[-1]
    token = stopped.steps[last].token_of(seq_id)
    token.text_delta, token.finish_reason = "", "stop"
    page = text_html(stopped, last)
    assert "⟨eos⟩" in page and f"[{token.token_id}]" not in page


def test_panels_and_the_slider_word_the_cursor_alike(trace):
    n = len(trace.steps)
    for page in (text_html(trace, 3), step_details_html(trace, 3)):
        assert f"step 3 · steps 0–{n - 1} recorded" in page and f"of {n}" not in page.split("recorded")[0]


def test_the_timeline_legend_and_the_kv_grid_fit_their_plots(trace):
    timeline = build(timeline_figure, trace, 0)
    bar = timeline.data[0].colorbar
    assert bar.orientation == "h" and timeline.layout.xaxis.title.text is None  # no legend over an axis title
    small = copy.deepcopy(trace)
    small.engine.num_blocks = 12
    for step in small.steps:
        step.kv.num_blocks = 12
    kv = build(kv_cache_figure, small, 0)
    assert kv.layout.xaxis.range == (-0.5, 11.5) and len(kv.data[0].z[0]) == 12  # no phantom columns
    # The grid's colours are named in a legend that wraps below it (a colour bar squeezed the
    # grid and overlapped its labels in a phone's narrow plot); 8 column labels at most.
    full = kv_cache_figure(trace, len(trace.steps) - 1)
    legend = [(d.name, d.marker.color) for d in full.data if d.showlegend]
    heat = full.data[0]
    assert legend == [(name, heat.colorscale[2 * code][1]) for code, name in enumerate(heat.meta)]
    assert not heat.showscale and full.layout.legend.orientation == "h" and len(full.layout.xaxis.tickvals) <= 8


def placement_problems(fig: go.Figure) -> list[str]:
    """What plotly would draw over another part of the figure, or out of it, at some plot size: a
    legend below the plot at an offset of the plot's height (by the height, it landed on the x
    axis's title or past the figure's bottom edge), a horizontal colour bar with no title of its
    own (for plotly's unseen placeholder title, it moves the figure's title up by the bar's
    height: out of the figure in a phone's narrow plot, where the bar's labels stand on their side)."""
    problems = []
    legend = fig.layout.legend
    if legend.y is not None and legend.y < 0 and legend.yref != "container" and fig.layout.xaxis.side != "top":
        problems.append(f"a legend at y={legend.y} of the plot, over what lies under the plot")
    for data in fig.data:
        bar = getattr(data, "colorbar", None)
        if bar is not None and bar.orientation == "h" and data.showscale is not False and bar.title.text is None:
            problems.append(f"a horizontal colour bar with plotly's placeholder title ({data.type})")
    return problems


def test_no_legend_or_colour_bar_sits_where_plotly_draws_it_over_the_rest(trace):
    """The Next token chart's legend (y=-0.15 of its plot) lay over its axis title "probability",
    the history's over "step", the compare chart's past the figure's edge; the timeline's title
    was drawn above its figure in a narrow plot. Every figure, first and last step, each selection."""
    for index in (0, len(trace.steps) - 1):
        for builder in FIGURES:
            for selection in (Selection(), Selection(seq_id=1, head=None), Selection(seq_id=2, full_matrix=True)):
                fig = build(builder, trace, index, selection)
                assert placement_problems(fig) == [], (builder.__name__, index)


def test_the_kv_legend_names_its_first_holders_and_counts_the_rest():
    from inspector.views.kv_cache import MAX_LEGEND_HOLDERS, _legend

    names = ["free", "free, cached", *(f"#{s}" for s in range(MAX_LEGEND_HOLDERS + 5))]
    entries = _legend(names, ["#000000"] * len(names))
    assert [e["name"] for e in entries] == [*names[: 2 + MAX_LEGEND_HOLDERS], "5 more (hover a block)"]


def test_bidirectional_controls_and_zero_width_spaces_show_as_marks_wherever_text_is_shown():
    """A right-to-left override (or any bidi control) in a token or a name would reorder the
    rest of the line it is shown in, and a zero-width space hid itself ("Par<U+200B>is" read as
    "Paris"): every way the views show text shows them as marks instead. So do control
    characters, a byte-level tokenizer's tokens for bytes 0x00-0x1f and 0x7f: written raw, a
    token "\x1b" or "\x00" drew an empty chip, bar label and fork button."""
    from inspector.views.lineage import quote
    from inspector.views.markup import BIDI_CONTROLS, CONTROL_CHARACTERS, ZERO_WIDTH_SPACES, escape
    from inspector.views.tokens import axis_label, chip_text, visible

    assert {0x00, 0x0D, 0x1B, 0x7F, 0x9F} <= set(CONTROL_CHARACTERS) and not {0x09, 0x0A} & set(CONTROL_CHARACTERS)
    assert escape("a\nb\tc") == "a\nb\tc"  # whitespace stays text (chips mark it: tokens.visible)
    for code in (*CONTROL_CHARACTERS, *BIDI_CONTROLS, *ZERO_WIDTH_SPACES):
        text = f"a{chr(code)}b"
        for shown in (chip_text(text), axis_label(text, 40), quote(text), escape(text), visible(text)):
            assert chr(code) not in shown and f"⟨U+{code:04X}⟩" in shown
    assert escape("مرحبا שלום") == "مرحبا שלום"  # right-to-left letters are text, shown as they are
    assert escape("👩\u200d👧 می\u200cخواهم") == "👩\u200d👧 می\u200cخواهم"  # joiners shape emoji and scripts


def test_sequence_labels_read_on_white():
    """The "#3" of the step details and the block tables is text in the sequence's colour: the
    palette's orange, yellow and teal measured 2.0-2.4:1 on white. The text colour is darkened
    to WCAG AA (4.5:1) and keeps the hue's order of channels."""
    from inspector.views.colors import SEQUENCE_PALETTE, _contrast_with_white, sequence_color, sequence_text_color

    for seq_id in range(len(SEQUENCE_PALETTE)):
        text = sequence_text_color(seq_id)
        rgb = [int(text[i : i + 2], 16) for i in (1, 3, 5)]
        assert _contrast_with_white(rgb) >= 4.5, (seq_id, text)
        base = [int(sequence_color(seq_id)[i : i + 2], 16) for i in (1, 3, 5)]
        assert sorted(range(3), key=rgb.__getitem__) == sorted(range(3), key=base.__getitem__)
