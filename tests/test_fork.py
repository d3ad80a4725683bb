"""LLMEngine.fork: a request that continues another from any of its tokens with other tokens.

The meaning is fixed against a fresh request: a fork's greedy continuation is what a new request
whose prompt is the same prefix plus the forced tokens generates. The memory side is held to the
block manager's invariants: the fork shares its parent's full computed blocks by reference count
(a shared block never changes), copies the partly used block on write (the copy holds exactly
the parent's slots), computes only its forced tokens in its first step, and every block is free
when all requests are done, under preemption, aborts and prefix caching on and off.
"""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch
from conftest import cuda_bf16_engine, cuda_fp32_engine, make_hf_model

from minillama import EngineConfig, InvalidRequestError, LLMEngine, Observer, SamplingParams, SchedulerOutput
from minillama.engine.block_manager import BlockManager, common_prefix_length
from minillama.engine.sequence import Sequence

BS = 4
GREEDY = SamplingParams(temperature=0, max_tokens=8)
PROMPT = [(7 * i + 3) % 256 for i in range(11)]  # 11 tokens: blocks of 4, 4 and 3


@pytest.fixture(scope="module")
def hf_model():
    return make_hf_model("gqa-tied-llama3")


def make_engine(hf_model, prefix_caching: bool = True, num_kv_blocks: int = 64, **config) -> LLMEngine:
    return LLMEngine.from_hf_model(hf_model, EngineConfig(
        device="cpu", dtype="float32", num_kv_blocks=num_kv_blocks, block_size=BS,
        enable_prefix_caching=prefix_caching, **config,
    ))


class Plans(Observer):
    """Every published plan, in step order."""

    def __init__(self):
        self.plans: list[SchedulerOutput] = []

    def on_schedule(self, batch: SchedulerOutput) -> None:
        self.plans.append(batch)

    def first_item(self, seq_id: int):
        return next(item for plan in self.plans for item in plan.scheduled if item.seq_id == seq_id)


def run(engine: LLMEngine, outputs: dict[int, list[int]] | None = None, check=None) -> dict[int, list[int]]:
    """Step until nothing is left; request id -> its output tokens. `check` runs after every step."""
    outputs = {} if outputs is None else outputs
    for _ in range(500):
        if not engine.has_unfinished():
            return outputs
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out.token_id)
        if check is not None:
            check()
    raise AssertionError("the engine looks stuck")


def fresh_output(hf_model, prompt: list[int], params: SamplingParams = GREEDY) -> list[int]:
    engine = make_engine(hf_model)
    request_id = engine.add_request(prompt, params)
    return run(engine)[request_id]


def check_pool(engine: LLMEngine) -> None:
    """Reference counts are the block-table entries naming each block; the free list is exactly
    the unreferenced blocks; a block shared by several sequences is full and computed by each of
    them (so nobody writes it again)."""
    bm, holders = engine.block_manager, engine.scheduler.holders
    bs = bm.block_size
    users: dict[int, int] = {}
    for seq in holders:
        # Blocks for every computed token; the token sampled last step gets its own when scheduled.
        needed = seq.num_blocks_needed(bs, seq.num_computed_tokens), seq.num_blocks_needed(bs)
        assert needed[0] <= len(seq.block_table) <= needed[1], f"{seq} has the wrong number of blocks"
        for block_id in seq.block_table:
            users[block_id] = users.get(block_id, 0) + 1
    for block in bm.blocks:
        assert block.ref_count == users.get(block.block_id, 0), f"block {block.block_id}"
    assert set(bm.free_block_ids) == {b.block_id for b in bm.blocks if b.ref_count == 0}
    waiting = [seq.seq_id for seq in engine.scheduler.waiting]
    assert waiting == sorted(waiting), "the waiting queue is out of arrival order"
    for seq in holders:
        for index, block_id in enumerate(seq.block_table):
            if users[block_id] > 1:
                assert (index + 1) * bs <= seq.num_computed_tokens, f"{seq} shares block {block_id}, not full"


