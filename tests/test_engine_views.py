"""What the engine publishes for observers: the values its hooks pass, and its read-only views.

Each view is held to the engine's own state, read here the slow way (a walk over the whole block
pool, the model's own forward), in runs that preempt, hit the prefix cache and finish requests.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_hf_model

from minillama import (
    BlockPoolSnapshot,
    ConfigError,
    EngineConfig,
    LLMEngine,
    Observer,
    RequestInfo,
    SamplingParams,
    SchedulerOutput,
    StepResult,
)

BS = 4


def tiny_engine(prefix_caching: bool = True, num_kv_blocks: int = 14) -> LLMEngine:
    return LLMEngine.from_hf_model(
        make_hf_model("gqa-tied-llama3"),
        EngineConfig(device="cpu", dtype="float32", num_kv_blocks=num_kv_blocks, block_size=BS,
                     enable_prefix_caching=prefix_caching),
    )


def add_requests(engine: LLMEngine) -> list[int]:
    """Four greedy requests sharing a 12-token prefix: more than a 14-block pool holds at once."""
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 256, (12,), generator=generator).tolist()
    prompts = [prefix + torch.randint(0, 256, (n,), generator=generator).tolist() for n in (3, 5, 2, 4)]
    return [engine.add_request(p, SamplingParams(temperature=0, max_tokens=12)) for p in prompts]


def pool_walked(engine: LLMEngine, computed: dict[int, int] | None = None, include: set[int] = frozenset()) -> dict:
    """The snapshot's content, from a walk over every block of the pool and every holder."""
    bm, running = engine.block_manager, engine.scheduler.running
    computed = computed or {}
    held: dict[int, int] = {}  # block -> tokens its fullest owner computed in it
    for seq in running:
        done = computed.get(seq.seq_id, seq.num_computed_tokens)
        for index, block_id in enumerate(seq.block_table):
            held[block_id] = max(held.get(block_id, 0), min(BS, max(0, done - index * BS)))
    cached = {b.block_id for b in bm.blocks if b.hash is not None and bm.hash_to_block_id.get(b.hash) == b.block_id}
    cached_free = {b for b in cached if bm.blocks[b].ref_count == 0}
    listed = sorted(held.keys() | cached_free | set(include))
    return {
        "num_blocks": len(bm.blocks), "num_free": sum(b.ref_count == 0 for b in bm.blocks),
        "num_cached_free": len(cached_free), "block_ids": listed,
        "ref_count": [bm.blocks[b].ref_count for b in listed],
        "fill": [BS if bm.blocks[b].hash is not None else held.get(b, 0) for b in listed],
        "cached": [b in cached for b in listed],
        "tables": {seq.seq_id: list(seq.block_table) for seq in running},
    }


def pool_published(pool: BlockPoolSnapshot) -> dict:
    offsets, blocks = pool.table_offsets.tolist(), pool.table_blocks.tolist()
    return {
        "num_blocks": pool.num_blocks, "num_free": pool.num_free, "num_cached_free": pool.num_cached_free,
        "block_ids": pool.block_ids.tolist(), "ref_count": pool.ref_count.tolist(), "fill": pool.fill.tolist(),
        "cached": pool.cached.tolist(),
        "tables": {s: blocks[offsets[i] : offsets[i + 1]] for i, s in enumerate(pool.table_seq_ids.tolist())},
    }


class PoolWatcher(Observer):
    """Compares the pool the engine publishes with the walked one, during the forward (with the
    step's computed tokens, as the recorder takes it) and after each step."""

    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.preempted = self.finished = self.hits = 0

    def on_logits(self, batch, logits):
        computed = {item.seq_id: item.end for item in batch.scheduled}
        hits = {b for item in batch.scheduled for b in item.hit_block_ids}
        pool = self.engine.block_pool_snapshot(computed, include=hits)
        assert pool_published(pool) == pool_walked(self.engine, computed, hits)
        self.preempted += len(batch.preempted)
        self.hits += len(hits)

    def on_step_end(self, result):
        pool = self.engine.block_pool_snapshot()
        assert pool_published(pool) == pool_walked(self.engine)
        assert pool.cached.tolist() == self.engine.cached_flags(pool.block_ids.tolist())
        assert pool.cached_free_listed and result.num_free_blocks == pool.num_free
        self.finished += len(result.finished)


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_block_pool_snapshot_is_the_pool(prefix_caching):
    engine = tiny_engine(prefix_caching)
    watcher = PoolWatcher(engine)
    engine.add_observer(watcher)
    engine.add_request([1, 2, 3, 4, 5, 6, 7, 8, 9], SamplingParams(temperature=0, max_tokens=2))
    engine.step()  # its 2 full blocks are cached (with prefix caching) before the others arrive
    add_requests(engine)
    while engine.has_unfinished():
        engine.step()
    assert watcher.preempted > 0 and watcher.finished == 5
    assert (watcher.hits > 0) == prefix_caching
    empty = engine.block_pool_snapshot()
    assert empty.num_free == empty.num_blocks == 14 and empty.table_seq_ids.size == 0
    assert (empty.num_cached_free > 0) == prefix_caching and empty.cached.all()


def test_a_snapshot_is_frozen_and_shares_nothing_with_the_pool():
    engine = tiny_engine()
    add_requests(engine)
    engine.step()
    pool = engine.block_pool_snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        pool.num_free = 0
    before = pool_published(pool)
    while engine.has_unfinished():
        engine.step()
    assert pool_published(pool) == before  # the pool moved on; the snapshot did not


