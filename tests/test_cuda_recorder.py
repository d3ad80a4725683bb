"""The recorder on a CUDA GPU: decode steps keep their CUDA graphs while attention is recorded
(the queries are copied out inside the graph), and the graph-recorded queries and keys equal
those an eager engine records; the logits summaries, replayed from graphs of their own on a side
stream, equal the eager computation's."""

from __future__ import annotations

import pytest
import torch
from conftest import make_hf_model
from test_inspector_support import assert_logits_summaries_match, record_tiny_run

from inspector import CapturePolicy, DebugSession
from inspector.record.logits_summary import summary_columns
from minillama import EngineConfig, LLMEngine, SamplingParams

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def record(hf, eager: bool):
    engine = LLMEngine.from_hf_model(
        hf, EngineConfig(device="cuda", dtype="bfloat16", num_kv_blocks=64, block_size=16, enforce_eager=eager)
    )
    replays = 0
    replay = engine.runner._replay_decode_graph

    def counted(inputs):
        nonlocal replays
        replays += 1
        return replay(inputs)

    engine.runner._replay_decode_graph = counted
    session = DebugSession(engine, CapturePolicy(attention_requests=(0, 2)))
    generator = torch.Generator().manual_seed(0)
    for n in (9, 17, 30):
        session.add(torch.randint(0, 256, (n,), generator=generator).tolist(), SamplingParams(temperature=0, max_tokens=12))
    session.run()
    return session.trace, replays


def test_decode_capture_keeps_graphs_and_records_what_eager_records():
    hf = make_hf_model("gqa-tied-llama3")
    graphed, replays = record(hf, eager=False)
    eager, no_replays = record(hf, eager=True)
    assert replays == sum(s.schedule.phase == "decode" for s in graphed.steps) > 0 and no_replays == 0
    assert all(s.layer_hooks == (s.schedule.phase == "prefill") for s in graphed.steps if s.attention_seqs)
    assert sorted(graphed.attention) == sorted(eager.attention) == [0, 2]
    for seq_id in graphed.attention:
        g, e = graphed.attention[seq_id], eager.attention[seq_id]
        assert g.length == e.length == len(graphed.sequences[seq_id].prompt_ids) + 11  # the last token is never fed back
        torch.testing.assert_close(g.q.float(), e.q.float(), atol=1e-2, rtol=1e-2)
        torch.testing.assert_close(g.k.float(), e.k.float(), atol=1e-2, rtol=1e-2)
        assert torch.equal(g.q_step, e.q_step)
        assert graphed.sequences[seq_id].output_ids == eager.sequences[seq_id].output_ids
        rows = graphed.attention_row(seq_id, 1, 0, g.length - 1)
        assert abs(float(rows.sum()) - 1) < 1e-4


def test_graphed_logits_summaries_match_the_engines_logits():
    """On a GPU the summaries replay from CUDA graphs on a side stream (one per bucket of rows);
    they must say what the eager CPU computation says of the same logits, for greedy and
    sampled rows, and for tokens drawn from outside the top k (top_k=3 makes those common)."""
    run = record_tiny_run(CapturePolicy(top_k=3, attention_requests=(0, 2)), device="cuda")
    assert_logits_summaries_match(run, k=3)
    graphs = run.session.recorder._summariser.graphs
    assert {1, 4} <= set(graphs.graphs)  # a batch of 1 row, and of 3 or 4 rows
    ranks = [t.logits.sampled_rank for s in run.session.trace.steps for t in s.tokens]
    assert max(ranks) >= 3  # some token came from outside the top 3


@pytest.mark.parametrize("vocab", [256, 4097, 49_152, 128_256])
def test_the_triton_summary_equals_the_readable_one(vocab):
    """inspector/record/logits_kernel.py against logits_stats.summary_columns, on vocabularies of one
    chunk, of a chunk and one logit, and of SmolLM2's and Llama-3's size; one row confident
    (entropy near 0), the others spread."""
    from inspector.record.logits_kernel import summary_columns_triton

    generator = torch.Generator(device="cuda").manual_seed(vocab)
    logits = 4 * torch.randn(5, vocab, device="cuda", generator=generator)
    logits[0] *= 20
    k = 10
    fast, readable = summary_columns_triton(logits, k), summary_columns(logits, k)
    assert torch.equal(fast[:, :k], readable[:, :k])  # the same ids, in the same order
    torch.testing.assert_close(fast[:, k:], readable[:, k:], rtol=1e-5, atol=1e-6)
