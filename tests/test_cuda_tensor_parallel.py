"""Tensor parallelism on GPUs (NCCL, rank r on cuda:r, a CUDA graph per rank with the layers'
all-reduces inside): a split engine must compute what one GPU computes (minillama/parallel/).

fp32 logits agree to float rounding (the ranks' partial sums add in another order); bf16 rounds
each rank's partial sums before the all-reduce adds them, so a greedy run may part from one
GPU's only where that GPU's top two logits were within bf16's rounding (checked)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import draw_biases
from test_hf_parity import LogitsRecorder

from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.errors import ConfigError
from minillama.parallel.workers import TensorParallelError

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs or more")

# Heads (head_dim 64, as the Triton kernels take), KV heads, features and vocabulary divide by 2, 4 and 8.
SHAPE = dict(vocab_size=1024, hidden_size=1024, intermediate_size=2048, num_hidden_layers=2,
             num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=2048)
SIZES = [n for n in (2, 4, 8) if n <= torch.cuda.device_count()]


def prompts(n: int = 12) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 300, (n,), generator=generator).tolist()
    return [torch.randint(0, SHAPE["vocab_size"], (k,), generator=generator).tolist() for k in lengths]


def save_model(path: Path, **fields) -> Path:
    """A random Llama of SHAPE with `fields` over it (its biases, if any, drawn) saved under `path`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPE, tie_word_embeddings=False, initializer_range=0.05,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None, **fields)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    draw_biases(model, std=0.1)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("cuda_tp_model"))


@pytest.fixture(scope="module")
def biased_dir(tmp_path_factory) -> Path:
    """attention_bias and mlp_bias: q/k/v and gate/up biases split with their rows, o_proj's and
    down_proj's added by rank 0 alone."""
    return save_model(tmp_path_factory.mktemp("cuda_tp_biased"), attention_bias=True, mlp_bias=True)


def run(model_dir: Path, tp: int, observer=None, max_tokens: int = 32, **config):
    """Every request's output tokens, and the engine's decode graph sizes (rank 0's)."""
    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(device="cuda", tensor_parallel_size=tp, **config))
    try:
        if observer is not None:
            engine.add_observer(observer)
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        ids = [engine.add_request(p, params) for p in prompts()]
        while engine.has_unfinished():
            engine.step()
        return [engine.sequences[i].output_token_ids for i in ids], sorted(engine.runner.graphs)
    finally:
        engine.close()


def assert_same_tokens_but_for_near_ties(single: list[list[int]], split: list[list[int]],
                                         logits: dict[int, list[torch.Tensor]], tie: float) -> int:
    """Each request's tokens equal one GPU's, up to the first step where they part, which must be
    one where one GPU's top two logits were within `tie`. Returns how many parted."""
    parted = 0
    for seq_id, (a, b) in enumerate(zip(single, split)):
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if first is None:
            assert len(a) == len(b)
            continue
        top2 = logits[seq_id][first].float().topk(2).values
        assert top2[0] - top2[1] < tie, f"request {seq_id} parted at token {first} with a margin of {top2[0] - top2[1]}"
        parted += 1
    return parted


@needs_two
@pytest.mark.parametrize("biased", [False, True], ids=["no-bias", "biases"])
@pytest.mark.parametrize("tp", SIZES)
def test_fp32_split_engine_computes_what_one_gpu_computes(model_dir, biased_dir, tp, biased):
    model_dir = biased_dir if biased else model_dir
    recorder, split_recorder = LogitsRecorder(), LogitsRecorder()
    single, _ = run(model_dir, 1, recorder, dtype="float32")
    split, _ = run(model_dir, tp, split_recorder, dtype="float32")
    assert split == single
    for seq_id, rows in recorder.logits.items():
        for a, b in zip(rows, split_recorder.logits[seq_id], strict=True):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    assert not dist.is_initialized()


@needs_two
@pytest.mark.parametrize("biased", [False, True], ids=["no-bias", "biases"])
@pytest.mark.parametrize("tp", SIZES)
def test_bf16_split_engine_with_cuda_graphs_and_async_scheduling(model_dir, biased_dir, tp, biased):
    """The defaults on a GPU (bf16, CUDA graphs, async scheduling, Triton attention), split: the
    ranks replay their decode graphs together, the all-reduces inside them."""
    model_dir = biased_dir if biased else model_dir
    recorder = LogitsRecorder()
    single, _ = run(model_dir, 1, recorder)  # an observer: the same kernels, stepped in order
    split, graphs = run(model_dir, tp)
    assert graphs, "rank 0 captured no decode graph"
    parted = assert_same_tokens_but_for_near_ties(single, split, recorder.logits, tie=0.25)
    assert parted <= len(single) // 4


@needs_two
def test_the_recorder_sees_every_rank_s_heads_and_times_the_all_reduces(model_dir):
    """Attention captured for two requests (their q/k gathered from every rank), the decode
    queries copied inside every rank's graphs (captured again on every rank, in step), and each
    step's collective time measured with CUDA events."""
    from inspector import CapturePolicy, DebugSession

    traces = []
    for tp in (1, 2):
        engine = LLMEngine.from_pretrained(model_dir, EngineConfig(device="cuda", dtype="float32", tensor_parallel_size=tp))
        try:
            session = DebugSession(engine, CapturePolicy(attention_requests=(0, 2), logit_lens=True))
            for prompt in prompts(4):
                session.add(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
            assert session.run().finished
            traces.append(session.trace)
        finally:
            engine.close()
    single, split = traces
    assert sorted(split.attention) == sorted(single.attention) == [0, 2]
    for seq_id, store in single.attention.items():
        torch.testing.assert_close(split.attention[seq_id].q, store.q, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(split.attention[seq_id].k, store.k, atol=1e-4, rtol=1e-4)
    assert [[t.token_id for t in s.tokens] for s in split.steps] == [[t.token_id for t in s.tokens] for s in single.steps]
    assert all(s.timings.collective_ms > 0 for s in split.steps)
    assert split.model.tensor_parallel_size == 2


def test_more_ranks_than_gpus_is_refused(model_dir):
    too_many = torch.cuda.device_count() + 1
    if SHAPE["num_key_value_heads"] % too_many:
        too_many = 16  # divides every size: only the GPUs are too few
    with pytest.raises(ConfigError, match=f"needs {too_many} GPUs, one a rank; this machine has"):
        LLMEngine.from_pretrained(model_dir, EngineConfig(device="cuda", tensor_parallel_size=too_many))
    assert not dist.is_initialized()


@needs_two
def test_a_killed_gpu_worker_is_reported(model_dir):
    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(device="cuda", tensor_parallel_size=2))
    try:
        engine.add_request(prompts(1)[0], SamplingParams(temperature=0, max_tokens=64, ignore_eos=True))
        engine.step()
        torch.cuda.synchronize()  # the launched step has joined the ranks (a rank killed mid-step: DESIGN.md)
        worker = engine.runner.group.workers[0]
        worker.kill()
        worker.join()
        with pytest.raises(TensorParallelError, match="rank 1 exited with code -9"):
            while engine.has_unfinished():
                engine.step()
    finally:
        engine.close()
    assert not dist.is_initialized()
