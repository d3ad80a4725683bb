"""Beam search (SamplingParams(beam_width=k)): k beams on shared KV blocks, Hugging Face's rules.

The meaning is fixed against transformers: the beams equal generate(num_beams=k, do_sample=False)
with the same length penalty and early stopping, best first, scores included, on the embedded
model. The memory side is held to the block manager's invariants under prefix caching on and off,
preemption (a tiny pool), chunked prefill, few seats and aborts: every block free at the end, a
shared block never written, the beams of a search always in the same step.
"""

from __future__ import annotations

import pytest
import torch
from conftest import cuda_bf16_engine, cuda_fp32_engine, make_hf_model
from test_fork import PROMPT, all_free, check_pool, make_engine, run

from minillama import EngineConfig, InvalidRequestError, LLMEngine, Observer, SamplingParams
from minillama.engine.llm import LLM

EOS = 2  # the embedded model's <|im_end|>


@pytest.fixture(scope="module")
def hf_model():
    return make_hf_model("gqa-tied-llama3")


def hf_beams(hf, prompt: list[int], k: int, max_tokens: int, length_penalty: float = 1.0,
             early_stopping: bool | str = False, eos: int | None = None) -> tuple[list[list[int]], list[float]]:
    """transformers' k beams (each cut after its stop token) and their scores, best first."""
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_tokens, do_sample=False, num_beams=k, num_return_sequences=k,
            length_penalty=length_penalty, early_stopping=early_stopping, eos_token_id=eos, pad_token_id=0,
            output_scores=True, return_dict_in_generate=True,
        )
    beams = []
    for row in out.sequences[:, len(prompt):].tolist():
        beams.append(row[: row.index(eos) + 1] if eos in row else row)
    return beams, out.sequences_scores.tolist()


def run_search(engine: LLMEngine, prompt, params: SamplingParams) -> tuple[list[list[int]], list[float]]:
    """The search's results, best first: each beam's output tokens, and their scores."""
    request_id = engine.add_request(prompt, params)
    run(engine, check=lambda: check_pool(engine))
    results = engine.beams(request_id)
    assert len(results) == params.beam_width
    infos = [engine.request(i) for i in results]
    return [list(info.output_token_ids) for info in infos], [info.beam_score for info in infos]


def assert_same(got: list[list[int]], scores: list[float], expected: tuple[list[list[int]], list[float]]) -> None:
    assert got == expected[0] and scores == pytest.approx(expected[1], abs=1e-5)


def beam(k: int, max_tokens: int = 8, **params) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, beam_width=k, **params)


# -- what a beam search means -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(embedded_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32).eval()
    engine = LLMEngine.from_pretrained(embedded_dir, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=128,
                                                                  block_size=8))
    return hf, engine


@pytest.mark.slow
@pytest.mark.parametrize("question, k, length_penalty, early_stopping", [
    ("What is the capital of France?", 2, 1.0, False),
    ("What is the capital of France?", 4, 0.5, True),
    ("What is 2 + 2?", 3, 2.0, False),
    ("Say hello in Spanish.", 4, -0.5, "never"),
])
def test_beams_equal_hugging_face_on_the_embedded_model(embedded, question, k, length_penalty, early_stopping):
    hf, engine = embedded
    prompt = engine.encode_prompt(question, chat=True)
    params = beam(k, 10, length_penalty=length_penalty, early_stopping=early_stopping)
    expected, scores = hf_beams(hf, prompt, k, 10, length_penalty, early_stopping, eos=EOS)
    got, got_scores = run_search(engine, prompt, params)
    assert got[0] == expected[0]  # the best beam
    assert got == expected and got_scores == pytest.approx(scores, abs=1e-4)
    assert all_free(engine)


@pytest.mark.parametrize("k, length_penalty, early_stopping, stop", [
    (2, 1.0, False, 28), (3, 0.0, True, 255), (4, 0.5, "never", 28), (4, 2.0, False, 57),
])
def test_beams_equal_hugging_face_with_a_stop_token(hf_model, k, length_penalty, early_stopping, stop):
    """A random model with a stop token: hypotheses finish early (all but with length_penalty
    2.0, which favours the long ones) and compete with the running beams."""
    params = beam(k, 10, length_penalty=length_penalty, early_stopping=early_stopping, stop_token_ids=(stop,))
    expected, scores = hf_beams(hf_model, PROMPT, k, 10, length_penalty, early_stopping, eos=stop)
    got, got_scores = run_search(make_engine(hf_model), PROMPT, params)
    assert got == expected and got_scores == pytest.approx(scores, abs=1e-5)
    assert any(b[-1] == stop for b in got) == (length_penalty < 2)


