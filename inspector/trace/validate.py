"""validate_trace: what one field's type and range cannot check in a trace read from a file.

The codec already checked every field alone: its type, enum value and range (trace.py's
schema). This checks that the pieces agree, so that every read the views make of a loaded
trace finds what it looks for, and nothing they draw is nonsense:

- every id points at something that exists: sequence ids at sequences, steps at steps, token
  ids below the vocabulary size, layers below the model's count;
- what is recorded twice says the same: a sequence's output_ids and token_steps against the
  tokens of those steps, its text against their text deltas, its num_preemptions against the
  steps that preempted it, the block table a step ran it with against the step's KV snapshot;
  the tokens of a step against the sequences it scheduled to sample; a sequence's arrival,
  prune and fork against its events (which a replay acts on), once each;
- each cause names a sequence it applies to: a chunk (a prefill the step's token budget cut
  short) one the step scheduled, or, leaving it 0 tokens, a beam the step admitted with its
  search after the budget ran out, which runs in the step and computes nothing (the loader
  refused such a chunk, so a run admitting a search on a small budget could not be saved);
- a sequence computes only positions whose token exists by then (the views label positions
  with their tokens), samples exactly when it computes its last one, and ends with the token
  that says it finished;
- the scheduler's queues keep its rules (validate_queues.py): one queue at a time, nothing
  queued before it arrived or after it ended, the step's budgets, blocks held by what runs;
- the arrays (validate_arrays.py) have the dtypes and shapes the model and the pool imply;
- the sizes the views allocate by stay within inspector/trace/bounds.py's limits.

Each check raises TraceError naming the first problem.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter

from inspector.trace.bounds import MAX_TIMELINE_CELLS, MAX_TOKEN_TEXT, MAX_TOKENS
from inspector.trace.model import (
    Event,
    ForkRecord,
    LogitLens,
    LogitsSummary,
    SamplingRecord,
    SequenceRecord,
    StepRecord,
    Trace,
    TraceError,
    TraceTooLarge,
)
from inspector.trace.validate_arrays import check_kv, check_stores
from inspector.trace.validate_queues import check_queues
from minillama import InvalidRequestError, SamplingParams


def validate_trace(trace: Trace) -> None:
    m = trace.model
    if m.num_heads % m.num_kv_heads:
        raise TraceError(f"model: {m.num_heads} query heads is not a multiple of {m.num_kv_heads} kv heads")
    if m.num_kv_heads % m.tensor_parallel_size:  # then it divides the query heads too
        raise TraceError(f"model: tensor_parallel_size {m.tensor_parallel_size} does not divide its "
                         f"{m.num_kv_heads} kv heads")
    if m.weights_fingerprint is not None and not re.fullmatch("[0-9a-f]{16}", m.weights_fingerprint):
        raise TraceError("model: weights_fingerprint must be 16 hexadecimal digits (0-9, a-f)")
    check_view_sizes(trace)
    checked_params: set[tuple] = set()
    for seq_id, seq in trace.sequences.items():
        _check_sequence(trace, seq_id, seq, checked_params)
    _check_events(trace)  # before the steps: they read the fork and prune events
    forks_and_prunes: dict[int, list[Event]] = {}
    for e in trace.events:
        if e.kind in ("fork", "prune"):
            forks_and_prunes.setdefault(e.step, []).append(e)
    for i, step in enumerate(trace.steps):
        if step.index != i:
            raise TraceError(f"steps[{i}] says it is step {step.index}")
        _check_step(trace, step, forks_and_prunes.get(i, []))
    _check_preemption_counts(trace)
    check_queues(trace)  # after the steps: it reads their KV snapshots' tables
    recorded = sum(len(seq.token_steps) for seq in trace.sequences.values())
    if recorded != sum(len(step.tokens) for step in trace.steps):
        raise TraceError("the steps hold tokens that no sequence's token_steps lists")
    check_stores(trace)


def check_view_sizes(trace: Trace) -> None:
    """TraceTooLarge when the views would draw more than bounds.py lets them: timeline cells
    (sequences x steps) and token chips (every sequence's tokens). Also what
    inspector/trace/file_meter.py says of a recording that grows past them."""
    cells = len(trace.sequences) * len(trace.steps)
    if cells > MAX_TIMELINE_CELLS:
        raise TraceTooLarge(f"{len(trace.sequences):,} sequences over {len(trace.steps):,} steps is {cells:,} timeline "
                            f"cells, over the limit of {MAX_TIMELINE_CELLS:,}")
    tokens = sum(len(seq.prompt_ids) + len(seq.output_ids) for seq in trace.sequences.values())
    if tokens > MAX_TOKENS:
        raise TraceTooLarge(f"the sequences hold {tokens:,} tokens, over the limit of {MAX_TOKENS:,}")


def _check_sequence(trace: Trace, seq_id: int, seq: SequenceRecord, checked_params: set[tuple]) -> None:
    where, vocab = f"sequence {seq_id}", trace.model.vocab_size
    if seq.seq_id != seq_id:
        raise TraceError(f"{where}: its record says it is sequence {seq.seq_id}")
    for name in ("prompt_ids", "output_ids"):
        _check_token_ids(getattr(seq, name), vocab, f"{where}: {name}")
    if len(seq.prompt_text) > MAX_TOKEN_TEXT * max(1, len(seq.prompt_ids)):  # its tokens' texts are as bounded
        raise TraceError(f"{where}: a prompt text of {len(seq.prompt_text):,} characters for {len(seq.prompt_ids)} "
                         f"token(s), over {MAX_TOKEN_TEXT:,} characters a token")
    if len(seq.prompt_tokens) not in (0, len(seq.prompt_ids)):
        raise TraceError(f"{where}: {len(seq.prompt_tokens)} prompt token texts for {len(seq.prompt_ids)} prompt tokens")
    _check_params(seq.params, checked_params, where)
    _check_token_ids(seq.params["stop_token_ids"], vocab, f"{where}: params.stop_token_ids")
    if seq.added_step > len(trace.steps):
        raise TraceError(f"{where}: added before step {seq.added_step}, past the trace's {len(trace.steps)} steps")
    steps = seq.token_steps
    if len(steps) != len(seq.output_ids):
        raise TraceError(f"{where}: {len(seq.output_ids)} output tokens but {len(steps)} token_steps")
    if steps and (steps[0] < seq.added_step or steps[-1] >= len(trace.steps)
                  or any(a >= b for a, b in zip(steps, steps[1:]))):
        raise TraceError(f"{where}: token_steps must increase, from its added_step on, within the trace's steps")
    finishes, deltas = [], []
    for step, token_id in zip(steps, seq.output_ids):
        token = trace.steps[step].token_of(seq_id)
        if token is None or token.token_id != token_id:
            raise TraceError(f"{where}: token_steps names step {step}, which has no token {token_id} of it")
        finishes.append(token.finish_reason)
        deltas.append(token.text_delta)
    # The text panel draws the tokens' deltas, `show` and the breakpoints read the text: one
    # file must not tell two stories. (The recorder appends each delta to the text.)
    if seq.text != "".join(deltas):
        raise TraceError(f"{where}: its text is not the text deltas of its tokens, joined")
    if any(finishes[:-1]):
        raise TraceError(f"{where}: a token before its last says the sequence finished")
    last = finishes[-1] if finishes else None
    pruned = seq.finish_reason == "pruned"  # a beam search may drop a beam finished or not
    if not pruned and ((last is not None and seq.finish_reason != last)
                       or (last is None and seq.finish_reason not in (None, "abort"))):
        raise TraceError(f"{where}: finish_reason {seq.finish_reason!r} disagrees with its last token's ({last!r})")
    if pruned != (seq.pruned_step is not None) or (pruned and seq.pruned_step > len(trace.steps)):
        raise TraceError(f"{where}: a pruned sequence, and only one, names the step (within the trace) that pruned it")
    for name in ("parent_id", "group_id"):
        other = getattr(seq, name)
        # A fork is made after its parent and the engine counts ids up, so a parent's id is the
        # smaller: no sequence is its own ancestor, and every walk up a lineage (the views', the
        # replay's) ends at a request.
        if other is not None and (other not in trace.sequences or (name == "parent_id" and other >= seq_id)):
            raise TraceError(f"{where}: {name} {other} is not another sequence of the trace"
                             + (", made before it" if name == "parent_id" else ""))
    if (seq.parent_id is None) != (seq.fork_position is None):
        raise TraceError(f"{where}: a fork names both its parent and its fork position, other sequences neither")


def _check_params(params: SamplingRecord, checked: set[tuple], where: str) -> None:
    """A request's sampling parameters, by the engine's own rules (SamplingParams checks itself
    when made), once for each distinct set: the requests of a run mostly share theirs, and a
    file of 40,000 small requests spent a third of its checking here. (`checked` holds the
    sets already found good; the codec fixed each key's type, so equal sets check alike.)"""
    key = (tuple(params), tuple(tuple(v) if type(v) is list else v for v in params.values()))
    if key in checked:
        return
    try:
        SamplingParams(**{**params, "stop_token_ids": tuple(params["stop_token_ids"])})
    except InvalidRequestError as exc:
        raise TraceError(f"{where}: params: {exc}") from None
    checked.add(key)


def _check_preemption_counts(trace: Trace) -> None:
    """A sequence's num_preemptions (what `show` and a diff print) counts the steps whose
    schedule preempted it (what the timeline draws): one pass over the steps."""
    counted = Counter(seq_id for step in trace.steps for seq_id in step.schedule.preempted)
    for seq_id, seq in trace.sequences.items():
        if seq.num_preemptions != counted[seq_id]:
            raise TraceError(f"sequence {seq_id}: num_preemptions is {seq.num_preemptions}, but "
                             f"{counted[seq_id]} step(s) preempted it")


def _check_step(trace: Trace, step: StepRecord, events: list[Event]) -> None:
    """events: the step's fork and prune events."""
    where, s, bs, nb = f"step {step.index}", step.schedule, trace.engine.block_size, trace.engine.num_blocks
    _check_seq_ids(trace, [x.seq_id for x in s.scheduled], f"{where}: scheduled")
    for x in s.scheduled:
        seq = trace.sequences[x.seq_id]
        if step.index < seq.added_step:
            raise TraceError(f"{where}: schedules sequence {x.seq_id} before it was added (step {seq.added_step})")
        # Positions up to the prompt, then up to the last token sampled before this step.
        known = len(seq.prompt_ids) + bisect.bisect_left(seq.token_steps, step.index)
        end = x.start + x.num_tokens
        if end > known or x.num_cached_tokens > x.start:
            raise TraceError(f"{where}: sequence {x.seq_id} computes positions {x.start}..{end - 1} ({x.num_cached_tokens}"
                             f" from the prefix cache), but has {known} tokens by then")
        if x.samples != (end == known):  # the scheduler: samples == (end == the sequence's length)
            raise TraceError(f"{where}: sequence {x.seq_id} computes positions {x.start}..{end - 1} of {known} and "
                             f"{'samples' if x.samples else 'does not sample'}; a sequence samples exactly when a step "
                             "computes its last token")
        if len(x.block_table) * bs < end:
            raise TraceError(f"{where}: scheduled sequence {x.seq_id} lacks blocks for positions up to {end - 1}")
        if x.block_table and not (0 <= min(x.block_table) and max(x.block_table) < nb):
            raise TraceError(f"{where}: sequence {x.seq_id}'s block table names blocks outside 0..{nb - 1}")
    for name in ("preempted", "waiting", "running"):
        _check_seq_ids(trace, getattr(s, name), f"{where}: {name}")
    _check_causes(trace, step, where)
    _check_seq_ids(trace, step.attention_seqs, f"{where}: attention_seqs")
    if not all(trace.sequences[i].traced for i in step.attention_seqs):
        raise TraceError(f"{where}: attention_seqs names a sequence that is not traced")
    # Each sequence scheduled to sample gives a token, unless its beam search pruned it in this
    # step; a sample or a beam forked in this step gets its first token here, unscheduled.
    sampling = {x.seq_id for x in s.scheduled if x.samples}
    tokens = [t.seq_id for t in step.tokens]
    born = {e.fork.child_id for e in events if e.fork is not None and e.fork.cause != "user"}
    pruned = {e.seq_id for e in events if e.kind == "prune"}
    if len(set(tokens)) != len(tokens) or not set(tokens) <= sampling | born or not sampling - pruned <= set(tokens):
        raise TraceError(f"{where}: its tokens belong to sequences {tokens}, but it scheduled {sorted(sampling)} "
                         f"to sample and forked {sorted(born)}")
    for t in step.tokens:
        _check_token_ids([t.token_id], trace.model.vocab_size, f"{where}: token of sequence {t.seq_id}")
        if t.logits is not None:
            _check_logits(trace, t.logits, f"{where}: logits of sequence {t.seq_id}")
        if t.lens is not None:
            _check_lens(trace, t.lens, f"{where}: logit lens of sequence {t.seq_id}")
    check_kv(trace, step.index, step.kv)
    _check_tables_agree(step, where)  # after check_kv: it reads the snapshot's tables


def _check_tables_agree(step: StepRecord, where: str) -> None:
    """A scheduled sequence's block table (as the model ran it: the attention overlay maps a
    query's mass to blocks by it) and its table in the step's KV snapshot (the grid's owners,
    the block tables panel) are one table: the snapshot's, taken at the step's end, starts
    with the one the step ran with. (A sequence that finished or was pruned holds none then.)"""
    if not step.schedule.scheduled or not step.kv.table_seq_ids.numel():
        return
    tables = step.kv.block_tables()
    for x in step.schedule.scheduled:
        held = tables.get(x.seq_id)
        if held is not None and held[: len(x.block_table)] != x.block_table:
            raise TraceError(f"{where}: sequence {x.seq_id} ran with block table {x.block_table[:10]}, but the step's "
                             f"KV snapshot gives it {held[:10]}")


def _check_causes(trace: Trace, step: StepRecord, where: str) -> None:
    """Each cause names a sequence where it applies (a wait a waiting one, a preemption a
    preempted one, ...), at most once, and blocks, positions and steps that can be."""
    s, nb, bs = step.schedule, trace.engine.num_blocks, trace.engine.block_size
    scheduled = {x.seq_id for x in s.scheduled}
    admitted = set(s.running) & {p.seq_id for p in s.prefix} if s.chunks else set()  # running, admitted in the step
    for name, records, allowed, among in (
        ("waits", s.waits, set(s.waiting), "its waiting sequences"),
        ("preemptions", s.preemptions, set(s.preempted), "its preempted sequences"),
        ("chunks", s.chunks, scheduled | admitted, "its scheduled sequences and those it admitted"),
        ("prefix", s.prefix, set(trace.sequences), "the trace's sequences"),
    ):
        ids = [r.seq_id for r in records]
        if len(set(ids)) != len(ids) or not set(ids) <= allowed:
            raise TraceError(f"{where}: the causes in {name} name sequences {ids[:10]}, which must be distinct and "
                             f"among {among}")
    waiting = set(s.waiting)  # a set: a step may hold 100,000 waits, each naming the queue's head
    for w in s.waits:
        if not set(w.by) <= scheduled or (w.head is not None and w.head not in waiting) or max(w.needs, w.free) > nb:
            raise TraceError(f"{where}: the wait of sequence {w.seq_id} names sequences not scheduled or waiting, "
                             f"or more than the pool's {nb} blocks")
    for p in s.preemptions:
        if p.needer not in trace.sequences or p.position >= MAX_TOKENS:
            raise TraceError(f"{where}: the preemption of sequence {p.seq_id} names no sequence or position of the trace")
    # A beam search is admitted whole, its beams side by side: a beam admitted after the budget
    # ran out computes nothing in its step, runs all the same, and its chunk says the budget
    # left it 0 tokens (Scheduler._take). Such a chunk, and only such a chunk, names a sequence
    # the step does not schedule: one it admitted (its prefix lookup) and runs.
    admitted_idle = admitted - scheduled
    for c in s.chunks:
        if c.budget_left >= c.remaining:
            raise TraceError(f"{where}: the chunk of sequence {c.seq_id} had the budget for all its {c.remaining} tokens")
        if (c.budget_left == 0) != (c.seq_id in admitted_idle):
            raise TraceError(f"{where}: the chunk of sequence {c.seq_id} leaves it {c.budget_left} tokens; a chunk leaves 0 "
                             "exactly to a sequence the step admitted and runs without computing any")
    for p in s.prefix:
        full = p.miss_block if p.miss_block is not None else len(p.hit_blocks)
        if (p.hit_blocks and max(p.hit_blocks) >= nb) or full < len(p.hit_blocks) or full * bs >= MAX_TOKENS \
                or (p.differs_at is not None and not full * bs <= p.differs_at < (full + 1) * bs) \
                or (p.evicted_step is not None and p.evicted_step > step.engine_step) \
                or (p.evicted_for is not None and p.evicted_for not in trace.sequences):
            raise TraceError(f"{where}: the prefix-cache lookup of sequence {p.seq_id} names blocks outside the pool, "
                             "a position outside its missed block, a later step or an unknown sequence")
    for e in s.evictions:
        if e.block_id >= nb or e.engine_step > step.engine_step or e.for_seq not in trace.sequences:
            raise TraceError(f"{where}: an eviction names block {e.block_id} (the pool has {nb}), a later step "
                             f"{e.engine_step} or sequence {e.for_seq}, not one of the trace")


def _check_logits(trace: Trace, g: LogitsSummary, where: str) -> None:
    k = len(g.top_ids)
    if not 1 <= k <= trace.model.vocab_size or {len(g.top_texts), len(g.top_probs), len(g.top_sampling_probs)} != {k}:
        raise TraceError(f"{where}: top_ids, top_texts, top_probs and top_sampling_probs must have the same length, "
                         "1 to the vocabulary size")
    _check_token_ids(g.top_ids, trace.model.vocab_size, f"{where}: top_ids")
    if g.sampled_rank >= trace.model.vocab_size:
        raise TraceError(f"{where}: sampled_rank {g.sampled_rank} is past the vocabulary")


def _check_lens(trace: Trace, lens: LogitLens, where: str) -> None:
    layers = len(lens.top_ids)
    rows = [len(row) for table in (lens.top_ids, lens.top_texts, lens.top_probs) for row in table]
    if not 1 <= layers <= trace.model.num_layers or len(rows) != 3 * layers or not 1 <= min(rows) == max(rows):
        raise TraceError(f"{where}: top_ids, top_texts and top_probs must be [layers][k] alike, with 1 to "
                         f"{trace.model.num_layers} layers and k >= 1")
    for row in lens.top_ids:
        _check_token_ids(row, trace.model.vocab_size, f"{where}: top_ids")


def _check_events(trace: Trace) -> None:
    last = 0
    for e in trace.events:
        where = f"event {e.kind!r} before step {e.step}"
        if e.step > len(trace.steps) or e.step < last:
            raise TraceError(f"{where}: past the trace's {len(trace.steps)} steps, or before the event ahead of it")
        last = e.step
        # A drop is of the whole trace's capture: it, and only it, says what, and names no sequence.
        if (e.kind == "drop") != (e.what is not None):
            raise TraceError(f"{where}: a drop event, and only one, says what was dropped")
        if e.kind == "drop" and e.seq_id is not None:
            raise TraceError(f"{where}: a drop event names no sequence, not {e.seq_id}")
        if e.kind != "drop" and (e.seq_id is None or e.seq_id not in trace.sequences):
            raise TraceError(f"{where}: names no sequence of the trace")
        if (e.kind == "fork") != (e.fork is not None):
            raise TraceError(f"{where}: a fork event, and only one, carries its fork")
        if e.fork is not None:
            _check_fork(trace, e.fork, e.seq_id, where)
    _check_once_events(trace)
    _check_lineage(trace)


def _check_once_events(trace: Trace) -> None:
    """A sequence's arrival, and its end by a beam search, are recorded twice: as its
    added_step (pruned_step), which the views draw, and as its "add" ("prune") event, by which
    a replay adds the request. One event each, at that step, and at most one "abort": a file of
    4 requests holding 20,000 "add" events of one was replayed as 20,004 requests, past the
    limits the server puts on a replay's requests (which count the sequences)."""
    once: dict[str, dict[int, int]] = {"add": {}, "prune": {}, "abort": {}}  # kind -> {seq_id: step}
    for e in trace.events:
        if e.kind in once and e.seq_id is not None:
            if e.seq_id in once[e.kind]:
                raise TraceError(f"event {e.kind!r} before step {e.step}: sequence {e.seq_id} has one already")
            once[e.kind][e.seq_id] = e.step
    seqs = trace.sequences.items()
    if once["add"] != {seq_id: seq.added_step for seq_id, seq in seqs}:
        raise TraceError("each sequence has one 'add' event, at its added_step, and no 'add' event names another")
    if once["prune"] != {seq_id: seq.pruned_step for seq_id, seq in seqs if seq.pruned_step is not None}:
        raise TraceError("each pruned sequence has one 'prune' event, at its pruned_step, and no other sequence has one")


def _check_lineage(trace: Trace) -> None:
    """A fork is recorded twice: as its sequence's parent_id, fork_position and fork_cause (which
    the views draw) and as its fork event (which a replay makes again). Both must say the same,
    once for each fork, and the fork holds its parent's tokens up to the fork position: else
    the Branch tab showed one lineage and a replay made another."""
    forks = trace.forks()
    by_child = {f.child_id: f for f in forks}
    children = {seq_id for seq_id, seq in trace.sequences.items() if seq.parent_id is not None}
    if len(by_child) != len(forks) or by_child.keys() != children:
        raise TraceError(f"the fork events make sequences {sorted(by_child)[:10]}, the sequences with a parent are "
                         f"{sorted(children)[:10]}: each fork must have one fork event, and only a fork")
    for child_id, fork in by_child.items():
        child = trace.sequences[child_id]
        if (fork.parent_id, fork.position, fork.cause) != (child.parent_id, child.fork_position, child.fork_cause):
            raise TraceError(f"sequence {child_id}: its parent, fork position and cause ({child.parent_id}, "
                             f"{child.fork_position}, {child.fork_cause}) disagree with its fork event's ({fork.parent_id}, "
                             f"{fork.position}, {fork.cause})")
        # Sliced, never joined whole: a parent of 100,000 tokens with as many forks would cost
        # 10**10 copies. The length first, so the slices are at most the child's prompt long.
        parent, inherited = trace.sequences[fork.parent_id], child.prompt_ids[: fork.position]
        from_prompt = parent.prompt_ids[: fork.position]
        if len(inherited) < fork.position or inherited != from_prompt + parent.output_ids[: fork.position - len(from_prompt)]:
            raise TraceError(f"sequence {child_id}: a fork of sequence {fork.parent_id} at position {fork.position} "
                             "does not start with that sequence's tokens up to there")


def _check_fork(trace: Trace, fork: ForkRecord, seq_id: int, where: str) -> None:
    """A fork names its child (the event's sequence) and its parent, forced tokens with a text
    each, and blocks of the pool; a copy moves at most a block's slots between two blocks."""
    nb, bs = trace.engine.num_blocks, trace.engine.block_size
    if fork.child_id != seq_id or fork.parent_id not in trace.sequences or fork.parent_id == fork.child_id:
        raise TraceError(f"{where}: the fork must name the event's sequence as its child and another as its parent")
    if not fork.forced_ids or len(fork.forced_texts) != len(fork.forced_ids):
        raise TraceError(f"{where}: a fork forces at least one token, each with its text")
    _check_token_ids(fork.forced_ids, trace.model.vocab_size, f"{where}: forced_ids")
    blocks = fork.shared_blocks + ([fork.copy.src_block, fork.copy.dst_block] if fork.copy else [])
    if blocks and max(blocks) >= nb:
        raise TraceError(f"{where}: names blocks outside 0..{nb - 1}")
    if fork.copy is not None and (fork.copy.num_slots > bs or fork.copy.src_block == fork.copy.dst_block):
        raise TraceError(f"{where}: a copy on write moves 1..{bs} slots between two different blocks")


def _check_token_ids(ids: list[int], vocab_size: int, where: str) -> None:
    if ids and max(ids) >= vocab_size:  # the codec checked they are >= 0
        raise TraceError(f"{where}: token id {max(ids)} is past the vocabulary of {vocab_size}")


def _check_seq_ids(trace: Trace, seq_ids: list[int], where: str) -> None:
    if len(set(seq_ids)) != len(seq_ids) or not all(i in trace.sequences for i in seq_ids):
        raise TraceError(f"{where}: sequence ids {seq_ids[:10]} must be distinct sequences of the trace")
