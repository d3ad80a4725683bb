"""A seeded random recording (no tests here): tests/test_trace_recordings_fuzz.py records many
and checks that each trace validates, saves and loads.

fuzz_run(seed) draws an engine (block size, a pool from barely enough to roomy, a small token
budget that chunks prompts, few or many seats, a max_model_len near the prompts, async
scheduling on or off, the prefix cache mostly on) and a run of
it: greedy, sampled, n > 1 and beam-search requests sharing prefixes, stop tokens and
max_tokens, the user's forks and aborts mid-run, requests added mid-run, stepping and runs to
breakpoints, attention and the logit lens for some requests. It returns the session and what
the run exercised (Features), so a test can assert that its seeds still cover everything.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

from conftest import make_hf_model

from inspector import CapturePolicy, DebugSession
from inspector.debug.breakpoints import CopyOnWrite, Preemption, PrefixCacheHit, SequenceFinished
from minillama import ConfigError, EngineConfig, InvalidRequestError, LLMEngine, SamplingParams

VOCAB = 256


@cache
def tiny_model():
    return make_hf_model("gqa-tied-llama3")


@dataclass
class Features:
    rules: Counter = field(default_factory=Counter)  # preemption rule -> count
    prefix_hits: int = 0
    chunks: int = 0
    idle_chunks: int = 0  # chunks that left an admitted beam 0 tokens
    forks: Counter = field(default_factory=Counter)  # fork cause -> count
    prunes: int = 0
    aborts: int = 0
    finishes: Counter = field(default_factory=Counter)  # finish reason -> count
    lens: int = 0
    attention: int = 0
    steps: int = 0
    sequences: int = 0
    overlapped: int = 0  # runs with async scheduling on

    def add(self, other: Features) -> None:
        for name in ("rules", "forks", "finishes"):
            getattr(self, name).update(getattr(other, name))
        for name in ("prefix_hits", "chunks", "idle_chunks", "prunes", "aborts", "lens", "attention", "steps", "sequences", "overlapped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _params(rng: random.Random, max_tokens_cap: int) -> SamplingParams:
    kind = rng.choice(["greedy", "greedy", "sampled", "sampled", "n", "beam", "beam"])
    max_tokens = rng.randint(1, max(1, max_tokens_cap))
    stop = tuple(rng.sample(range(VOCAB), rng.choice([0, 0, 8, 40]))) if rng.random() < 0.4 else ()
    if kind == "greedy":
        return SamplingParams(temperature=0, max_tokens=max_tokens, stop_token_ids=stop)
    sampled = dict(temperature=rng.choice([0.5, 1.0, 1.5]), top_p=rng.choice([1.0, 0.9, 0.5]),
                   top_k=rng.choice([0, 0, 5, 40]), seed=rng.choice([None, rng.randrange(1000)]))
    if kind == "sampled":
        return SamplingParams(max_tokens=max_tokens, stop_token_ids=stop, **sampled)
    if kind == "n":
        return SamplingParams(max_tokens=max_tokens, stop_token_ids=stop, n=rng.randint(2, 4), **sampled)
    return SamplingParams(max_tokens=max_tokens, stop_token_ids=stop, beam_width=rng.randint(2, 4),
                          length_penalty=rng.choice([1.0, 0.0, -0.5, 2.0]),
                          early_stopping=rng.choice([False, True, "never"]))


def _engine(rng: random.Random, longest: int) -> LLMEngine:
    bs = rng.choice([4, 8, 16])
    max_model_len = longest + rng.randint(1, 24)
    per_seq = -(-max_model_len // bs)
    num_blocks = per_seq + rng.choice([0, 0, 1, 2, 4, 8, 16, 40])
    budget = rng.choice([4, 8, 16, 32, 64, 4096])
    seqs = rng.choice([1, 2, 3, 4, 8, 256])
    for _ in range(20):
        try:
            return LLMEngine.from_hf_model(tiny_model(), EngineConfig(
                device="cpu", dtype="float32", block_size=bs, num_kv_blocks=num_blocks, max_model_len=max_model_len,
                max_num_batched_tokens=budget, max_num_seqs=seqs, seed=rng.randrange(100),
                async_scheduling=rng.choice(["auto", "on"]), enable_prefix_caching=rng.random() < 0.9))
        except ConfigError:
            budget, seqs, num_blocks = budget * 2, max(seqs, 4), num_blocks + 2
    raise AssertionError("no engine config accepted")


def fuzz_run(seed: int, steps: int = 30) -> tuple[DebugSession, Features]:
    rng = random.Random(seed)
    prefixes = [[rng.randrange(VOCAB) for _ in range(rng.randint(1, 24))] for _ in range(rng.randint(1, 3))]

    def prompt() -> list[int]:
        p = list(rng.choice(prefixes)) if rng.random() < 0.7 else []
        return (p + [rng.randrange(VOCAB) for _ in range(rng.randint(0 if p else 1, 12))])[:40]

    longest = 40
    engine = _engine(rng, rng.randint(8, longest))
    max_len = engine.config.max_model_len
    policy = CapturePolicy(attention=rng.random() < 0.7, attention_requests=tuple(rng.sample(range(6), rng.randint(0, 3))),
                           logit_lens=rng.random() < 0.3, top_k=rng.choice([1, 5, 10]))
    session = DebugSession(engine, policy)
    features = Features()
    live: list[int] = []

    def add() -> None:
        p = prompt()
        try:
            live.append(session.add(p, _params(rng, max(1, max_len - len(p) + rng.randint(-2, 4)))))
        except InvalidRequestError:
            pass

    for _ in range(rng.randint(1, 5)):
        add()
    for _ in range(rng.randint(1, steps)):
        action = rng.random()
        if action < 0.35:
            if session.step() is None:
                add()
        elif action < 0.5:
            session.run(max_steps=rng.randint(1, 6))
        elif action < 0.6:
            until = rng.choice([Preemption(), PrefixCacheHit(), CopyOnWrite(), SequenceFinished()])
            session.run(until=[until], max_steps=rng.randint(1, 20))
        elif action < 0.75:
            add()
        elif action < 0.9 and engine.sequences:
            seq_id = rng.choice(sorted(engine.sequences))
            try:
                info = engine.request(seq_id)
                total = len(info.prompt_token_ids) + len(info.output_token_ids)
                params = None if rng.random() < 0.6 else _params(rng, 6)
                session.fork(seq_id, rng.randint(1, total), [rng.randrange(VOCAB) for _ in range(rng.randint(1, 3))],
                             params)
            except (InvalidRequestError, KeyError):
                pass
        elif engine.sequences:
            seq_id = rng.choice(sorted(engine.sequences))
            session.abort(seq_id)
            features.aborts += 1
    assert session.run().finished, f"fuzz_run({seed}): the run stopped short of the end"
    assert not engine.has_unfinished()
    trace = session.trace
    for step in trace.steps:
        s = step.schedule
        features.rules.update(p.rule for p in s.preemptions)
        features.prefix_hits += sum(1 for x in s.scheduled if x.num_cached_tokens)
        features.chunks += len(s.chunks)
        features.idle_chunks += sum(1 for c in s.chunks if c.budget_left == 0)
        features.lens += sum(1 for t in step.tokens if t.lens is not None)
        features.attention += len(step.attention_seqs)
    for seq in trace.sequences.values():
        if seq.fork_cause is not None:
            features.forks[seq.fork_cause] += 1
        features.prunes += seq.pruned_step is not None
        features.finishes[seq.finish_reason] += 1
    features.steps, features.sequences = len(trace.steps), len(trace.sequences)
    features.overlapped = int(engine.config.async_scheduling == "on")
    return session, features