def test_a_beam_stops_at_max_model_len(hf_model):
    engine = make_engine(hf_model, max_model_len=16)  # 11 prompt tokens: 5 new ones at most
    got, scores = run_search(engine, PROMPT, beam(3, 8))
    assert_same(got, scores, hf_beams(hf_model, PROMPT, 3, 5))
    assert all(len(b) == 5 for b in got)


# -- blocks: shared, never written, all back at the end ------------------------------------------------


class Events(Observer):
    """Forks, prunes, and every step's result."""

    def __init__(self):
        self.forks, self.prunes, self.results = [], [], []

    def on_fork(self, event):
        self.forks.append(event)

    def on_prune(self, event):
        self.prunes.append(event)

    def on_step_end(self, result):
        self.results.append(result)


def test_beams_share_blocks_fork_and_prune_and_each_output_names_its_parent_row(hf_model):
    engine = make_engine(hf_model)
    events = Events()
    engine.add_observer(events)
    request_id = engine.add_request(PROMPT, beam(3, 10))
    engine.step()  # the prompt's prefill, then its first selection: 3 beams on its blocks
    beams = engine.beams(request_id)
    assert len(beams) == 3 and beams[0] == request_id
    first = engine.sequences[request_id].block_table
    for fork in events.forks:
        assert (fork.cause, fork.parent_id, fork.position, fork.prefix) == ("beam", request_id, 11, "shared")
        assert fork.shared_block_ids == first[:2] and fork.copy.src_block == first[2] and fork.copy.num_slots == 3
    run(engine, check=lambda: check_pool(engine))
    assert events.prunes and all(p.group_id == request_id for p in events.prunes)
    assert {engine.request(p.seq_id).finish_reason for p in events.prunes} == {"pruned"}
    for result in events.results:
        plan = result.batch.sampling
        for out, row in zip(result.outputs, result.output_rows()):
            info = engine.request(out.request_id)
            parent = plan[row].seq_id
            # A beam's token came from its parent's row: its own (in place), or the one it forked from.
            assert parent == out.request_id or (info.parent_id == parent and info.beam_of == request_id)
    assert sorted(engine.request(i).finish_reason for i in engine.beams(request_id)) == ["length"] * 3
    assert all_free(engine)


class SharedBlocksUnchanged(Observer):
    """After every step: a block shared by several beams holds what it held at the step before,
    for every beam that still holds it at the same place."""

    def __init__(self, engine: LLMEngine):
        self.engine, self.before, self.checked = engine, {}, 0

    def on_step_end(self, result):
        engine, now = self.engine, {}
        holders = engine.scheduler.holders
        counts = {}
        for seq in holders:
            for block in seq.block_table:
                counts[block] = counts.get(block, 0) + 1
        for seq in holders:
            for index, block in enumerate(seq.block_table):
                kv = engine.kv_cache[:, :, block].clone()
                old = self.before.get((seq.seq_id, index))
                if old is not None and old[0] == block:
                    assert torch.equal(old[1], kv), f"shared block {block} changed"
                    self.checked += 1
                if counts[block] > 1:
                    now[(seq.seq_id, index)] = (block, kv)
        self.before = now