def all_free(engine: LLMEngine) -> bool:
    bm = engine.block_manager
    return bm.num_free_blocks == bm.num_blocks and all(b.ref_count == 0 for b in bm.blocks)


# -- what a fork means ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_tokens, forced", [
    (6, [200]),  # inside a block
    (8, [200, 31]),  # on a block boundary
    (11, [200]),  # the last prompt token
    (13, [200, 31, 5]),  # in the middle of the output
    (15, [200]),  # all the parent's tokens, the last one not computed yet
])
def test_a_fork_continues_as_a_fresh_request_with_that_prompt(hf_model, num_tokens, forced):
    engine = make_engine(hf_model)
    plans = Plans()
    engine.add_observer(plans)
    parent = engine.add_request(PROMPT, GREEDY)
    outputs: dict[int, list[int]] = {}
    for _ in range(4):  # the prefill and 3 decodes: 15 tokens, 14 computed
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out.token_id)
    tokens = list(PROMPT) + list(engine.request(parent).output_token_ids)
    child = engine.fork(parent, num_tokens, forced)
    info = engine.request(child)
    assert (info.parent_id, info.fork_position, info.fork_prefix) == (parent, num_tokens, "shared")
    assert info.prompt_token_ids == tuple(tokens[:num_tokens] + forced) and info.output_token_ids == ()
    assert info.params == GREEDY  # the parent's
    run(engine, outputs, check=lambda: check_pool(engine))
    # The fork's first step computes only what the parent had not: its forced tokens, and the
    # parent's last sampled token when the fork keeps it.
    first = plans.first_item(child)
    computed = min(num_tokens, 14)
    assert first.reason == "forked" and first.start == computed
    assert first.num_tokens == len(forced) + num_tokens - computed
    assert first.token_ids == tuple(tokens[computed:num_tokens] + forced)
    assert outputs[child] == fresh_output(hf_model, tokens[:num_tokens] + forced)
    assert outputs[parent] == fresh_output(hf_model, PROMPT)  # the parent is undisturbed
    assert all_free(engine)


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_a_fork_of_a_finished_parent_is_served_by_the_prefix_cache_or_recomputed(hf_model, prefix_caching):
    engine = make_engine(hf_model, prefix_caching)
    plans = Plans()
    engine.add_observer(plans)
    parent = engine.add_request(PROMPT, GREEDY)
    run(engine)
    tokens = list(PROMPT) + list(engine.request(parent).output_token_ids)
    child = engine.fork(parent, 14, [9])
    run(engine)
    first = plans.first_item(child)
    assert first.reason == "forked"
    if prefix_caching:  # the 3 full blocks of the first 14 tokens are still cached
        assert engine.request(child).fork_prefix == "prefix-cache"
        assert first.start == first.num_cached_tokens == 12 and first.num_tokens == 3
    else:
        assert engine.request(child).fork_prefix == "recomputed"
        assert first.start == 0 and first.num_tokens == 15
    assert engine.request(child).output_token_ids == tuple(fresh_output(hf_model, tokens[:14] + [9]))
    assert all_free(engine)


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_a_fork_of_a_preempted_parent(hf_model, prefix_caching):
    # 8 blocks: two requests growing to 6 blocks each cannot both run, the younger is preempted.
    engine = make_engine(hf_model, prefix_caching, num_kv_blocks=8)
    params = SamplingParams(temperature=0, max_tokens=12)
    engine.add_request(PROMPT, params)
    parent = engine.add_request(PROMPT[::-1], params)
    for _ in range(30):
        engine.step()
        if engine.request(parent).num_preemptions:
            break
    info = engine.request(parent)
    assert info.status == "waiting" and info.num_preemptions == 1
    tokens = list(info.prompt_token_ids + info.output_token_ids)
    child = engine.fork(parent, len(tokens), [42])
    run(engine, check=lambda: check_pool(engine))
    assert engine.request(child).fork_prefix in ("prefix-cache", "recomputed")
    assert engine.request(child).output_token_ids == tuple(fresh_output(hf_model, tokens + [42], params))
    assert all_free(engine)


