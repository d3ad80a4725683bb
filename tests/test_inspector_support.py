"""Shared helpers for the inspector tests (no tests here).

Checker watches the engine independently of the Recorder, from the engine's own objects, so
the tests compare what the Recorder wrote with what the engine actually did. record_tiny_run
and record_embedded_run record runs whose KV pool is small enough to force preemption, with
prompts that share a prefix computed before they arrive, so prefix-cache hits happen too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from conftest import make_hf_model

from inspector import Breakpoint, CapturePolicy, DebugSession, RunResult, TextMatches
from minillama import EngineConfig, LLMEngine, Observer, SamplingParams
from minillama.model.sampler import filtered_logits


@dataclass
class SeenStep:
    """One step as the Checker saw it."""

    preempted: list[int] = field(default_factory=list)
    cached: dict[int, int] = field(default_factory=dict)  # seq id -> prefix-cache tokens at admission
    scheduled: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq id -> (start, end)
    logits: dict[int, torch.Tensor] = field(default_factory=dict)  # seq id -> raw logits [V]
    tokens: dict[int, int] = field(default_factory=dict)  # seq id -> token drawn
    finished: list[int] = field(default_factory=list)
    tables: dict[int, list[int]] = field(default_factory=dict)  # block tables at the step's end
    ref_counts: dict[int, int] = field(default_factory=dict)  # block id -> ref count, for the blocks in use
    cached_free: set[int] = field(default_factory=set)  # free blocks a later prompt can hit
    num_free: int = 0
    # (layer, seq id) -> (attention output of its new rows [n, H, D], V of its positions 0..end [end, Hkv, D])
    attention: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class Checker(Observer):
    wants_attention = True

    def __init__(self, engine: LLMEngine, watch: set[int]):
        self.engine = engine
        self.watch = watch  # sequences whose attention output and V are kept
        self.steps: list[SeenStep] = []

    def on_schedule(self, batch):
        self.batch = batch
        step = SeenStep(preempted=list(batch.preempted))
        for item in batch.scheduled:
            step.scheduled[item.seq_id] = (item.start, item.end)
            if item.num_cached_tokens:
                step.cached[item.seq_id] = item.num_cached_tokens
        self.steps.append(step)

    def on_attention(self, layer, q, k, v, output, metadata):
        bs = self.engine.config.block_size
        v_cache = self.engine.runner.model.model.layers[layer].self_attn.v_cache
        cu = metadata.cu_seqlens_q.tolist() if metadata.is_prefill else list(range(q.shape[0] + 1))
        for i, item in enumerate(self.batch.scheduled):
            if item.seq_id in self.watch:
                positions = torch.arange(item.end)
                table = torch.tensor(self.engine.sequences[item.seq_id].block_table)
                values = v_cache[table[positions // bs], positions % bs]  # [end, Hkv, D]
                self.steps[-1].attention[layer, item.seq_id] = (output[cu[i] : cu[i + 1]].clone(), values.clone())

    def on_logits(self, batch, logits):
        for item, row in zip(batch.sampling, logits):
            self.steps[-1].logits[item.seq_id] = row.clone()

    def on_step_end(self, result):
        engine = self.engine
        step = self.steps[-1]
        step.tokens = {o.request_id: o.token_id for o in result.outputs}
        step.finished = list(result.finished)
        step.tables = {s.seq_id: list(s.block_table) for s in engine.scheduler.running}
        bm = engine.block_manager
        step.ref_counts = {b.block_id: b.ref_count for b in bm.blocks if b.ref_count}
        step.cached_free = {
            b.block_id for b in bm.blocks
            if not b.ref_count and b.hash is not None and bm.hash_to_block_id.get(b.hash) == b.block_id
        }
        step.num_free = result.num_free_blocks


@dataclass
class RecordedRun:
    engine: LLMEngine
    session: DebugSession
    checker: Checker
    ids: list[int]  # sequence ids, in the order added
    params: dict[int, SamplingParams]  # each sequence's
    stops: list[RunResult]  # what each session.run call returned


def _record(engine: LLMEngine, policy: CapturePolicy, prompts: list, params: list[SamplingParams], chat: bool,
            until: list[Breakpoint]) -> RecordedRun:
    """The first prompt runs alone for one step, so its prefix is cached when the others
    arrive. Then run to the breakpoints, and on to the end."""
    session = DebugSession(engine, policy)
    checker = Checker(engine, session.recorder.traced)  # the recorder's live set of traced ids
    engine.add_observer(checker)
    ids = [session.add(prompts[0], params[0], chat=chat)]
    session.step()
    ids += [session.add(p, sp, chat=chat) for p, sp in zip(prompts[1:], params[1:])]
    stops = [session.run(until=until), session.run()]
    assert stops[-1].finished
    return RecordedRun(engine, session, checker, ids, dict(zip(ids, params)), stops)


TINY_PARAMS = [
    SamplingParams(temperature=0, max_tokens=12),
    SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, seed=1),
    SamplingParams(temperature=1.2, top_k=20, max_tokens=12, seed=2),
    SamplingParams(temperature=0, max_tokens=10),
]


def record_tiny_run(
    policy: CapturePolicy | None = None, traced_requests: tuple[int, ...] = (0, 2), max_num_batched_tokens: int = 4096,
    device: str = "cpu",
) -> RecordedRun:
    """A tiny random model: four requests sharing a 12-token prefix (3 blocks of 4) in a
    14-block pool, together needing more blocks than the pool has (preemption). Attention is
    traced for the requests at `traced_requests` (the third gets a prefix-cache hit). A small
    max_num_batched_tokens splits prompts into chunks over several steps."""
    hf = make_hf_model("gqa-tied-llama3")
    config = EngineConfig(device=device, dtype="float32", num_kv_blocks=14, block_size=4,
                          max_num_batched_tokens=max_num_batched_tokens)
    engine = LLMEngine.from_hf_model(hf, config)
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 256, (12,), generator=generator).tolist()
    prompts = [prefix + torch.randint(0, 256, (n,), generator=generator).tolist() for n in (3, 5, 2, 4)]
    policy = policy or CapturePolicy(attention_requests=traced_requests)
    return _record(engine, policy, prompts, TINY_PARAMS, chat=False, until=[])


def record_embedded_run(model_dir) -> RecordedRun:
    """The embedded model: four chat prompts (sharing the chat template's system prompt) in a
    12-block pool of 8-token blocks, greedy; the first two traced. Its first run call stops
    when the answer to the first question says "Paris"."""
    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(device="cpu", num_kv_blocks=12, block_size=8))
    questions = ["What is the capital of France?", "Name three primary colors.", "What is 2 + 2?", "Say hello in Spanish."]
    params = [SamplingParams(temperature=0, max_tokens=24)] * 4
    return _record(engine, CapturePolicy(), questions, params, chat=True, until=[TextMatches("Paris")])


def assert_logits_summaries_match(run: RecordedRun, k: int = 10) -> None:
    """Every token's LogitsSummary against the logits the Checker saw: top k, probabilities
    before and after the sampling filters, entropy, the drawn token's probability and rank."""
    trace, seen = run.session.trace, run.checker.steps
    for step, checked in zip(trace.steps, seen, strict=True):
        for token in step.tokens:
            logits = checked.logits[token.seq_id].cpu()  # [V]
            probs = logits.softmax(dim=-1)
            g = token.logits
            assert g.top_ids == probs.topk(k).indices.tolist()
            torch.testing.assert_close(torch.tensor(g.top_probs), probs[g.top_ids])
            assert g.entropy == pytest.approx(-(probs * probs.log()).sum().item(), rel=1e-4)
            assert g.sampled_prob == pytest.approx(probs[token.token_id].item(), rel=1e-5)
            assert g.sampled_rank == int((probs > probs[token.token_id]).sum())
            p = run.params[token.seq_id]
            if p.greedy:
                assert g.sampled_rank == 0 and g.top_sampling_probs[0] == 1.0
            else:
                sampling = filtered_logits(logits[None], [p]).softmax(dim=-1)[0]
                torch.testing.assert_close(torch.tensor(g.top_sampling_probs), sampling[g.top_ids])


def add_forks(run: RecordedRun, beams: bool = False) -> dict[str, int]:
    """Go on with a finished recorded run: a new greedy request, forked by the user two steps
    into its decode at a position inside a block (a copy on write), and a request with n = 2
    seeded samples sharing its prompt's blocks (and with `beams`, then a beam search of width
    3, whose beams fork and prune); run to the end. -> the ids: "parent", "fork", "samples" (the
    leader of the samples), and "beams" (the search's request id)."""
    session = run.session
    prompt = torch.randint(0, 256, (9,), generator=torch.Generator().manual_seed(5)).tolist()  # 2 blocks + 1 token
    parent = session.add(prompt, SamplingParams(temperature=0, max_tokens=8))
    for _ in range(3):  # the prompt, then two decode steps
        session.step()
    info = run.engine.request(parent)
    fork = session.fork(parent, info.num_prompt_tokens + 1, [7])  # ends at position 10: inside block 2
    other = torch.randint(0, 256, (6,), generator=torch.Generator().manual_seed(6)).tolist()  # 1 block + 2 slots
    samples = session.add(other, SamplingParams(temperature=1.0, seed=3, max_tokens=5, n=2))
    for seq_id, params in ((parent, SamplingParams(temperature=0, max_tokens=8)),
                           (samples, SamplingParams(temperature=1.0, seed=3, max_tokens=5, n=2))):
        run.params[seq_id] = params
    run.params[fork] = SamplingParams(temperature=0, max_tokens=8)
    stop = session.run()
    assert stop.finished
    for sample in run.engine.samples(samples)[1:]:
        run.params[sample] = SamplingParams(temperature=1.0, seed=4, max_tokens=5)
    ids = {"parent": parent, "fork": fork, "samples": samples}
    if beams:
        ids["beams"] = session.add(prompt[:5], SamplingParams(beam_width=3, max_tokens=6))
        assert session.run().finished
    return ids


def assert_attention_is_the_engines(session: DebugSession, checker: Checker) -> int:
    """softmax(q . K * scale) @ V from the recorded Q/K is each layer's attention output, for
    every head of every traced query. -> how many rows were compared."""
    trace = session.trace
    group = trace.model.num_heads // trace.model.num_kv_heads
    compared = 0
    for index, seen in enumerate(checker.steps):
        for (layer, seq_id), (output, values) in seen.attention.items():
            start, end = seen.scheduled[seq_id]
            for pos in (p for p in range(start, end) if trace.attention[seq_id].q_step[p] == index):
                for head in range(trace.model.num_heads):
                    ours = trace.attention_row(seq_id, layer, head, pos) @ values[: pos + 1, head // group]
                    torch.testing.assert_close(ours, output[pos - start, head], atol=1e-5, rtol=1e-5)
                    compared += 1
    return compared
