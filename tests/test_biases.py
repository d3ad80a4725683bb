"""A Llama with biases (config.json's attention_bias and mlp_bias: y = x @ W.T + b on q/k/v/o and
on gate/up/down) through the whole engine, against transformers' LlamaForCausalLM on the same
random weights: prefix-cache hits, preemption, chunked prefill, samples and beams, tensor
parallelism (a column-parallel bias split like its rows, a row-parallel one added once), and
checkpoints whose biases are wrong. Elsewhere: tests/test_model_shapes.py holds biased shapes on
every CPU attention backend and the recorder's attention; tests/test_cuda_engine.py the GPU paths
(Triton kernels, CUDA graphs) on conftest's "gqa-untied-biases". make_model draws the biases,
which transformers starts at zero (where an engine that dropped them would pass)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_beam_search import hf_beams
from test_hf_parity import greedy_outputs, hf_greedy, run_to_end
from test_model_shapes import make_model
from test_tensor_parallel import assert_same
from test_tensor_parallel import run as run_split

from minillama import EngineConfig, LLMEngine, ModelLoadError, SamplingParams

# name -> LlamaConfig fields over test_model_shapes.BASE: each bias alone, and both.
BIASES = {
    "attention-bias": dict(attention_bias=True),
    "mlp-bias": dict(mlp_bias=True),
    "both-biases": dict(attention_bias=True, mlp_bias=True),
}


@pytest.fixture(scope="module")
def biased_dir(tmp_path_factory):
    """name -> (directory, HF model read back from it) of BIASES[name], saved once per module."""
    from transformers import LlamaForCausalLM

    made: dict[str, tuple[Path, object]] = {}

    def get(name: str):
        if name not in made:
            path = tmp_path_factory.mktemp(name)
            make_model(**BIASES[name]).save_pretrained(path)
            made[name] = path, LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return made[name]

    return get


def random_prompts(lengths: tuple[int, ...], seed: int, prefix: int = 0) -> list[list[int]]:
    """Prompts of `lengths` random tokens (of BASE's 256), after a shared `prefix` of random tokens."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randint(0, 256, (prefix,), generator=generator).tolist()
    return [shared + torch.randint(0, 256, (n,), generator=generator).tolist() for n in lengths]


@pytest.mark.parametrize("name", list(BIASES))
def test_the_bias_tensors_are_loaded_where_the_checkpoint_names_them(biased_dir, name):
    """q/k/v_proj.bias stacked into qkv_proj.bias and gate/up_proj.bias into gate_up_proj.bias in
    the order of their weights; o_proj.bias and down_proj.bias as they are."""
    path, hf = biased_dir(name)
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=8))
    ours = dict(engine.runner.model.named_parameters())
    theirs = dict(hf.named_parameters())
    stacks = {"self_attn.qkv_proj": ("q_proj", "k_proj", "v_proj"), "mlp.gate_up_proj": ("gate_proj", "up_proj")}
    held = 0
    for layer in range(hf.config.num_hidden_layers):
        for stacked, parts in stacks.items():
            block = stacked.split(".")[0]
            names = [f"model.layers.{layer}.{block}.{part}.bias" for part in parts]
            if names[0] in theirs:
                assert torch.equal(ours[f"model.layers.{layer}.{stacked}.bias"], torch.cat([theirs[n] for n in names]))
                held += len(names)
        for single in ("self_attn.o_proj", "mlp.down_proj"):
            if f"model.layers.{layer}.{single}.bias" in theirs:
                assert torch.equal(ours[f"model.layers.{layer}.{single}.bias"], theirs[f"model.layers.{layer}.{single}.bias"])
                held += 1
    assert held == sum(name.endswith(".bias") for name in theirs) > 0  # every one of them, compared


