"""A KV cache or weights larger than the free memory are refused before anything is allocated,
with a message that says what fits; before the check, `--kv-cache-gb 1000` was OOM-killed after
a minute with no message, and `--num-kv-blocks 1000000000` dumped an allocator traceback."""

from __future__ import annotations

import re

import pytest
import torch

from minillama import EngineConfig, LLMEngine, ModelConfig, ModelLoadError, SamplingParams, memory
from minillama.engine.model_runner import kv_block_bytes
from minillama.errors import ConfigError

TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
BLOCK_SIZE = 4


def engine(**settings) -> LLMEngine:
    return LLMEngine.from_config(ModelConfig.from_dict(TINY), EngineConfig(device="cpu", block_size=BLOCK_SIZE, **settings))


def test_a_kv_cache_beyond_all_memory_is_refused_at_once():
    with pytest.raises(ConfigError, match=r"the KV cache would take [\d.]+ GiB; [\d.]+ GiB is available on cpu: "
                                          r"at most \d+ blocks of 4 tokens fit"):
        engine(num_kv_blocks=2 * 10**9)


def test_kv_cache_gb_beyond_memory_is_refused():
    # The cache is never larger than every running sequence at full length could use, so ask
    # for a pool that many sequences would use.
    with pytest.raises(ConfigError, match="the KV cache would take"):
        engine(kv_cache_memory_gb=10**6, max_num_seqs=10**9)


def test_the_number_of_blocks_said_to_fit_does_fit(monkeypatch):
    usable = 2**20
    monkeypatch.setattr(memory, "usable_bytes", lambda device: usable)
    with pytest.raises(ConfigError) as info:
        engine(num_kv_blocks=10**6)
    fit = int(re.search(r"at most (\d+) blocks", str(info.value)).group(1))
    config = ModelConfig.from_dict(TINY)
    block = kv_block_bytes(config, BLOCK_SIZE, torch.float32, config.num_key_value_heads)
    assert fit == usable // block - 1  # one more block is the scratch block
    small = engine(num_kv_blocks=fit)
    small.add_request([1, 2, 3], SamplingParams(temperature=0, max_tokens=2))
    while small.has_unfinished():
        small.step()
    with pytest.raises(ConfigError):
        engine(num_kv_blocks=fit + 1)


def test_not_even_one_block(monkeypatch):
    # Room for the weights (about 100 KiB), not for one block of a million tokens (256 MiB).
    monkeypatch.setattr(memory, "usable_bytes", lambda device: 2**20)
    with pytest.raises(ConfigError, match=r"not one block of 1000000 tokens \(0.2 GiB\) fits"):
        LLMEngine.from_config(ModelConfig.from_dict(TINY), EngineConfig(device="cpu", block_size=10**6, num_kv_blocks=1))


def test_weights_beyond_memory_are_refused_before_allocation():
    # The largest vocabulary a config may name (2**24: token ids travel as float32) at a width
    # of 2**16: 4 PiB of embeddings alone.
    huge = ModelConfig.from_dict({**TINY, "vocab_size": 2**24, "hidden_size": 2**16, "num_attention_heads": 512,
                                  "num_key_value_heads": 8})
    with pytest.raises(ModelLoadError, match=r"the model's weights in float32 would take [\d.]+ GiB"):
        LLMEngine.from_config(huge, EngineConfig(device="cpu", num_kv_blocks=1))


@pytest.mark.parametrize("tied", [False, True])
def test_the_parameter_count_from_the_config_is_the_models(tied):
    config = ModelConfig.from_dict({**TINY, "tie_word_embeddings": tied, "head_dim": 16})  # heads x head_dim != hidden
    model = LLMEngine.from_config(config, EngineConfig(device="cpu", num_kv_blocks=4)).runner.model
    assert config.num_parameters == sum(p.numel() for p in model.parameters())  # shared tensors counted once


def test_a_billion_layers_are_refused_before_a_module_is_made():
    """The config's arithmetic refuses it: making the layers, even on the meta device, would take hours."""
    huge = ModelConfig.from_dict({**TINY, "num_hidden_layers": 10**9})
    with pytest.raises(ModelLoadError, match=r"the model's weights in float32 would take [\d.]+ GiB"):
        LLMEngine.from_config(huge, EngineConfig(device="cpu", num_kv_blocks=1))


