"""A replay under the same settings repeats every token and step (an empty diff); under other
settings the diff names exactly the requests whose scheduling changed, and the first token
that came at another step.

The truth is each trace's own record of what the scheduler ran (every step's scheduled entries:
which sequences, from which position, how many tokens) and of when each token was sampled,
read here apart from the diff's own bookkeeping. A request that only came later, stalled behind
another's recomputed prefill, has the same waits, chunks, preemptions and prefix-cache tokens
as before: the diff used to call its schedule "the same".
"""

from __future__ import annotations

import pytest
import torch
from tiny_model import write_tiny_model

from inspector import DebugSession, Trace, diff_traces, format_diff, replay, views
from minillama import EngineConfig, LLMEngine, SamplingParams

# Settings that change the schedule (a pool too small for all three, one seat, a token budget
# that chunks prompts, no prefix cache while the prompts share one) and ones that do not.
CHANGES = {
    "same": {},
    "small-pool": {"num_kv_blocks": 12},
    "one-seat": {"max_num_seqs": 1},
    "chunked": {"max_num_batched_tokens": 8},
    "bigger-blocks": {"block_size": 8},
    "no-prefix-cache": {"enable_prefix_caching": False},
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Trace, object]:
    """Three greedy requests sharing a 12-token prefix, in a pool that holds them all."""
    tiny = write_tiny_model(tmp_path_factory.mktemp("tiny"))
    session = DebugSession(LLMEngine.from_pretrained(tiny, EngineConfig(device="cpu", num_kv_blocks=40, block_size=4)))
    prefix = torch.randint(0, 256, (12,), generator=torch.Generator().manual_seed(0)).tolist()
    session.add_batch([prefix + [5, 6, 7], prefix + [9, 9], prefix + [1, 2, 3, 4]],
                      SamplingParams(temperature=0, max_tokens=12))
    session.run()
    return session.trace, tiny


def ran(trace: Trace, seq_id: int) -> list[tuple[int, int, int]]:
    """What the scheduler ran of `seq_id`, as recorded: (step, first position, tokens) per step."""
    return [(step.index, x.start, x.num_tokens) for step in trace.steps for x in step.schedule.scheduled
            if x.seq_id == seq_id]


@pytest.mark.parametrize("change", CHANGES)
def test_the_diff_names_exactly_the_requests_whose_schedule_changed(recorded, change):
    trace, tiny = recorded
    other = replay(trace, tiny, progress=False, **CHANGES[change])
    diff = diff_traces(trace, other)
    assert diff.equal  # greedy: other settings move the steps, never the tokens
    text = format_diff(diff)
    moved = []
    for r in diff.requests:
        truth = ran(trace, r.seq_a) != ran(other, r.seq_b)
        assert r.schedule_differs == truth, r.label
        token_steps = trace.sequences[r.seq_a].token_steps, other.sequences[r.seq_b].token_steps
        first = next((i for i, (x, y) in enumerate(zip(*token_steps)) if x != y), None)
        assert r.first_moved_token == first
        if first is not None:
            assert f"{r.label}: " in text and f"token {first} first at another step " \
                f"({token_steps[0][first]} / {token_steps[1][first]})" in text
        moved.append(truth)
        # The Compare tab marks the steps cell exactly where they differ.
        schedules = views.compare_html(diff, "a", "b").split("<th>ran at steps</th>")[1]
        row = schedules.split(f"<td>{r.label}</td>")[1].split("</tr>")[0]
        assert ("mlv-changed" in row) == truth
    listed = [r.label for r in diff.requests if f"  {r.label}: waited" in text]
    assert listed == [r.label for r, m in zip(diff.requests, moved) if m]
    if change == "same":
        assert not any(moved) and "schedules: the same for every request" in text
    elif change == "small-pool":  # request 0 is never preempted, yet comes later: it is named
        zero = diff.requests[0]
        assert zero.schedule_a.preemptions == zero.schedule_b.preemptions == 0 and moved[0]