@pytest.mark.parametrize("name", list(BIASES))
def test_greedy_tokens_equal_generate_under_prefix_hits_preemption_and_chunked_prefill(biased_dir, name):
    """Four prompts sharing a 13-token prefix, the first computed before the others arrive (their
    full blocks hit the prefix cache), in chunks of at most 8 tokens, in a pool too small for all
    four at full length (preemption, then recompute): every token is generate's."""
    path, hf = biased_dir(name)
    prompts = random_prompts((3, 9, 1, 6), seed=4, prefix=13)
    expected = [hf_greedy(hf, p, 12) for p in prompts]
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=16,
                                                          block_size=4, max_num_batched_tokens=8))
    first = engine.add_request(prompts[0], SamplingParams(temperature=0, max_tokens=12))
    while engine.sequences[first].num_computed_tokens < len(prompts[0]):
        engine.step()
    rest = greedy_outputs(engine, prompts[1:], 12)
    assert [engine.sequences[first].output_token_ids, *rest] == expected
    assert engine.stats.preemptions > 0 and engine.block_manager.num_hit_blocks > 0
    assert engine.stats.prefill_steps > len(prompts)  # some prompt was chunked


def test_beams_and_samples_equal_generate(biased_dir):
    """A beam search's beams and scores are generate(num_beams=3)'s; greedy samples of one
    prefill (n=3, sharing its blocks) are each generate's greedy tokens."""
    path, hf = biased_dir("both-biases")
    prompt = random_prompts((7,), seed=5)[0]
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32", num_kv_blocks=32, block_size=4))
    beams = engine.add_request(prompt, SamplingParams(beam_width=3, max_tokens=8))
    samples = engine.add_request(prompt, SamplingParams(n=3, temperature=0, max_tokens=8))
    run_to_end(engine)
    infos = [engine.request(i) for i in engine.beams(beams)]
    expected_beams, expected_scores = hf_beams(hf, prompt, 3, 8)
    assert [list(info.output_token_ids) for info in infos] == expected_beams
    assert [info.beam_score for info in infos] == pytest.approx(expected_scores, abs=1e-5)
    outputs = [list(engine.request(i).output_token_ids) for i in engine.samples(samples)]
    assert outputs == [hf_greedy(hf, prompt, 8)] * 3


@pytest.mark.parametrize("name", list(BIASES))
def test_a_split_over_two_ranks_computes_the_whole_models_logits(biased_dir, name):
    """Tensor parallelism over 2 CPU processes: q/k/v and gate/up biases split with their rows,
    o_proj's and down_proj's added by one rank (added on both, the sum would hold them twice).
    Logits of every step within fp32 rounding of the single process's, the same tokens, and
    those the single process's, which are transformers'."""
    path, hf = biased_dir(name)
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    requests = [(p, params) for p in random_prompts((5, 21, 2), seed=6)]
    single = run_split(path, 1, requests, device="cpu", block_size=4, max_num_batched_tokens=16)
    assert_same(single, run_split(path, 2, requests, device="cpu", block_size=4, max_num_batched_tokens=16))
    assert [single[0][i] for i in sorted(single[0])] == [hf_greedy(hf, p, 10) for p, _ in requests]


# -- a checkpoint whose biases are wrong ----------------------------------------------------------

