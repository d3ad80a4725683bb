"""The what-if views (inspector/views: branch.py, fork_choices.py, lineage.py) from a real run of
a tiny random model: a greedy request forked by the user at its third token with the model's
second choice there, and a second fork of it with the very token it drew (which diverges later,
or never). Checked against what the trace says, without a browser."""

from __future__ import annotations

import copy
import re

import pytest
from conftest import make_hf_model

from inspector import DebugSession
from inspector.views import Selection, align, branch_html, fork_choices_html, fork_label, lineage_order, text_html
from inspector.views.branch import pick_pair
from minillama import EngineConfig, LLMEngine, SamplingParams

PROMPT = list(range(10, 19))  # 9 tokens: 2 blocks of 4 and one token
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def run():
    """(trace, parent id, fork id, same-token fork id, the step of the replaced token), with
    every output token given a text "<id>" (a tiny model has none): the views must escape it."""
    hf = make_hf_model("gqa-tied-llama3")
    engine = LLMEngine.from_hf_model(hf, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=32, block_size=4))
    session = DebugSession(engine)
    parent = session.add(PROMPT, SamplingParams(temperature=0, max_tokens=MAX_TOKENS))
    for _ in range(4):
        session.step()
    record = session.trace.sequences[parent]
    step = record.token_steps[2]
    drawn = session.trace.steps[step].token_of(parent).logits
    kept = len(PROMPT) + 2
    fork = session.fork(parent, kept, [drawn.top_ids[1]], SamplingParams(temperature=0, max_tokens=MAX_TOKENS - 3))
    same = session.fork(parent, kept, [record.output_ids[2]], SamplingParams(temperature=0, max_tokens=2))
    session.run()
    trace = copy.deepcopy(session.trace)
    for s in trace.steps:
        for token in s.tokens:
            token.text_delta = f"<{token.token_id}>"
    return trace, parent, fork, same, step


def test_the_rows_align_parent_and_fork_at_the_fork_point(run):
    trace, parent_id, fork_id, _, step = run
    parent, fork = trace.sequences[parent_id], trace.sequences[fork_id]
    branch = align(trace, parent_id, fork_id)
    assert (branch.parent_id, branch.fork_id, branch.position) == (parent_id, fork_id, len(PROMPT) + 2)
    assert len(branch.prefix) == branch.position  # the shared prefix, once
    first = branch.rows[0]
    # Position by position: each side's token there.
    both = [*parent.prompt_ids, *parent.output_ids], [*fork.prompt_ids, *fork.output_ids]
    for row in branch.rows:
        assert row.parent.token_id == both[0][row.position] and row.fork.token_id == both[1][row.position]
    assert len(branch.rows) == len(both[0]) - branch.position == len(both[1]) - branch.position  # same length
    # The fork point: the parent's drawn token beside the forced one, the first difference.
    assert first.position == branch.position and first.differs and branch.divergence == 0
    assert (first.parent.kind, first.parent.step) == ("sampled", step) and first.fork.kind == "forced"
    # A sampled token carries its recorded p and entropy; the forced one the parent's p of it.
    drawn = trace.steps[step].token_of(parent_id).logits
    assert (first.parent.prob, first.parent.entropy) == (drawn.sampled_prob, drawn.entropy)
    assert first.fork.prob == drawn.top_probs[1] and first.fork.rank == 1 and first.fork.entropy is None
    for row in branch.rows[1:]:
        token = trace.steps[row.fork.step].token_of(fork_id)
        assert (row.fork.kind, row.fork.prob, row.fork.entropy) == ("sampled", token.logits.sampled_prob,
                                                                     token.logits.entropy)


def test_the_rows_follow_the_cursor(run):
    trace, parent_id, fork_id, _, step = run
    fork = trace.sequences[fork_id]
    at = fork.token_steps[1]  # the fork has drawn two tokens by then
    rows = align(trace, parent_id, fork_id, until=at).rows
    assert sum(r.fork is not None and r.fork.kind == "sampled" for r in rows) == 2
    assert all(r.parent.step <= at for r in rows if r.parent is not None)
    html = branch_html(trace, at, Selection(seq_id=fork_id))
    assert f"step {at}" in html and html.count('class="tok tok-current') == 2  # each side's token of that step, outlined