def test_host_memory_reads_meminfo_and_the_container_limit(tmp_path, monkeypatch):
    available = memory.host_available_bytes()
    assert available is None or available > 0
    limit, usage, stat = tmp_path / "memory.max", tmp_path / "memory.current", tmp_path / "memory.stat"
    usage.write_text(f"{3 * 2**30}\n")
    stat.write_text(f"anon 123\ninactive_file {2**30}\n")
    monkeypatch.setattr(memory, "CGROUP_FILES", ((str(limit), str(usage), str(stat)),))
    limit.write_text("max\n")
    assert memory._cgroup_room() is None
    limit.write_text(f"{4 * 2**30}\n")
    assert memory._cgroup_room() == 2 * 2**30  # 4 GiB limit - 3 GiB used + 1 GiB of droppable cache
    if available is not None:
        assert memory.host_available_bytes() == min(available, 2 * 2**30)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_too_large_is_refused_and_the_automatic_size_fits():
    # Blocks of 2 MiB, and room for a million sequences: the size comes from the memory.
    config = ModelConfig.from_dict({**TINY, "hidden_size": 1024, "num_attention_heads": 8, "num_key_value_heads": 8})
    with pytest.raises(ConfigError, match="the KV cache would take .* is available on cuda"):
        LLMEngine.from_config(config, EngineConfig(device="cuda", num_kv_blocks=10**9, block_size=256, enforce_eager=True))
    for utilization in (0.5, 1.0):
        gpu = LLMEngine.from_config(config, EngineConfig(device="cuda", gpu_memory_utilization=utilization, block_size=256,
                                                         max_num_seqs=10**6, enforce_eager=True))
        free, total = torch.cuda.mem_get_info()
        assert gpu.block_manager.num_blocks > 1000 and free < total * (1.1 - utilization)
        del gpu
        torch.cuda.empty_cache()


# name -> ModelConfig fields over TINY: what a KV block's bytes depend on (layers, KV heads,
# head_dim), each at an extreme a Llama checkpoint may have.
KV_SHAPES = {
    "one-layer": dict(num_hidden_layers=1),
    "one-kv-head": dict(num_key_value_heads=1),
    "no-gqa": dict(num_key_value_heads=4),
    "head-dim-256-explicit": dict(head_dim=256, num_key_value_heads=1),
    "head-dim-80-gqa-5": dict(hidden_size=400, num_attention_heads=5, num_key_value_heads=1),
}


@pytest.mark.parametrize("name", list(KV_SHAPES))
def test_kv_cache_gb_bounds_the_whole_pool_whatever_the_shape(name):
    """--kv-cache-gb is the pool's memory, its scratch block included: a budget of b bytes gives
    b // block - 1 blocks to use (the pool took one block more than the budget, since the scratch
    block came on top), and a budget under two blocks is refused naming the flag (a pool of two
    blocks came out of any budget, however small)."""
    fields = {**TINY, **KV_SHAPES[name]}
    config = ModelConfig.from_dict(fields)
    block = kv_block_bytes(config, BLOCK_SIZE, torch.float32, config.num_key_value_heads)
    assert block == 2 * config.num_hidden_layers * BLOCK_SIZE * config.num_key_value_heads * config.head_dim * 4
    for budget in (2 * block, 3 * block - 1, 7 * block + 5):
        made = LLMEngine.from_config(config, EngineConfig(device="cpu", block_size=BLOCK_SIZE,
                                                          kv_cache_memory_gb=budget / 2**30))
        assert made.num_kv_blocks == budget // block - 1
        assert made.kv_cache.numel() * made.kv_cache.element_size() <= budget
    for budget in (1, block, 2 * block - 1):
        with pytest.raises(ConfigError, match=rf"--kv-cache-gb \S+ holds no KV block of this model: a block of "
                                              rf"{BLOCK_SIZE} tokens takes {block:,} bytes"):
            LLMEngine.from_config(config, EngineConfig(device="cpu", block_size=BLOCK_SIZE,
                                                       kv_cache_memory_gb=budget / 2**30))