BIAS_NAMES = [f"model.layers.1.{p}.bias" for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                   "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]


def missing(tensors: dict, name: str) -> str:
    tensors.pop(name)
    return rf"lacks 1 tensor\(s\), e.g. \['{name}'\]"


def a_matrix(tensors: dict, name: str) -> str:
    tensors[name] = tensors[name].unsqueeze(0)
    return rf"'{name}' in .* has shape \(1, \d+\), config.json implies \(\d+,\)"


def too_long(tensors: dict, name: str) -> str:
    tensors[name] = torch.cat([tensors[name], tensors[name][:2]])
    return rf"'{name}' in .* has shape \(\d+,\), config.json implies"


def holding_nan(tensors: dict, name: str) -> str:
    tensors[name][0] = float("nan")
    return rf"'{name}' in .* holds NaN or infinite values"


def of_integers(tensors: dict, name: str) -> str:
    tensors[name] = tensors[name].to(torch.int32)
    return rf"'{name}' in .* is I32; minillama reads weights stored as"


FAULTS = [missing, a_matrix, too_long, holding_nan, of_integers]


def write_faulty(path: Path, name: str, fault) -> str:
    """A both-biases checkpoint under `path` whose tensor `name` has `fault`; the message expected."""
    from safetensors.torch import load_file, save_file

    make_model(**BIASES["both-biases"]).save_pretrained(path)
    tensors = load_file(path / "model.safetensors")
    message = fault(tensors, name)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return message


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", BIAS_NAMES, ids=lambda n: n.split(".")[-2])
def test_a_bad_bias_tensor_is_refused_by_name(tmp_path, name, fault):
    """Every bias of a both-biases checkpoint, each fault: ModelLoadError naming the tensor."""
    message = write_faulty(tmp_path, name, fault)
    with pytest.raises(ModelLoadError, match=message):
        LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", num_kv_blocks=8))


@pytest.mark.parametrize("name", BIAS_NAMES, ids=lambda n: n.split(".")[-2])
def test_each_rank_reads_its_part_of_every_bias_and_refuses_one_of_another_rank(tmp_path, name):
    """What a tensor-parallel rank reads of each bias (minillama/parallel/weights.py): its part
    of a column-parallel one's entries, the whole of a row-parallel one's; a bias stored as a
    matrix is refused by name before its slice is read."""
    from safetensors import safe_open

    from minillama.parallel.shard import Shard
    from minillama.parallel.weights import rank_shape, rank_slice

    make_model(**BIASES["both-biases"]).save_pretrained(tmp_path / "good")
    write_faulty(tmp_path / "bad", name, a_matrix)
    row_parallel = name.endswith(("o_proj.bias", "down_proj.bias"))
    with safe_open(tmp_path / "good" / "model.safetensors", framework="pt") as f:
        whole = f.get_tensor(name)
        parts = [rank_slice(f, name, Shard(rank, 2)) for rank in range(2)]
    assert [tuple(p.shape) for p in parts] == [rank_shape(name, tuple(whole.shape), Shard(rank, 2)) for rank in range(2)]
    assert all(torch.equal(p, whole) for p in parts) if row_parallel else torch.equal(torch.cat(parts), whole)
    with safe_open(tmp_path / "bad" / "model.safetensors", framework="pt") as f:
        if row_parallel:  # read whole: the loader's shape check names it
            assert rank_shape(name, tuple(f.get_slice(name).get_shape()), Shard(1, 2)) == (1, whole.shape[0])
        else:
            with pytest.raises(ModelLoadError, match=rf"'{name}' has shape \(1, \d+\), not a vector"):
                rank_slice(f, name, Shard(1, 2))


@pytest.mark.parametrize("name", [BIAS_NAMES[1], BIAS_NAMES[6]], ids=["column-parallel", "row-parallel"])
def test_a_bad_bias_is_refused_by_name_when_the_model_is_split(tmp_path, name):
    """The same, end to end over two ranks: the error names the tensor."""
    message = write_faulty(tmp_path, name, too_long)
    with pytest.raises(ModelLoadError, match=message):
        LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", num_kv_blocks=8, tensor_parallel_size=2))


@pytest.mark.parametrize("flag", ["attention_bias", "mlp_bias"])
def test_a_bias_in_a_checkpoint_whose_config_declares_none_is_refused_by_name(tmp_path, flag):
    import json

    make_model(**{flag: True}).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, flag: False}))
    with pytest.raises(ModelLoadError, match=r"'model.layers.0.(self_attn|mlp).\w+.bias' in .* matches no parameter"):
        LLMEngine.from_pretrained(tmp_path, EngineConfig(device="cpu", num_kv_blocks=8))