def test_a_fork_with_the_drawn_token_marks_no_difference_at_the_fork_point(run):
    trace, parent_id, _, same_id, _ = run
    branch = align(trace, parent_id, same_id)
    assert not branch.rows[0].differs and branch.divergence != 0
    if branch.divergence is None:
        assert "no difference yet" in branch_html(trace, len(trace.steps) - 1, Selection(seq_id=same_id))


def test_the_pair_is_the_selected_fork_and_its_parent_or_the_parents_latest_fork(run):
    trace, parent_id, fork_id, same_id, _ = run
    assert pick_pair(trace, fork_id) == (parent_id, fork_id)
    assert pick_pair(trace, parent_id) == (parent_id, same_id)
    assert pick_pair(trace, None) is None and pick_pair(trace, 99) is None
    last = len(trace.steps) - 1
    shown = branch_html(trace, last, Selection(seq_id=parent_id))
    assert f"other forks too: #{fork_id}" in shown


def test_the_branch_panel_marks_the_divergence_and_escapes_token_text(run):
    trace, parent_id, fork_id, _, _ = run
    html = branch_html(trace, len(trace.steps) - 1, Selection(seq_id=fork_id))
    assert html.count('class="mlv-differs mlv-diverge"') == 1 and "first ≠" in html
    assert "&lt;" in html and not re.search(r"<\d+>", html)  # "<id>" texts stay text


def test_a_sequence_without_forks_says_how_to_make_one():
    hf = make_hf_model("gqa-tied-llama3")
    session = DebugSession(LLMEngine.from_hf_model(hf, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=8,
                                                                     block_size=4)))
    session.add(PROMPT, SamplingParams(temperature=0, max_tokens=2))
    session.step()
    assert "is not a fork and has none" in branch_html(session.trace, 0)


def test_forks_are_listed_under_their_parents_with_where_they_branched(run):
    trace, parent_id, fork_id, same_id, step = run
    assert lineage_order(trace) == [(parent_id, 0), (fork_id, 1), (same_id, 1)]
    label = fork_label(trace, fork_id)
    assert label.startswith(f"#{fork_id} ← #{parent_id} at step {step}, ")
    forced = trace.sequences[fork_id].prompt_ids[-1]
    assert label.endswith(f'"[{forced}]"')  # the tiny model's tokens have no text: their ids
    assert fork_label(trace, parent_id) == f"#{parent_id}"
    text = text_html(trace, len(trace.steps) - 1)
    order = [int(s) for s in re.findall(r'class="mlv-seq" data-seq="(\d+)"', text)]
    assert order == [parent_id, fork_id, same_id] and "← #" in text
    assert f"#{parent_id}'s first {len(PROMPT) + 2} tokens" in text  # the kept tokens, folded


def test_a_loop_of_parents_in_a_file_lists_each_sequence_once(run):
    trace = copy.deepcopy(run[0])
    parent_id, fork_id = run[1], run[2]
    trace.sequences[parent_id].parent_id, trace.sequences[parent_id].fork_position = fork_id, 1
    assert sorted(s for s, _ in lineage_order(trace)) == sorted(trace.sequences)


def test_the_fork_buttons_offer_every_other_token_at_the_cursor(run):
    trace, parent_id, _, _, step = run
    drawn = trace.steps[step].token_of(parent_id)
    html = fork_choices_html(trace, step, Selection(seq_id=parent_id))
    buttons = re.findall(r"<button [^>]*>", html)
    assert len(buttons) == len(drawn.logits.top_ids)
    disabled = [b for b in buttons if " disabled" in b]
    assert len(disabled) == 1 and f'data-token="{drawn.token_id}"' in disabled[0]
    assert all(f'data-seq="{parent_id}" data-step="{step}"' in b for b in buttons)
    read_only = fork_choices_html(trace, step, Selection(seq_id=parent_id), live=False)
    assert read_only.count(" disabled") == len(buttons) and "read-only" in read_only
    prefill = trace.sequences[run[2]].token_steps[0] - 1  # a step before the fork existed
    assert "drew no token" in fork_choices_html(trace, prefill, Selection(seq_id=run[2]))
