"""Async scheduling (minillama/engine/in_flight.py): planning step N+1 before step N's tokens are
read changes no token. A run with it on gives every request the tokens and finish reason of the
same run with it off, streams exactly those tokens (none past a stop), and leaves every block
free, under prefix caching, preemption, seeded sampling, stop tokens, aborts and reads between
steps. On CPU here; on the GPU (CUDA graphs, bf16) at the end."""

from __future__ import annotations

import random

import pytest
import torch

from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.engine.sequence import SequenceStatus
from minillama.observe import Observer
from tests.conftest import cuda_bf16_engine, make_hf_model

VOCAB = 256


@pytest.fixture(scope="module")
def hf_model():
    return make_hf_model("gqa-tied-llama3", vocab_size=VOCAB)


def cpu_engine(hf_model, mode: str, num_kv_blocks: int = 64, prefix_caching: bool = True) -> LLMEngine:
    config = EngineConfig(device="cpu", num_kv_blocks=num_kv_blocks, block_size=16, max_num_seqs=16,
                          max_num_batched_tokens=96, async_scheduling=mode, enable_prefix_caching=prefix_caching)
    return LLMEngine.from_hf_model(hf_model, config)


def mixed_requests(count: int, seed: int = 0) -> list[tuple[list[int], SamplingParams]]:
    """Prompts of 1-80 tokens (every fifth behind a shared 20-token prefix); greedy and seeded
    sampling; lengths of 1-40 tokens; half stop on tokens 5 or 17 (the tiny models have no EOS)."""
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        prompt = [rng.randrange(VOCAB) for _ in range(rng.randrange(1, 60))]
        if i % 5 == 0:
            prompt = [7] * 20 + prompt
        params = SamplingParams(temperature=0.0 if i % 3 else 0.8, seed=None if i % 3 else 1000 + i,
                                max_tokens=rng.randrange(1, 40), stop_token_ids=(5, 17) if i % 2 else ())
        requests.append((prompt, params))
    return requests


def run_all(engine: LLMEngine, requests, between_steps=None) -> tuple[list[tuple], dict[int, list[int]]]:
    """Each request's (output tokens, finish reason), and the tokens step() streamed for it."""
    ids = [engine.add_request(prompt, params) for prompt, params in requests]
    streamed: dict[int, list[int]] = {i: [] for i in ids}
    steps = 0
    while engine.has_unfinished():
        for output in engine.step():
            streamed.setdefault(output.request_id, []).append(output.token_id)  # forks' too
        steps += 1
        if between_steps is not None:
            between_steps(engine, ids, steps)
    results = [(engine.request(i).output_token_ids, engine.request(i).finish_reason) for i in ids]
    return results, {i: streamed[i] for i in ids}


def count_overlapped(engine: LLMEngine) -> list[int]:
    """Counts the steps prepared while the step before was still unread (a pending token tensor)."""
    counter = [0]
    prepare = engine.runner.prepare

    def spy(batch, pending=None):
        counter[0] += pending is not None
        return prepare(batch, pending)

    engine.runner.prepare = spy
    return counter


@pytest.mark.parametrize("num_kv_blocks, prefix_caching", [(64, True), (64, False), (12, True)],
                         ids=["roomy", "no-prefix-cache", "preempting"])
def test_same_tokens_with_and_without_overlap(hf_model, num_kv_blocks, prefix_caching):
    requests = mixed_requests(64)
    in_order = cpu_engine(hf_model, "off", num_kv_blocks, prefix_caching)
    overlapped = cpu_engine(hf_model, "on", num_kv_blocks, prefix_caching)
    overlaps = count_overlapped(overlapped)
    expected, _ = run_all(in_order, requests)
    got, streamed = run_all(overlapped, requests)
    assert got == expected
    assert overlaps[0] > 0, "no step was planned ahead"
    assert overlapped.stats.wait_seconds > 0 and in_order.stats.wait_seconds == 0  # reads of launched steps
    # step() streamed each request's tokens exactly, none after its stop token.
    assert [tuple(tokens) for tokens in streamed.values()] == [tokens for tokens, _ in got]
    assert {reason for _, reason in got} == {"stop", "length"}
    if num_kv_blocks == 12:
        assert overlapped.stats.preemptions > 0 and overlapped.stats.preemptions == in_order.stats.preemptions
    assert overlapped.block_manager.num_free_blocks == num_kv_blocks  # nothing leaked
    assert not overlapped.scheduler.running and not overlapped.scheduler.waiting