def test_a_fork_of_a_parent_in_chunked_prefill_computes_the_rest_of_the_prefix(hf_model):
    engine = make_engine(hf_model, max_num_batched_tokens=5)
    plans = Plans()
    engine.add_observer(plans)
    parent = engine.add_request(PROMPT, GREEDY)
    engine.step()  # 5 of its 11 prompt tokens: one full block shared, one slot copied
    child = engine.fork(parent, 10, [77])
    assert engine.request(child).fork_prefix == "shared"
    run(engine, check=lambda: check_pool(engine))
    first = plans.first_item(child)
    assert first.reason == "forked" and first.start == 5
    assert engine.request(child).output_token_ids == tuple(fresh_output(hf_model, PROMPT[:10] + [77]))
    assert all_free(engine)


def test_a_fork_waits_for_a_seat_holding_its_shared_blocks(hf_model):
    engine = make_engine(hf_model, max_num_seqs=1)
    plans = Plans()
    engine.add_observer(plans)
    parent = engine.add_request(PROMPT, GREEDY)
    engine.step()
    child = engine.fork(parent, 9, [1, 2])
    engine.step()  # the parent decodes; the fork has no seat
    assert plans.plans[-1].waiting == (child,) and plans.plans[-1].running == (parent,)
    snapshot = engine.block_pool_snapshot()
    assert child in snapshot.table_seq_ids.tolist()
    check_pool(engine)
    run(engine, check=lambda: check_pool(engine))
    assert engine.request(child).output_token_ids == tuple(fresh_output(hf_model, PROMPT[:9] + [1, 2]))
    assert all_free(engine)


def test_a_fork_of_a_fork(hf_model):
    engine = make_engine(hf_model)
    parent = engine.add_request(PROMPT, GREEDY)
    engine.step()
    child = engine.fork(parent, 10, [5, 6, 7])  # not started yet: its prefix is computed up to 10
    grandchild = engine.fork(child, 12, [8])
    assert engine.request(grandchild).fork_prefix == "shared"
    outputs = run(engine, check=lambda: check_pool(engine))
    assert outputs[grandchild] == fresh_output(hf_model, PROMPT[:10] + [5, 6, 8])
    assert all_free(engine)


def test_a_fork_with_no_free_block_for_its_copy_queues_like_a_new_request(hf_model):
    # 4 blocks: the parent's 13 tokens hold them all, the fork's copy of block 2 finds none free.
    engine = make_engine(hf_model, num_kv_blocks=4)
    plans = Plans()
    engine.add_observer(plans)
    params = SamplingParams(temperature=0, max_tokens=5)
    parent = engine.add_request(PROMPT, params)
    for _ in range(3):
        engine.step()
    assert engine.block_manager.num_free_blocks == 0
    child = engine.fork(parent, 10, [1])
    assert engine.request(child).fork_prefix is None and engine.sequences[child].block_table == ()
    run(engine, check=lambda: check_pool(engine))
    first = plans.first_item(child)  # admitted once the parent finished, from its cached blocks
    assert first.reason == "forked" and first.num_cached_tokens == 8
    assert engine.request(child).fork_prefix == "prefix-cache"
    assert engine.request(child).output_token_ids == tuple(fresh_output(hf_model, PROMPT[:10] + [1], params))
    assert all_free(engine)


# -- shared blocks and the copy on write ----------------------------------------------------------