class ValueKeeper(Observer):
    """Keeps what the hooks pass, to look at after the run."""

    def __init__(self):
        self.plans: list[SchedulerOutput] = []
        self.results: list[StepResult] = []

    def on_schedule(self, batch):
        self.plans.append(batch)

    def on_step_end(self, result):
        self.results.append(result)


def test_hooks_receive_the_steps_immutable_values():
    engine = tiny_engine()
    keeper = ValueKeeper()
    engine.add_observer(keeper)
    ids = add_requests(engine)
    outputs = []
    while engine.has_unfinished():
        outputs.append(engine.step())
    assert [r.batch for r in keeper.results] == keeper.plans
    assert [list(r.outputs) for r in keeper.results] == outputs
    for result in keeper.results:
        assert [o.request_id for o in result.outputs] == [i.seq_id for i in result.batch.sampling]
        assert result.finished == tuple(o.request_id for o in result.outputs if o.finished)
    last = keeper.results[-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        last.num_free_blocks = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        last.timings.forward_ms = 0.0
    with pytest.raises(AttributeError):
        last.outputs[0].token_id = 0
    # Every request's tokens, step by step, are the engine's.
    for seq_id in ids:
        tokens = [o.token_id for r in keeper.results for o in r.outputs if o.request_id == seq_id]
        assert tuple(tokens) == engine.request(seq_id).output_token_ids


def test_request_is_a_copy_of_the_request_as_it_is():
    engine = tiny_engine()
    seq_id = engine.add_request([5, 6, 7], SamplingParams(temperature=0, max_tokens=3))
    info = engine.request(seq_id)
    assert isinstance(info, RequestInfo)
    assert (info.prompt_token_ids, info.output_token_ids, info.num_prompt_tokens) == ((5, 6, 7), (), 3)
    assert info.status == "waiting"
    while engine.has_unfinished():
        engine.step()
    assert info.status == "waiting" and info.output_token_ids == ()  # a copy: it did not move
    done = engine.request(seq_id)
    assert done.status == "finished" and done.finish_reason == "length" and len(done.output_token_ids) == 3
    assert done.params == SamplingParams(temperature=0, max_tokens=3)
    engine.forget(seq_id)
    with pytest.raises(KeyError):
        engine.request(seq_id)


class StreamKeeper(Observer):
    """Keeps each layer's residual stream, the keys each layer wrote and the sampled logits."""

    wants_layers = True
    wants_attention = True

    def __init__(self):
        self.streams: list[torch.Tensor] = []
        self.keys: dict[int, torch.Tensor] = {}  # layer -> the step's new keys [N, Hkv, D]
        self.logits: torch.Tensor | None = None

    def on_schedule(self, batch):
        self.batch, self.streams, self.keys = batch, [], {}

    def on_attention(self, layer, q, k, v, output, metadata):
        self.keys[layer] = k.clone()

    def on_layer(self, layer, stream, metadata):
        self.streams.append(stream.clone())

    def on_logits(self, batch, logits):
        self.logits = logits.clone()


@pytest.mark.parametrize("fused_ops", [True, False])
def test_readout_of_the_last_layer_is_the_models_own_logits(fused_ops):
    engine = LLMEngine.from_hf_model(
        make_hf_model("gqa-tied-llama3"), EngineConfig(device="cpu", dtype="float32", num_kv_blocks=16, block_size=BS,
                                                       fused_ops=fused_ops))
    keeper = StreamKeeper()
    engine.add_observer(keeper)
    engine.add_request(list(range(1, 12)), SamplingParams(temperature=0, max_tokens=3))
    engine.add_request(list(range(20, 26)), SamplingParams(temperature=0, max_tokens=3))
    while engine.has_unfinished():
        engine.step()
        ends = np.cumsum([item.num_tokens for item in keeper.batch.scheduled]) - 1  # each sequence's last row
        logits = engine.readout(keeper.streams[-1][torch.from_numpy(ends)])
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, keeper.logits, rtol=1e-5, atol=1e-5)


def test_kv_cache_is_the_cache_the_model_writes():
    engine = tiny_engine()
    keeper = StreamKeeper()
    engine.add_observer(keeper)
    add_requests(engine)
    layers, kv = engine.model_config.num_hidden_layers, engine.kv_cache
    assert kv.shape == (layers, 2, engine.num_kv_blocks + 1, BS, engine.model_config.num_key_value_heads,
                        engine.model_config.head_dim)
    steps = 0
    while engine.has_unfinished() and steps < 6:
        engine.step()
        steps += 1
        row = 0
        for item in keeper.batch.scheduled:  # the new keys sit where the plan's block table says
            positions = torch.arange(item.start, item.end)
            blocks = torch.tensor(item.block_ids)[positions // BS]
            for layer in range(layers):
                written = engine.kv_cache[layer, 0, blocks, positions % BS]  # [n, Hkv, D]
                torch.testing.assert_close(written, keeper.keys[layer][row : row + item.num_tokens], rtol=0, atol=0)
            row += item.num_tokens
    assert engine.kv_cache is kv  # one tensor for the engine's life


@pytest.mark.parametrize("block_size", [0, -1, 1.5, 2.0, True, "16", {}, [16], 2**31])
def test_kv_block_bytes_refuses_a_block_size_no_pool_has(block_size):
    engine = tiny_engine(num_kv_blocks=9)
    with pytest.raises(ConfigError, match="block_size must be an integer in"):
        engine.kv_block_bytes(block_size)
    assert engine.kv_block_bytes(32) == 2 * engine.kv_block_bytes(16) and engine.kv_block_bytes() == engine.kv_block_bytes(4)


def test_engine_facts_an_observer_reads():
    engine = tiny_engine(num_kv_blocks=9)
    assert engine.num_kv_blocks == 9
    assert engine.attention_backend in {"reference", "sdpa", "cpu"}
