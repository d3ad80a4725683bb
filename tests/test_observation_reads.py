"""The observation API's tensor reads refuse what they cannot read (minillama/engine/read_checks.py).

read_keys read a negative index from the cache's end in silence and broadcast blocks and
offsets of different lengths; readout handed any tensor to the CPU norm kernel, which reads and
writes by raw pointer (a float16 stream went past both buffers). Every argument, each bad value:
InvalidRequestError naming it, and the engine reads and steps on. A tiny random-weight engine.
"""

from __future__ import annotations

import pytest
import torch

from minillama import EngineConfig, InvalidRequestError, LLMEngine, ModelConfig, SamplingParams

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
NUM_BLOCKS, BLOCK_SIZE = 8, 4  # the cache: 2 layers, 8 blocks and the scratch block, 4 slots each
GOOD = {"layers": [0, 1], "blocks": [0, 1], "offsets": [0, 3]}


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    engine = LLMEngine.from_config(ModelConfig.from_dict(TINY), EngineConfig(
        device="cpu", num_kv_blocks=NUM_BLOCKS, block_size=BLOCK_SIZE, max_model_len=32))
    engine.add_request([1, 2, 3, 4, 5, 6], SamplingParams(max_tokens=2))
    engine.step()  # the cache holds the prompt's keys
    return engine


def long(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# Per argument of read_keys, what is no index into the cache (each replaces that argument of GOOD).
BAD_INDICES = {
    "negative": lambda name: long([-1, 0]),
    "past the end": lambda name: long([{"layers": 2, "blocks": NUM_BLOCKS + 1, "offsets": BLOCK_SIZE}[name], 0]),
    "float": lambda name: torch.tensor([0.0, 1.0]),
    "bool": lambda name: torch.tensor([True, False]),
    "2-D": lambda name: long([[0, 1]]),
    "a list": lambda name: [0, 1],
    "None": lambda name: None,
    "another length": lambda name: long([0, 1, 1]) if name != "layers" else long([0, 1, 2]),
}


@pytest.mark.parametrize("name", list(GOOD))
@pytest.mark.parametrize("bad", BAD_INDICES.values(), ids=BAD_INDICES.keys())
def test_read_keys_refuses_what_is_no_index_of_the_cache(engine, name, bad):
    arguments = {key: long(value) for key, value in GOOD.items()}
    arguments[name] = bad(name)
    with pytest.raises(InvalidRequestError, match=f"{name} must|blocks and offsets must be of one length"):
        engine.read_keys(**arguments)


def test_read_keys_reads_the_cache_at_its_bounds(engine):
    layers, blocks, offsets = long([0, 1]), long([0, NUM_BLOCKS]), long([0, BLOCK_SIZE - 1])
    keys = engine.read_keys(layers, blocks, offsets)  # [L, n, Hkv, D]
    cache = engine.kv_cache
    assert torch.equal(keys[1, 0], cache[1, 0, 0, 0]) and torch.equal(keys[0, 1], cache[0, 0, NUM_BLOCKS, BLOCK_SIZE - 1])
    assert engine.read_keys(layers, long([]), long([])).shape[1] == 0


BAD_STREAMS = {
    "float16": torch.zeros(3, 32, dtype=torch.float16), "float64": torch.zeros(3, 32, dtype=torch.float64),
    "int64": torch.zeros(3, 32, dtype=torch.long), "shorter rows": torch.zeros(3, 31), "longer rows": torch.zeros(3, 33),
    "1-D": torch.zeros(32), "3-D": torch.zeros(1, 3, 32), "a list": [[0.0] * 32], "None": None,
}


@pytest.mark.parametrize("hidden", BAD_STREAMS.values(), ids=BAD_STREAMS.keys())
def test_readout_refuses_what_is_no_residual_stream_of_the_model(engine, hidden):
    with pytest.raises(InvalidRequestError, match="hidden must be"):
        engine.readout(hidden)
    assert engine.readout(torch.ones(3, 32)).shape == (3, 64)  # and reads on


def test_the_engine_steps_on_after_refused_reads(engine):
    for name in GOOD:
        with pytest.raises(InvalidRequestError):
            engine.read_keys(**{**{k: long(v) for k, v in GOOD.items()}, name: long([-1, 0])})
    while engine.has_unfinished():
        engine.step()
    assert all(len(engine.request(rid).output_token_ids) == 2 for rid in engine.sequences)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_reads_refuse_tensors_of_another_device_or_dtype():
    """There the index ranges are not read back (read_checks.py says why); the rest is checked."""
    # The readable attention: the GPU's kernels need blocks of 16 slots, and the cache here has 4.
    engine = LLMEngine.from_config(ModelConfig.from_dict(TINY), EngineConfig(
        device="cuda", dtype="bfloat16", attention="reference", num_kv_blocks=NUM_BLOCKS, block_size=BLOCK_SIZE,
        max_model_len=32))
    with pytest.raises(InvalidRequestError, match="layers must be on the engine's device"):
        engine.read_keys(long([0]), long([0]), long([0]))  # host tensors
    on_gpu = {name: long(values).cuda() for name, values in GOOD.items()}
    assert engine.read_keys(**on_gpu).shape[:2] == (2, 2)
    with pytest.raises(InvalidRequestError, match="blocks and offsets must be of one length"):
        engine.read_keys(on_gpu["layers"], on_gpu["blocks"], on_gpu["offsets"][:1])
    with pytest.raises(InvalidRequestError, match="hidden must be torch.bfloat16 on cuda"):
        engine.readout(torch.zeros(3, 32, device="cuda"))  # float32
    assert engine.readout(torch.zeros(3, 32, device="cuda", dtype=torch.bfloat16)).shape == (3, 64)