@pytest.mark.parametrize("fork_position, computed, shared, copy_slots", [
    (10, 11, 2, 2),  # inside block 2: blocks 0, 1 shared, 2 slots of block 2 copied
    (8, 11, 2, 0),  # on a boundary: nothing to copy
    (10, 5, 1, 1),  # the parent computed only 5 tokens: block 0 shared, 1 slot copied
    (3, 11, 0, 3),  # inside block 0: nothing shared
])
def test_block_manager_fork_shares_full_blocks_and_names_the_copy(fork_position, computed, shared, copy_slots):
    bm = BlockManager(16, BS)
    parent = Sequence(0, PROMPT, GREEDY)
    bm.allocate(parent)
    parent.num_computed_tokens = computed
    bm.commit_full_blocks(parent, 0)
    child = Sequence(1, PROMPT[:fork_position] + [1, 2], GREEDY)
    child.fork_position = fork_position
    free = bm.num_free_blocks
    assert bm.can_fork(parent, child)
    copy = bm.fork(parent, child)
    assert child.block_table[:shared] == parent.block_table[:shared]
    assert not set(child.block_table[shared:]) & set(parent.block_table)
    assert len(child.block_table) == child.num_blocks_needed(BS)
    assert bm.num_free_blocks == free - (len(child.block_table) - shared)
    assert [bm.blocks[b].ref_count for b in parent.block_table] == [2] * shared + [1] * (3 - shared)
    assert child.num_computed_tokens == min(fork_position, computed)
    assert copy == ((parent.block_table[shared], child.block_table[shared], copy_slots) if copy_slots else None)
    bm.free(parent)
    bm.free(child)
    assert bm.num_free_blocks == bm.num_blocks


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_a_fork_with_a_donor_leaves_the_pool_as_freeing_the_donor_then_forking(seed, prefix_caching):
    """Beam search hands a pruned beam's blocks to a fork of the same step (BlockManager.fork's
    donor). Random families of forks (beams of one prompt, forked and decoded at random) on two
    identical pools: each fork with a donor, against free(donor) then fork, leaves the same
    reference counts, free list (in order), tables and copy on write."""
    rng = random.Random(seed)
    ids = itertools.count()
    handed = 0
    for _ in range(20):
        bm = BlockManager(64, BS, enable_prefix_caching=prefix_caching)
        root = Sequence(next(ids), [rng.randrange(50) for _ in range(rng.randint(1, 30))], GREEDY)
        bm.allocate(root)
        root.num_computed_tokens = root.num_tokens
        bm.commit_full_blocks(root, 0)
        live = [root]
        for _ in range(rng.randint(2, 12)):  # forks and decode steps, as a search makes them
            parent = rng.choice(live)
            if rng.random() < 0.5:
                child = Sequence(next(ids), [*parent.token_ids, rng.randrange(50)], GREEDY)
                child.fork_position = parent.num_tokens
                bm.fork(parent, child)
                live.append(child)
            else:
                child = parent
                child.token_ids.append(rng.randrange(50))
                bm.append_slot(child)
            before, child.num_computed_tokens = child.num_computed_tokens, child.num_tokens
            bm.commit_full_blocks(child, before)
        if len(live) < 2:
            continue
        parent, donor = rng.sample(live, 2)
        twin_bm, twin_parent, twin_donor = copy.deepcopy((bm, parent, donor))
        child = Sequence(next(ids), [*parent.token_ids, 7], GREEDY)
        child.fork_position = parent.num_tokens
        twin_child = copy.deepcopy(child)
        handed += common_prefix_length(donor.block_table, parent.block_table[: parent.num_tokens // BS])
        copied = bm.fork(parent, child, donor)
        twin_bm.free(twin_donor)
        assert copied == twin_bm.fork(twin_parent, twin_child)
        assert donor.block_table == twin_donor.block_table == ()
        assert child.block_table == twin_child.block_table
        assert [b.ref_count for b in bm.blocks] == [b.ref_count for b in twin_bm.blocks]
        assert list(bm.free_block_ids) == list(twin_bm.free_block_ids)
    assert handed > 0, "the donors should share blocks with the forks"


@pytest.mark.parametrize("seed", range(3))
def test_common_prefix_length_is_the_length_of_the_longest_common_prefix(seed):
    rng = random.Random(seed)
    for _ in range(1000):  # tails of up to 20 entries: the search from the end, and past its 8 entries
        a = tuple(rng.randrange(3) for _ in range(rng.randint(0, 30)))
        b = a[: rng.randint(0, len(a))] + tuple(rng.randrange(3) for _ in range(rng.randint(0, 20)))
        expected = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert common_prefix_length(a, b) == common_prefix_length(b, a) == expected


def test_block_manager_cannot_fork_without_free_blocks_for_the_rest():
    bm = BlockManager(4, BS)
    parent = Sequence(0, PROMPT, GREEDY)
    bm.allocate(parent)
    parent.num_computed_tokens = 11
    child = Sequence(1, PROMPT[:10] + [1, 2, 3], GREEDY)  # 13 tokens: blocks 0, 1 shared, 2 fresh
    child.fork_position = 10
    assert bm.num_free_blocks == 1 and not bm.can_fork(parent, child)
    child.token_ids = child.token_ids[:11]  # 11 tokens: one fresh block
    assert bm.can_fork(parent, child)



def test_shared_blocks_show_their_reference_counts_and_never_change(hf_model):
    engine = make_engine(hf_model)
    parent = engine.add_request(PROMPT, GREEDY)
    for _ in range(3):
        engine.step()
    child = engine.fork(parent, 10, [33])  # shares blocks 0 and 1, copies 2 slots of block 2
    parent_table, child_table = engine.sequences[parent].block_table, engine.sequences[child].block_table
    assert child_table[:2] == parent_table[:2] and child_table[2] not in parent_table
    snapshot = engine.block_pool_snapshot()
    refs = dict(zip(snapshot.block_ids.tolist(), snapshot.ref_count.tolist()))
    assert [refs[b] for b in parent_table[:2]] == [2, 2]
    assert all(refs[b] == 1 for b in (*parent_table[2:], *child_table[2:]))
    # The copy holds exactly the parent's 2 slots, in every layer, K and V.
    kv = engine.kv_cache
    assert torch.equal(kv[:, :, child_table[2], :2], kv[:, :, parent_table[2], :2])
    shared = list(parent_table[:2])
    before = kv[:, :, shared].clone()

    def unchanged():
        check_pool(engine)
        if not all_free(engine):  # still held by one of them: nobody has written it
            assert torch.equal(kv[:, :, shared], before)

    run(engine, check=unchanged)
    assert all_free(engine)


def test_a_fork_on_a_block_boundary_copies_nothing(hf_model):
    engine = make_engine(hf_model)
    parent = engine.add_request(PROMPT, GREEDY)
    engine.step()
    free = engine.block_manager.num_free_blocks
    child = engine.fork(parent, 8, [1])
    table = engine.sequences[child].block_table
    assert table[:2] == engine.sequences[parent].block_table[:2]
    assert len(table) == 3 and engine.block_manager.num_free_blocks == free - 1
    run(engine)
    assert all_free(engine)


# -- no leak ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_no_block_leaks_under_forks_preemption_and_aborts(hf_model, prefix_caching, seed):
    """Random requests, forks of running, waiting, preempted and finished requests (and of forks),
    and aborts, in a pool too small for them all: the invariants hold after every step, parents
    and forks are preempted, and every block is free at the end."""
    rng = random.Random(seed)
    engine = make_engine(hf_model, prefix_caching, num_kv_blocks=12, max_num_seqs=4, max_num_batched_tokens=16)
    plans = Plans()
    engine.add_observer(plans)
    shared_prompt = [rng.randrange(256) for _ in range(6)]
    for _ in range(4):
        prompt = shared_prompt + [rng.randrange(256) for _ in range(rng.randrange(1, 6))]
        engine.add_request(prompt, SamplingParams(temperature=0.8, seed=rng.randrange(100), max_tokens=16))
    parents: set[int] = set()
    forks: dict[int, str | None] = {}  # fork id -> how it got its prefix
    for _ in range(400):
        if not engine.has_unfinished():
            break
        engine.step()
        check_pool(engine)
        live = list(engine.sequences)
        roll = rng.random()
        if roll < 0.5 and len(forks) < 16:
            parent = rng.choice(live)
            info = engine.request(parent)
            num_tokens = rng.randrange(1, info.num_prompt_tokens + len(info.output_token_ids) + 1)
            forced = [rng.randrange(256) for _ in range(rng.randrange(1, 3))]
            child = engine.fork(parent, num_tokens, forced, SamplingParams(temperature=0, max_tokens=8))
            parents.add(parent)
            forks[child] = engine.request(child).fork_prefix
        elif roll < 0.55:
            engine.abort(rng.choice(live))
        check_pool(engine)
    assert not engine.has_unfinished()
    preempted = {seq_id for plan in plans.plans for seq_id in plan.preempted}
    assert preempted & parents, "no parent was preempted"
    assert preempted & forks.keys(), "no fork was preempted"
    assert "shared" in forks.values() and None in forks.values()  # some forks queued like new requests
    assert all_free(engine)


def test_aborting_a_parent_or_a_fork_that_has_not_started_frees_its_blocks(hf_model):
    engine = make_engine(hf_model, max_num_seqs=1)
    parent = engine.add_request(PROMPT, GREEDY)
    engine.step()
    child = engine.fork(parent, 10, [3])
    engine.abort(parent)  # the fork keeps the shared blocks
    check_pool(engine)
    assert engine.request(child).status == "waiting"
    second = engine.fork(child, 11, [4])
    engine.abort(child)  # a fork without a seat yet, holding blocks
    check_pool(engine)
    run(engine, check=lambda: check_pool(engine))
    assert engine.request(second).output_token_ids == tuple(fresh_output(hf_model, PROMPT[:10] + [3, 4]))
    assert all_free(engine)


# -- bad input -----------------------------------------------------------------------------------------


def engine_state(engine: LLMEngine) -> tuple:
    scheduler, bm = engine.scheduler, engine.block_manager
    return (
        [s.seq_id for s in scheduler.waiting], [s.seq_id for s in scheduler.running],
        [s.seq_id for s in scheduler.forked], list(bm.free_block_ids), [b.ref_count for b in bm.blocks],
        sorted(engine.sequences),
    )


def tampered(params: SamplingParams, **fields: object) -> SamplingParams:
    """`params` with `fields` set past its checks (a frozen dataclass still yields to
    object.__setattr__): what the engine's own check of a request's params is for."""
    for name, value in fields.items():
        object.__setattr__(params, name, value)
    return params


@pytest.mark.parametrize("args, message", [
    ((99, 3, [1]), "no request"),
    (("0", 3, [1]), "no request"),
    ((0, 0, [1]), "num_tokens"),
    ((0, 13, [1]), "num_tokens"),  # the parent has 12 tokens
    ((0, 2.0, [1]), "num_tokens"),
    ((0, 3, []), "forced_token_ids"),
    ((0, 3, 5), "forced_token_ids"),
    ((0, 3, [256]), "token ids"),
    ((0, 3, [-1]), "token ids"),
    ((0, 3, ["a"]), "token ids"),
    ((0, 3, [1] * 40), r"the fork's prompt \(3 \+ 40 forced\) has 43 tokens; this engine's max_model_len is 32"),
    # SamplingParams checks its fields when made; the engine checks again what it is given.
    ((0, 3, [1], tampered(SamplingParams(), temperature=-1)), "temperature"),
    ((0, 3, [1], "greedy"), "SamplingParams"),
])
def test_bad_input_to_fork_changes_nothing(hf_model, args, message):
    engine = make_engine(hf_model, max_model_len=32)
    parent = engine.add_request(PROMPT, GREEDY)
    engine.step()
    assert parent == 0 and engine.request(parent).num_prompt_tokens + 1 == 12
    before = engine_state(engine)
    with pytest.raises(InvalidRequestError, match=message):
        engine.fork(*args)
    assert engine_state(engine) == before
    assert engine.add_request(PROMPT, GREEDY) == 1  # no request id was taken


# -- on a CUDA GPU ---------------------------------------------------------------------------------------


def fork_scenario(engine: LLMEngine) -> tuple[list[int], dict[int, int], dict[int, list[int]]]:
    """A parent decodes 4 tokens of a 40-token prompt (43 of its 44 tokens computed), then forks
    inside a block (20), on a block boundary (32) and in its output (42), each with the token
    `num_tokens`, and everything runs to the end: (the parent's tokens at the forks,
    num_tokens -> fork id, every request's outputs)."""
    prompt = [(11 * i + 5) % 256 for i in range(40)]
    parent = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=12))
    for _ in range(5):
        engine.step()
    tokens = list(prompt) + list(engine.request(parent).output_token_ids)
    forks = {num_tokens: engine.fork(parent, num_tokens, [num_tokens]) for num_tokens in (20, 32, 42)}
    table, parent_table = engine.sequences[forks[20]].block_table, engine.sequences[parent].block_table
    assert table[0] == parent_table[0] and torch.equal(engine.kv_cache[:, :, table[1], :4],
                                                       engine.kv_cache[:, :, parent_table[1], :4])
    outputs = run(engine, check=lambda: check_pool(engine))
    assert all_free(engine)
    return tokens, forks, outputs


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_forks_on_cuda_equal_fresh_requests():
    """On the GPU in float32, each fork's greedy continuation is a fresh request's."""
    torch.backends.cuda.matmul.allow_tf32 = False
    hf = make_hf_model("gqa-tied-llama3").cuda()
    tokens, forks, outputs = fork_scenario(cuda_fp32_engine(hf))
    for num_tokens, child in forks.items():
        fresh = cuda_fp32_engine(hf)
        request_id = fresh.add_request(tokens[:num_tokens] + [num_tokens], SamplingParams(temperature=0, max_tokens=12))
        assert outputs[child] == run(fresh)[request_id], f"fork at {num_tokens}"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_forks_through_cuda_graphs_equal_eager():
    """The same forks decoding through CUDA graphs (bf16, Triton) give the eager engine's tokens:
    the graphs read the forks' shared and copied blocks through their block tables as eager code does."""
    hf = make_hf_model("gqa-tied-llama3").cuda()
    results = [fork_scenario(cuda_bf16_engine(hf, eager)) for eager in (True, False)]
    assert results[0] == results[1]


