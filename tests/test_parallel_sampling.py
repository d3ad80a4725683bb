"""SamplingParams(n=k): k samples of one prompt from one prefill, sharing its KV blocks.

The meaning is fixed against separate requests: sample i of a seeded request draws the tokens a
request of its own with seed + i draws. The memory side: the prompt is computed once, the samples
share its full blocks by reference count, their first steps are one-token decodes, and every
block is free when all are done (prefix caching on and off, preemption, aborts).
"""

from __future__ import annotations

import pytest
import torch
from conftest import cuda_bf16_engine, cuda_fp32_engine, make_hf_model
from test_fork import PROMPT, Plans, all_free, check_pool, make_engine, run

from minillama import InvalidRequestError, SamplingParams
from minillama.engine.llm import LLM
from minillama.errors import UnknownRequestError

SEED = 1234
# Temperature 1.0 on a random model: the samples differ, so sharing a generator would show.
SAMPLED = SamplingParams(temperature=1.0, max_tokens=6, seed=SEED, ignore_eos=True)


@pytest.fixture(scope="module")
def hf_model():
    return make_hf_model("gqa-tied-llama3")


def separate_outputs(hf_model, n: int, params: SamplingParams = SAMPLED) -> list[list[int]]:
    """n requests of PROMPT with seeds seed + i, run one at a time so that each prompt's prefill
    has the batch shape of the n-sample request's single prefill."""
    outputs = []
    for i in range(n):
        engine = make_engine(hf_model)
        request_id = engine.add_request(PROMPT, SamplingParams(**{**vars(params), "n": 1, "seed": params.seed + i}))
        outputs.append(run(engine)[request_id])
    return outputs


def test_n_seeded_samples_equal_separate_requests_with_seed_plus_i(hf_model):
    engine = make_engine(hf_model)
    leader = engine.add_request(PROMPT, SamplingParams(**{**vars(SAMPLED), "n": 4}))
    assert engine.samples(leader) == (leader,)  # the others exist once the prompt has sampled
    outputs = run(engine, check=lambda: check_pool(engine))
    ids = engine.samples(leader)
    assert len(ids) == 4 and ids[0] == leader
    got = [outputs[i] for i in ids]
    # On CPU the samples' decodes run in a batch of 4 and the separate requests' alone; the
    # logits may then differ in their last bits, but a draw from a temperature-1 distribution
    # only changes on an exact near tie, which this fixed prompt and seed do not hit.
    assert got == separate_outputs(hf_model, 4)
    assert len({tuple(t) for t in got}) > 1, "the samples should differ at temperature 1"
    for index, request_id in enumerate(ids):
        info = engine.request(request_id)
        assert info.prompt_token_ids == tuple(PROMPT) and info.output_token_ids == tuple(got[index])
        assert info.sample_index == index
        assert info.sample_of == (None if index == 0 else leader)
    assert all_free(engine)


def test_the_prompt_is_computed_once_and_its_blocks_shared(hf_model):
    engine = make_engine(hf_model)
    plans = Plans()
    engine.add_observer(plans)
    leader = engine.add_request(PROMPT, SamplingParams(**{**vars(SAMPLED), "n": 3}))
    engine.step()  # the prefill; the samples appear holding the prompt's blocks
    samples = engine.samples(leader)[1:]
    leader_table = engine.sequences[leader].block_table
    snapshot = engine.block_pool_snapshot()
    shared = snapshot.block_ids[snapshot.ref_count > 1].tolist()
    assert shared == sorted(leader_table[:2]) and snapshot.ref_count.max() == 3
    assert sorted(snapshot.table_seq_ids.tolist()) == [leader, *samples]
    for sample in samples:
        table = engine.sequences[sample].block_table
        assert table[:2] == leader_table[:2]  # the two full prompt blocks, by reference
        assert table[2] != leader_table[2]  # the partly filled one, copied on write
    run(engine, check=lambda: check_pool(engine))
    prefills = [item for plan in plans.plans for item in plan.scheduled if item.start < len(PROMPT)]
    assert len(prefills) == 1 and prefills[0].seq_id == leader  # the prompt's tokens, once
    for sample in samples:
        first = plans.first_item(sample)
        assert (first.reason, first.start, first.num_tokens) == ("decode", len(PROMPT), 1)
    assert all_free(engine)


@pytest.mark.parametrize("prefix_caching", [True, False])
# 8: the samples preempt each other; 7: besides, the last sample finds no block for its copy of
# the prompt's last block and queues to recompute its prompt.
@pytest.mark.parametrize("num_kv_blocks", [64, 8, 7])
def test_no_leak_with_or_without_prefix_caching_and_under_preemption(hf_model, prefix_caching, num_kv_blocks):
    engine = make_engine(hf_model, prefix_caching, num_kv_blocks)
    params = SamplingParams(**{**vars(SAMPLED), "n": 4, "max_tokens": 12})
    leader = engine.add_request(PROMPT, params)
    other = engine.add_request(PROMPT[:5], SamplingParams(temperature=0, max_tokens=12))
    outputs = run(engine, check=lambda: check_pool(engine))
    assert all(len(outputs[i]) == 12 for i in (*engine.samples(leader), other))
    assert (engine.stats.preemptions > 0) == (num_kv_blocks < 64)
    last = engine.request(engine.samples(leader)[-1])
    assert last.fork_prefix == ("shared" if num_kv_blocks > 7 else "prefix-cache" if prefix_caching else "recomputed")
    if num_kv_blocks == 64:
        assert [outputs[i] for i in engine.samples(leader)] == separate_outputs(hf_model, 4, params)
    assert all_free(engine)