def test_bfloat16_logits_draw_what_float32_logits_draw(hf_model):
    """Without an observer the async step hands the sampler logits in the model's dtype (it widens
    only the rows it draws at random): a bf16 model's greedy and seeded tokens are the in-order
    engine's, which samples from fp32 logits."""
    def engine(mode: str) -> LLMEngine:
        config = EngineConfig(device="cpu", dtype="bfloat16", num_kv_blocks=64, block_size=16, max_num_seqs=16,
                              async_scheduling=mode)
        return LLMEngine.from_hf_model(hf_model, config)

    requests = mixed_requests(24, seed=2)
    expected, _ = run_all(engine("off"), requests)
    got, _ = run_all(engine("on"), requests)
    assert got == expected


def test_reads_between_steps_see_real_tokens(hf_model):
    """request(), block_pool_snapshot() and fork() between steps read the step in flight first:
    no placeholder is ever seen, and the outputs read early come with the next step() call."""
    requests = mixed_requests(16, seed=1)
    expected, _ = run_all(cpu_engine(hf_model, "off"), requests)
    forks = []

    def look(engine: LLMEngine, ids: list[int], steps: int) -> None:
        for i in ids:
            assert all(t >= 0 for t in engine.request(i).output_token_ids)
        snapshot = engine.block_pool_snapshot()
        assert snapshot is not None
        if steps == 6:
            running = [i for i in ids if engine.request(i).status == "running"]
            forks.append(engine.fork(running[0], engine.request(running[0]).num_prompt_tokens, [3],
                                     SamplingParams(temperature=0, max_tokens=5)))

    engine = cpu_engine(hf_model, "on")
    got, streamed = run_all(engine, requests, look)
    assert got == expected
    assert [tuple(tokens) for tokens in streamed.values()] == [tokens for tokens, _ in got]
    assert len(engine.request(forks[0]).output_token_ids) == 5
    engine.forget(forks[0])
    assert engine.block_manager.num_free_blocks == 64


def test_abort_while_its_token_is_in_flight(hf_model):
    """An aborted request's row of the step in flight is dropped; the others are unchanged."""
    requests = [([11, 12, 13, i], SamplingParams(temperature=0, max_tokens=30)) for i in range(6)]
    expected, _ = run_all(cpu_engine(hf_model, "off"), requests[1:])
    engine = cpu_engine(hf_model, "on")
    ids = [engine.add_request(prompt, params) for prompt, params in requests]
    for _ in range(4):
        engine.step()
    assert engine._in_flight is not None, "the decode steps should be planned ahead"
    aborted = engine.sequences[ids[0]]
    engine.abort(ids[0])  # forgets it too
    assert aborted.finish_reason == "abort" and all(t >= 0 for t in aborted.token_ids)
    while engine.has_unfinished():
        assert all(output.request_id != ids[0] for output in engine.step())  # nothing more of it
    assert [(engine.request(i).output_token_ids, engine.request(i).finish_reason) for i in ids[1:]] == expected
    assert engine.block_manager.num_free_blocks == 64