def test_a_shared_block_is_never_written(hf_model):
    engine = make_engine(hf_model)
    watch = SharedBlocksUnchanged(engine)
    engine.add_observer(watch)
    run_search(engine, PROMPT, beam(4, 12))
    assert watch.checked > 10


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("pool, other", [
    (64, PROMPT[:5]),  # room for all
    (16, PROMPT * 3),  # the beams (up to 5 blocks of 4 each) and the other request preempt each other
    (15, PROMPT * 4),  # besides, the first selection finds 1 free block for 2 forks: the search waits whole
])
def test_no_leak_and_the_same_beams_under_preemption(hf_model, prefix_caching, pool, other):
    engine = make_engine(hf_model, prefix_caching, pool)
    events = Events()
    engine.add_observer(events)
    other_id = engine.add_request(other, SamplingParams(temperature=0, max_tokens=12 if pool > 15 else 4))
    got, scores = run_search(engine, PROMPT, beam(3, 10))
    assert engine.request(other_id).finish_reason == "length"
    assert (engine.stats.preemptions > 0) == (pool < 64)
    running_forks = [f for f in events.forks if engine.request(f.child_id).beam_score is None]  # not finished at birth
    assert {f.prefix for f in running_forks} == ({"shared", "queued"} if pool == 15 else {"shared"})
    assert_same(got, scores, hf_beams(hf_model, PROMPT, 3, 10))
    # In step: a step samples none of the search's beams, or its first beam alone, or all 3.
    search = engine.request(events.forks[0].child_id).beam_of
    sampled = [[x.seq_id for x in r.batch.sampling if engine.request(x.seq_id).beam_of == search] for r in events.results]
    assert {len(ids) for ids in sampled} == {0, 1, 3} and sampled.count([search]) == 1
    assert all_free(engine)


@pytest.mark.parametrize("config", [
    {"max_num_batched_tokens": 4},  # the prompt prefills in 3 chunks; the beams start after the last
    {"max_num_seqs": 3},  # seats for the 3 beams are held from the prompt's admission
])
def test_beams_under_chunked_prefill_and_few_seats(hf_model, config):
    engine = make_engine(hf_model, **config)
    first = engine.add_request(PROMPT[:6], SamplingParams(temperature=0, max_tokens=3))
    got, scores = run_search(engine, PROMPT, beam(3, 8))
    late = engine.add_request(PROMPT[:7], SamplingParams(temperature=0, max_tokens=3))
    run(engine, check=lambda: check_pool(engine))
    assert_same(got, scores, hf_beams(hf_model, PROMPT, 3, 8))
    assert len(engine.request(first).output_token_ids) == len(engine.request(late).output_token_ids) == 3
    assert all_free(engine)


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("who", ["search", "beam", "before-prefill"])
def test_abort_stops_the_whole_search(hf_model, prefix_caching, who):
    engine = make_engine(hf_model, prefix_caching, num_kv_blocks=24)
    request_id = engine.add_request(PROMPT, beam(3, 10))
    other = engine.add_request(PROMPT[:5], SamplingParams(temperature=0, max_tokens=12))
    if who != "before-prefill":
        for _ in range(4):
            engine.step()
    live = engine.beams(request_id)
    engine.abort(live[-1] if who == "beam" else request_id)
    run(engine, check=lambda: check_pool(engine))
    assert len(engine.request(other).output_token_ids) == 12
    if who == "beam":  # the search's own id was not forgotten: its beams say aborted
        assert {engine.request(i).finish_reason for i in live if i != live[-1]} == {"abort"}
    else:
        assert request_id not in engine.sequences and not any(i in engine.sequences for i in live)
    assert all_free(engine)


def test_generate_returns_the_beams_best_first_and_forgets_them(hf_model):
    llm = LLM.__new__(LLM)  # the LLM front end over a tiny engine, without loading a model
    llm.engine = make_engine(hf_model)
    completions = llm.generate([PROMPT, PROMPT[:5]], [beam(3, 8), SamplingParams(temperature=0, max_tokens=4)])
    beams, scores = hf_beams(hf_model, PROMPT, 3, 8)
    assert [c.token_ids for c in completions[:3]] == beams
    assert [c.score for c in completions[:3]] == pytest.approx(scores)
    assert [c.sample_index for c in completions] == [0, 1, 2, 0] and completions[3].score is None
    assert [c.prompt_token_ids for c in completions] == [PROMPT] * 3 + [PROMPT[:5]]
    assert not llm.engine.sequences and all_free(llm.engine)