@pytest.mark.parametrize("config", [
    {"max_num_batched_tokens": 4},  # the prompt prefills in 3 chunks; the samples start after the last
    {"max_num_seqs": 2},  # samples without a seat wait with the forks, then take a one-token first step
])
def test_samples_under_chunked_prefill_and_few_seats(hf_model, config):
    engine = make_engine(hf_model, **config)
    leader = engine.add_request(PROMPT, SamplingParams(**{**vars(SAMPLED), "n": 4}))
    outputs = run(engine, check=lambda: check_pool(engine))
    assert [outputs[i] for i in engine.samples(leader)] == separate_outputs(hf_model, 4)
    assert all_free(engine)


@pytest.mark.parametrize("when", ["before-prefill", "after-prefill", "one-sample"])
def test_aborts_leak_nothing(hf_model, when):
    engine = make_engine(hf_model)
    leader = engine.add_request(PROMPT, SamplingParams(**{**vars(SAMPLED), "n": 3}))
    if when == "before-prefill":
        engine.abort(leader)
        assert not engine.has_unfinished()
        with pytest.raises(UnknownRequestError):  # aborted before its prefill: no sample was made, none is listed
            engine.samples(leader)
    else:
        engine.step()
        samples = engine.samples(leader)
        engine.abort(leader if when == "after-prefill" else samples[1])
        run(engine, check=lambda: check_pool(engine))
    assert all_free(engine)


def test_a_sample_can_finish_on_its_first_token(hf_model):
    engine = make_engine(hf_model)
    leader = engine.add_request(PROMPT, SamplingParams(**{**vars(SAMPLED), "n": 3, "max_tokens": 1}))
    outputs = engine.step()
    assert [o.request_id for o in outputs] == list(engine.samples(leader))
    assert all(o.finished and o.finish_reason == "length" for o in outputs)
    assert not engine.has_unfinished() and all_free(engine)


def test_n_1_is_unchanged(hf_model):
    engine = make_engine(hf_model)
    request_id = engine.add_request(PROMPT, SAMPLED)
    assert run(engine)[request_id] == separate_outputs(hf_model, 1)[0]
    assert engine.samples(request_id) == (request_id,)
    info = engine.request(request_id)
    assert (info.sample_of, info.sample_index) == (None, 0)


@pytest.mark.parametrize("n", [0, -1, 65, 2.0, "2", True, None])
def test_a_bad_n_is_refused_changing_nothing(hf_model, n):
    engine = make_engine(hf_model)
    with pytest.raises(InvalidRequestError, match="n "):
        engine.add_request(PROMPT, SamplingParams(n=n))
    assert not engine.has_unfinished() and not engine.sequences


def test_seed_plus_n_must_stay_a_seed():
    with pytest.raises(InvalidRequestError, match="seed"):
        SamplingParams(seed=2**63 - 2, n=3).validate()
    SamplingParams(seed=2**63 - 3, n=3).validate()


def test_generate_yields_a_prompts_samples_consecutively(hf_model):
    llm = LLM.__new__(LLM)  # the LLM front end over a tiny engine, without loading a model
    llm.engine = make_engine(hf_model)
    params = [SamplingParams(**{**vars(SAMPLED), "n": 3}), SamplingParams(temperature=0, max_tokens=4)]
    completions = llm.generate([PROMPT, PROMPT[:5]], params)
    assert [c.sample_index for c in completions] == [0, 1, 2, 0]
    assert [c.prompt_token_ids for c in completions] == [PROMPT] * 3 + [PROMPT[:5]]
    assert [c.token_ids for c in completions[:3]] == separate_outputs(hf_model, 3)
    assert not llm.engine.sequences and all_free(llm.engine)


CUDA_PROMPT = [(11 * i + 5) % 256 for i in range(40)]  # its last block partly filled: copied on write per sample
CUDA_PARAMS = SamplingParams(temperature=1.0, max_tokens=12, seed=SEED, ignore_eos=True)


def four_samples(engine) -> list[list[int]]:
    """n = 4 seeded samples of CUDA_PROMPT, run to the end: each sample's output tokens."""
    leader = engine.add_request(CUDA_PROMPT, SamplingParams(**{**vars(CUDA_PARAMS), "n": 4}))
    outputs = run(engine, check=lambda: check_pool(engine))
    assert all_free(engine)
    return [outputs[request_id] for request_id in engine.samples(leader)]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_samples_on_cuda_equal_separate_requests():
    """On the GPU in float32, n = 4 seeded samples equal separate requests with seeds seed + i."""
    torch.backends.cuda.matmul.allow_tf32 = False
    hf = make_hf_model("gqa-tied-llama3").cuda()
    samples = four_samples(cuda_fp32_engine(hf))
    for i, sample in enumerate(samples):
        fresh = cuda_fp32_engine(hf)
        alone = fresh.add_request(CUDA_PROMPT, SamplingParams(**{**vars(CUDA_PARAMS), "seed": SEED + i}))
        assert sample == run(fresh)[alone], f"sample {i}"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_samples_through_cuda_graphs_equal_eager():
    """The four samples decoding through CUDA graphs (bf16, Triton) draw the eager engine's tokens."""
    hf = make_hf_model("gqa-tied-llama3").cuda()
    assert four_samples(cuda_bf16_engine(hf, eager=True)) == four_samples(cuda_bf16_engine(hf, eager=False))