# -- what observers are told ---------------------------------------------------------------------------


class Forks(Observer):
    """Every fork event, and every step's result."""

    def __init__(self):
        self.forks, self.results = [], []

    def on_fork(self, event) -> None:
        self.forks.append(event)

    def on_step_end(self, result) -> None:
        self.results.append(result)


def test_observers_are_told_of_each_fork_with_its_shared_blocks_and_copy(hf_model):
    engine = make_engine(hf_model)
    seen = Forks()
    engine.add_observer(seen)
    parent = engine.add_request(PROMPT, GREEDY)
    engine.step()  # the prompt: 11 tokens computed, blocks of 4, 4 and 3
    table = engine.sequences[parent].block_table
    shared = engine.fork(parent, 6, [200])  # inside block 1: block 0 shared, 2 slots copied
    engine.scheduler.finish(engine.sequences[parent], "abort")  # its blocks go: the next fork queues
    queued = engine.fork(parent, 9, [201])
    first, second = seen.forks
    child_table = engine.sequences[shared].block_table
    assert first == (shared, parent, 6, (200,), "user", "shared", (table[0],), (table[1], child_table[1], 2))
    assert child_table[0] == table[0] and child_table[1] != table[1]
    assert second == (queued, parent, 9, (201,), "user", "queued", (), None)


def test_a_samples_output_names_its_leaders_logits_row(hf_model):
    engine = make_engine(hf_model)
    seen = Forks()
    engine.add_observer(seen)
    engine.add_request([1, 2, 3], GREEDY)  # row 0 of the step that samples both prompts
    leader = engine.add_request(PROMPT, SamplingParams(n=3, seed=1, max_tokens=4))
    engine.step()
    result = seen.results[0]
    assert [item.seq_id for item in result.batch.sampling] == [0, leader]
    samples = engine.samples(leader)
    assert [o.request_id for o in result.outputs] == [0, leader, *samples[1:]]
    assert result.rows == (0, 1, 1, 1) and result.output_rows() == result.rows
    assert [(e.child_id, e.parent_id, e.cause, e.position) for e in seen.forks] == [
        (s, leader, "sample", len(PROMPT)) for s in samples[1:]]
    run(engine)
    assert all(r.rows is None for r in seen.results[1:])  # ordinary steps: output i from row i
