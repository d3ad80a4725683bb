"""The Text panel as keyed parts (inspector/views/text_parts.py): they join to the panel's one
HTML string at every step, each sequence's block is keyed by its id (nested in its request's
group), an output chip is one string of its own, and a one-step cursor move changes few parts,
which is what lets the page (static/app.js) redraw only those.

The run: the tiny random model's recorded run (a preemption), a user's fork, a request of 2
samples, then a request of 3 samples and a beam search of width 3 (test_views_sharing's run)."""

from __future__ import annotations

import re

import pytest
import torch
from test_inspector_support import add_forks, record_tiny_run

from inspector.views import join_text, message_parts, text_html, text_parts
from inspector.views.markup import empty_panel
from minillama import SamplingParams


@pytest.fixture(scope="module")
def trace():
    run = record_tiny_run()
    add_forks(run)
    prompt = torch.randint(0, 256, (7,), generator=torch.Generator().manual_seed(8)).tolist()
    run.session.add(prompt, SamplingParams(temperature=1.0, seed=11, max_tokens=4, n=3))
    run.session.add(prompt, SamplingParams(max_tokens=6, beam_width=3))
    assert run.session.run().finished
    return run.session.trace


def sequences(parts) -> list[dict]:
    """Every sequence's part, a group's members in place of the group."""
    return [member for item in parts["items"] for member in item.get("items", [item])]


def test_the_parts_join_to_the_panel_at_every_step(trace):
    for index in (-1, *range(len(trace.steps)), len(trace.steps)):
        assert join_text(text_parts(trace, index)) == text_html(trace, index), index


def test_each_block_is_keyed_by_its_sequence_and_a_group_by_its_request(trace):
    last = len(trace.steps) - 1
    parts = text_parts(trace, last)
    groups = [item for item in parts["items"] if "items" in item]
    assert groups  # the samples and the beams
    for group in groups:
        assert f'data-group="{group["key"].removeprefix("g")}"' in group["open"]
        assert {m["key"] for m in group["items"]} <= {f"s{s}" for s, r in trace.sequences.items()
                                                      if r.group_id == int(group["key"][1:])}
    keys = [s["key"] for s in sequences(parts)]
    assert sorted(keys) == sorted(f"s{s}" for s in trace.sequences) and len(set(keys)) == len(keys)
    for seq in sequences(parts):
        assert re.match(rf'<div class="mlv-seq[^"]*" data-seq="{seq["key"][1:]}"', seq["open"])


def test_an_output_chip_is_one_string_and_a_step_changes_only_the_last_chips(trace):
    """Each sampled token is one string of "out" (one chip, a line break after it if its text
    has one). From one step to the next a sequence keeps every chip but the last one or two:
    the one outlined at the old step, and the one sampled at the new."""
    for index in range(len(trace.steps) - 1):
        now, then = ({s["key"]: s for s in sequences(text_parts(trace, i))} for i in (index, index + 1))
        for key, seq in now.items():
            out = seq["out"]
            assert all(len(re.findall(r"<span class='tok", chip)) == 1 for chip in out)
            sampled = [t for step in trace.steps[: index + 1] for t in step.tokens if t.seq_id == int(key[1:])]
            assert len(out) == len(sampled)
            kept = then[key]["out"] if key in then else []
            common = next((i for i, (a, b) in enumerate(zip(out, kept)) if a != b), min(len(out), len(kept)))
            assert len(out) - common <= 1 and len(kept) - common <= 2, (index, key)


def test_a_panel_with_nothing_to_show_is_its_message():
    assert join_text(message_parts("No step yet <here>")) == empty_panel("No step yet <here>")
    assert message_parts("x")["items"] == []