def test_steps_in_order_when_something_must_act_on_each_step(hf_model):
    """An observer, or n > 1 samples before their first token: no step is planned ahead while
    they are there, and the tokens are the synchronous engine's."""

    class Counting(Observer):
        def __init__(self):
            self.ends = 0

        def on_step_end(self, result) -> None:
            self.ends += 1

    requests = [([20, 21, 22], SamplingParams(temperature=0, max_tokens=6)),
                ([40, 41, 42], SamplingParams(temperature=0.8, seed=3, max_tokens=6, n=2))]
    expected, _ = run_all(cpu_engine(hf_model, "off"), requests)
    engine = cpu_engine(hf_model, "on")
    ahead_while_pending = []
    prepare = engine.runner.prepare

    def spy(batch, pending=None):
        if pending is not None:
            ahead_while_pending.append(bool(engine._pending_samples))
        return prepare(batch, pending)

    engine.runner.prepare = spy
    got, _ = run_all(engine, requests)
    assert got == expected
    # Steps went ahead once the samples had their first token, never before.
    assert ahead_while_pending and not any(ahead_while_pending)

    engine = cpu_engine(hf_model, "on")
    watcher = Counting()
    engine.add_observer(watcher)
    overlaps = count_overlapped(engine)
    got, _ = run_all(engine, requests[:1])
    assert got == expected[:1] and overlaps[0] == 0 and watcher.ends == engine.step_count


def run_searches(engine: LLMEngine, requests, between_steps=None) -> list:
    """Each request's result: a beam search's beams, best first, as (tokens, score, finish
    reason); any other request's (tokens, finish reason); None for one aborted."""
    ids = [engine.add_request(prompt, params) for prompt, params in requests]
    steps = 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
        if between_steps is not None:
            between_steps(engine, ids, steps)
    results = []
    for i, (_, params) in zip(ids, requests):
        if i not in engine.sequences:  # aborted (abort() forgets it)
            results.append(None)
            continue
        info = engine.request(i)
        if params.beam_width > 1:
            results.append([(engine.request(b).output_token_ids, engine.request(b).beam_score,
                             engine.request(b).finish_reason) for b in engine.beams(i)])
        else:
            results.append((info.output_token_ids, info.finish_reason))
    return results


def same_results(got: list, expected: list) -> bool:
    """run_searches' results agree: the same tokens and finish reasons, and beam scores equal up to
    float32 rounding (a batch of other rows computes a row's logits in another order of sums)."""
    exact = [[(tokens, reason) for tokens, _, reason in r] if isinstance(r, list) else r for r in got]
    assert exact == [[(tokens, reason) for tokens, _, reason in r] if isinstance(r, list) else r for r in expected]
    scores = [score for r in got if isinstance(r, list) for _, score, _ in r]
    return scores == pytest.approx([score for r in expected if isinstance(r, list) for _, score, _ in r], rel=1e-5)


def search_requests(count: int, seed: int = 0) -> list[tuple[list[int], SamplingParams]]:
    """Beam searches of width 2-4 (length penalties, early stopping, stop tokens) among greedy
    and seeded requests, prompts of 1-20 tokens, 2-16 new tokens."""
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        prompt = [rng.randrange(VOCAB) for _ in range(rng.randrange(1, 20))]
        max_tokens = rng.randrange(2, 16)
        stops = (5, 17) if i % 4 == 1 else ()
        if i % 3:
            params = SamplingParams(max_tokens=max_tokens, beam_width=rng.choice([2, 3, 4]), stop_token_ids=stops,
                                    length_penalty=rng.choice([0.5, 1.0, 2.0]), early_stopping=rng.choice([True, False]))
        else:
            params = SamplingParams(temperature=0.0 if i % 2 else 0.8, seed=i, max_tokens=max_tokens, stop_token_ids=stops)
        requests.append((prompt, params))
    return requests


@pytest.mark.parametrize("num_kv_blocks", [64, 20], ids=["roomy", "preempting"])
def test_beam_searches_overlap_and_find_the_same_beams(hf_model, num_kv_blocks):
    """A beam search's beams sit out the step planned while their selection is in flight, and
    other requests and searches fill it: steps go ahead, and every search finds the beams, scores
    and finish reasons of the synchronous engine, every other request its tokens. With few blocks
    the engine steps in order whenever a decode step might have to preempt, and the results
    still agree (a search is preempted whole)."""
    requests = search_requests(30)
    expected = run_searches(cpu_engine(hf_model, "off", num_kv_blocks), requests)
    engine = cpu_engine(hf_model, "on", num_kv_blocks)
    overlaps = count_overlapped(engine)
    assert same_results(run_searches(engine, requests), expected)
    assert overlaps[0] > 0, "steps should be planned while selections are in flight"
    assert engine.block_manager.num_free_blocks == num_kv_blocks and not engine.scheduler.selecting
    if num_kv_blocks == 20:
        assert engine.stats.preemptions > 0, "the small cache should preempt"