def test_a_fork_of_a_beam_runs_a_search_of_its_own(hf_model):
    engine = make_engine(hf_model)
    request_id = engine.add_request(PROMPT, beam(3, 8))
    for _ in range(4):  # the prefill, then 3 decodes: each beam has 4 tokens
        engine.step()
    parent = engine.beams(request_id)[1]
    prefix = list(engine.sequences[parent].token_ids[:13])
    child = engine.fork(parent, 13, [200])  # the beam's params: a search of width 3 from there
    greedy = engine.fork(parent, 13, [200], SamplingParams(temperature=0, max_tokens=4))
    run(engine, check=lambda: check_pool(engine))
    assert engine.request(child).beam_of == child and engine.request(greedy).beam_of is None
    results = engine.beams(child)
    got = [list(engine.request(i).output_token_ids) for i in results]
    assert_same(got, [engine.request(i).beam_score for i in results], hf_beams(hf_model, prefix + [200], 3, 8))
    assert all_free(engine)


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, message", [
    (dict(beam_width=0), "beam_width"), (dict(beam_width=65), "beam_width"), (dict(beam_width=2.0), "beam_width"),
    (dict(beam_width=True), "beam_width"), (dict(beam_width="2"), "beam_width"),
    (dict(beam_width=2, n=2), "do not combine"),
    (dict(length_penalty=float("nan")), "length_penalty"), (dict(length_penalty=float("inf")), "length_penalty"),
    (dict(length_penalty="1"), "length_penalty"), (dict(length_penalty=None), "length_penalty"),
    (dict(early_stopping="always"), "early_stopping"), (dict(early_stopping=1), "early_stopping"),
    (dict(early_stopping=None), "early_stopping"),
    (dict(beam_width=5, max_tokens=8), "max_num_seqs"),  # the engine below has 4 seats
    (dict(beam_width=4, max_tokens=60), "each of 4 beams"),  # 4 x 18 blocks of 4 > 64
])
def test_bad_beam_parameters_are_refused_changing_nothing(hf_model, params, message):
    engine = make_engine(hf_model, max_num_seqs=4)
    with pytest.raises(InvalidRequestError, match=message):
        engine.add_request(PROMPT, SamplingParams(**params))
    assert not engine.has_unfinished() and not engine.sequences
    assert engine.add_request(PROMPT, beam(4)) == 0  # no request id was taken


@pytest.mark.parametrize("early_stopping, error", [
    (True, None), (False, None), ("never", None),
    ("always", "expected a bool, got str or expected one of 'never'"), (1, "expected a bool, got int"),
])
def test_a_trace_keeps_the_beam_parameters(early_stopping, error):
    """SequenceRecord.params holds them as plain values; loading takes what SamplingParams does."""
    from inspector.trace.codec import decode
    from inspector.trace.model import SamplingRecord, TraceError

    record = {**vars(SamplingParams(beam_width=3, length_penalty=0.5)), "stop_token_ids": [],
              "early_stopping": early_stopping}
    if error is None:
        assert decode(SamplingRecord, record, {}, "params") == record
    else:
        with pytest.raises(TraceError, match=error):
            decode(SamplingRecord, record, {}, "params")


# -- on a CUDA GPU ---------------------------------------------------------------------------------------


CUDA_PROMPT = [(11 * i + 5) % 256 for i in range(40)]  # its last block partly filled: each beam's fork copies it


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_beams_on_cuda_equal_transformers():
    """4 beams of a 40-token prompt on the GPU in float32 equal transformers' on the same GPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    hf = make_hf_model("gqa-tied-llama3").cuda()
    got, scores = run_search(cuda_fp32_engine(hf), CUDA_PROMPT, beam(4, 12, stop_token_ids=(57,)))
    with torch.no_grad():
        out = hf.generate(torch.tensor([CUDA_PROMPT], device="cuda"), max_new_tokens=12, do_sample=False, num_beams=4,
                          num_return_sequences=4, eos_token_id=57, pad_token_id=0, output_scores=True,
                          return_dict_in_generate=True)
    expected = [row[: row.index(57) + 1] if 57 in row else row for row in out.sequences[:, 40:].tolist()]
    assert got == expected and scores == pytest.approx(out.sequences_scores.tolist(), abs=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_beams_through_cuda_graphs_equal_eager():
    """The same search decoding through CUDA graphs (bf16, Triton) keeps the eager engine's beams
    with its scores: forks, prunes and copies on write between graph replays change nothing."""
    hf = make_hf_model("gqa-tied-llama3").cuda()
    eager, graphed = (run_search(cuda_bf16_engine(hf, eager), CUDA_PROMPT, beam(4, 12, stop_token_ids=(57,)))
                      for eager in (True, False))
    assert_same(*graphed, eager)