def test_beam_searches_split_into_two_halves_whose_steps_alternate(hf_model):
    """With searches running, an overlapped decode step takes at most half the running beams
    (whole searches; the first may be larger), so the host applies one half's selection while
    the GPU runs the other half's step. The beams found are the synchronous engine's."""
    rng = random.Random(3)
    requests = [([rng.randrange(VOCAB) for _ in range(rng.randrange(10, 40))],
                 SamplingParams(max_tokens=12, beam_width=4)) for _ in range(12)]

    def engine_of(mode: str) -> LLMEngine:
        config = EngineConfig(device="cpu", num_kv_blocks=256, block_size=16, max_num_seqs=64,
                              max_num_batched_tokens=64, async_scheduling=mode)  # prompts end in several steps
        return LLMEngine.from_hf_model(hf_model, config)

    expected = run_searches(engine_of("off"), requests)
    engine = engine_of("on")
    decode_steps = []  # (beams in the step, beams running)
    prepare = engine.runner.prepare

    def spy(batch, pending=None):
        if batch.phase == "decode":
            decode_steps.append((len(batch.scheduled), len(engine.scheduler.running)))
        return prepare(batch, pending)

    engine.runner.prepare = spy
    assert same_results(run_searches(engine, requests), expected)
    assert all(beams <= max(4, (running + 1) // 2) for beams, running in decode_steps), decode_steps
    assert sum(beams > 4 for beams, _ in decode_steps) >= 10, "steps of several searches each"


def test_reads_and_aborts_between_steps_while_a_selection_is_in_flight(hf_model):
    """abort(), request() and block_pool_snapshot() between steps read the step in flight first:
    a search aborted then stops whole, and the others find the synchronous engine's beams."""
    requests = search_requests(12, seed=1)
    victim = next(i for i, (_, params) in enumerate(requests) if params.beam_width > 1)
    expected = run_searches(cpu_engine(hf_model, "off"), requests)
    seen = []

    def between_steps(engine, ids, steps):
        if engine._in_flight is not None and engine._in_flight.searches is not None:
            seen.append(steps)
            engine.block_pool_snapshot()
            assert not engine.scheduler.selecting and engine._in_flight is None  # read first
            if len(seen) == 2:
                engine.abort(ids[victim])

    got = run_searches(cpu_engine(hf_model, "on"), requests, between_steps)
    assert len(seen) >= 2, "selections should have been in flight between steps"
    assert got[victim] is None and expected[victim] is not None
    assert same_results(got[:victim] + got[victim + 1:], expected[:victim] + expected[victim + 1:])


def test_an_observer_added_mid_run_sees_every_step_whole(hf_model):
    """add_observer() reads the step in flight first: the observer's first step is whole, and its
    outputs reach the caller through the next step() call."""
    requests = [([50 + i, 51, 52], SamplingParams(temperature=0, max_tokens=20)) for i in range(4)]
    expected, _ = run_all(cpu_engine(hf_model, "off"), requests)
    engine = cpu_engine(hf_model, "on")
    ids = [engine.add_request(prompt, params) for prompt, params in requests]
    streamed = {i: [] for i in ids}
    for _ in range(5):
        for output in engine.step():
            streamed[output.request_id].append(output.token_id)

    class Checking(Observer):
        def on_schedule(self, batch) -> None:
            for item in batch.scheduled:
                assert all(t >= 0 for t in item.token_ids)

    engine.add_observer(Checking())
    assert engine._in_flight is None
    while engine.has_unfinished():
        for output in engine.step():
            streamed[output.request_id].append(output.token_id)
    assert [tuple(streamed[i]) for i in ids] == [tokens for tokens, _ in expected]


def test_async_scheduling_setting(request):
    if request.config.getoption("--async-scheduling") == "off":
        pytest.skip("--async-scheduling off overrides what auto means")
    assert EngineConfig().resolved_async_scheduling(torch.device("cuda")) is True
    assert EngineConfig().resolved_async_scheduling(torch.device("cpu")) is False
    assert EngineConfig(async_scheduling="on").resolved_async_scheduling(torch.device("cpu")) is True
    assert EngineConfig(async_scheduling="off").resolved_async_scheduling(torch.device("cuda")) is False


def test_finished_rows_leave_no_state(hf_model):
    """A sequence that stops on a token is finished once, frees its blocks once, and its extra row
    of the next step leaves its recorded state as the synchronous engine leaves it."""
    requests = [([60, 61, 62, 63], SamplingParams(temperature=0, max_tokens=30, stop_token_ids=(t,))) for t in range(0, 256, 9)]
    sync = cpu_engine(hf_model, "off")
    run_all(sync, requests)
    engine = cpu_engine(hf_model, "on")
    run_all(engine, requests)
    for seq_a, seq_b in zip(sync.sequences.values(), engine.sequences.values()):
        assert seq_b.status is SequenceStatus.FINISHED
        assert (seq_a.num_computed_tokens, seq_a.token_ids, seq_a.block_table) == \
               (seq_b.num_computed_tokens, seq_b.token_ids, seq_b.block_table)


# -- on the GPU -------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_same_tokens_with_and_without_overlap(hf_model):
    """64 requests through bf16 CUDA graphs with Triton attention: the same greedy and seeded
    tokens with async scheduling on and off (requests stop by length, so both runs make the same
    batches, and bf16 rounding cannot differ between them)."""
    rng = random.Random(5)
    requests = [([rng.randrange(VOCAB) for _ in range(rng.randrange(1, 120))],
                 SamplingParams(temperature=0.0 if i % 4 else 0.7, seed=i, max_tokens=rng.randrange(1, 60)))
                for i in range(64)]
    expected, _ = run_all(cuda_bf16_engine(hf_model, eager=False, async_scheduling="off"), requests)
    overlapped = cuda_bf16_engine(hf_model, eager=False, async_scheduling="on")
    overlaps = count_overlapped(overlapped)
    got, streamed = run_all(overlapped, requests)
    assert got == expected
    assert overlaps[0] > 0
    assert [tuple(tokens) for tokens in streamed.values()] == [tokens for tokens, _ in got]
    assert overlapped.block_manager.num_free_blocks == 64


@pytest.mark.parametrize("seed", range(4))
def test_random_aborts_and_forks_while_searches_overlap_leave_no_block_held(hf_model, seed):
    """Searches and requests under random aborts and forks between overlapped steps, caches of
    several sizes (preempting or not): nothing fails, and every block is free at the end."""
    rng = random.Random(seed)
    num_kv_blocks = rng.choice([20, 32, 64])
    config = EngineConfig(device="cpu", num_kv_blocks=num_kv_blocks, block_size=16, max_num_seqs=rng.choice([8, 16]),
                          max_num_batched_tokens=rng.choice([32, 96]), async_scheduling="on")
    engine = LLMEngine.from_hf_model(hf_model, config)
    ids = [engine.add_request(prompt, params) for prompt, params in search_requests(20, seed=seed)]
    while engine.has_unfinished():
        engine.step()
        live = [i for i in ids if i in engine.sequences and not engine.sequences[i].is_finished]
        if live and rng.random() < 0.1:
            engine.abort(rng.choice(live))
        elif live and rng.random() < 0.1:
            parent = engine.sequences[rng.choice(live)]
            if parent.num_tokens > 1:
                ids.append(engine.fork(parent.seq_id, parent.num_tokens - 1, [rng.randrange(VOCAB)]))
    assert engine.block_manager.num_free_blocks == num_kv_blocks and not engine.scheduler.selecting
