"""LLMEngine: requests in, one scheduler iteration (one forward pass) per step, tokens out.

    engine = LLMEngine.from_pretrained()           # the embedded model; or a model directory
    rid = engine.add_request("Hello", SamplingParams(max_tokens=20))
    while engine.has_unfinished():
        for out in engine.step():
            print(out.request_id, out.text_delta)

A step: the scheduler picks a batch -> the model runner builds the flat tensors and runs the
model (each layer writes its new K/V into the paged cache and attends) -> the sampler draws one
token per sequence that finished its prompt -> sequences that hit EOS or their length limit
finish and give back their KV blocks. Observers (minillama.observe) see every stage. With async
scheduling (on CUDA by default; minillama/engine/in_flight.py) the host plans and launches step
N+1 before it reads step N's tokens, so the GPU never waits for the host between steps.
fork() continues a request from any of its tokens with other tokens, sharing its KV blocks.
SamplingParams(n=k) draws k samples of one prompt: one prefill, then k sequences sharing its blocks.
SamplingParams(beam_width=k) runs a beam search (minillama/engine/beam_search.py) on the same
forks: its beams share their blocks, and a beam no continuation keeps is pruned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from minillama.config import EngineConfig, FieldReader, ModelConfig
from minillama.engine.beam_search import BeamGroup
from minillama.engine.beam_steps import BeamSearchSteps
from minillama.engine.block_manager import BlockManager
from minillama.engine.block_pool import BlockPoolSnapshot, cached_flags, snapshot_block_pool
from minillama.engine.chat_template import render_chat_prompt
from minillama.engine.detokenizer import IncrementalDetokenizer
from minillama.engine.in_flight import InFlightStep, placeholder
from minillama.engine.model_runner import ModelRunner, kv_block_bytes
from minillama.engine.outputs import (
    CopyOnWrite,
    EngineStats,
    ForkCause,
    ForkEvent,
    RequestOutput,
    StepResult,
    StepTimings,
)
from minillama.engine.prompts import check_text, check_token_ids, first_outside_vocabulary
from minillama.engine.read_checks import check_key_indices, check_streams
from minillama.engine.scheduler import Scheduler
from minillama.engine.sequence import RequestInfo, Sequence
from minillama.errors import ConfigError, InvalidRequestError, ObserverError, UnknownRequestError
from minillama.generation_config import warn_unapplied_settings
from minillama.loader import (
    build_model,
    eos_token_ids,
    in_memory,
    init_random_weights,
    load_hf_weights,
    load_tokenizer,
    read_safetensors,
    resolve_model_dir,
    safetensors_files,
)
from minillama.model.llama import LlamaForCausalLM
from minillama.model.sampler import Sampler
from minillama.observe import Observer
from minillama.ops.select import select_ops
from minillama.ops.table import AttentionOps
from minillama.parallel.shard import Shard, check_splits
from minillama.parallel.workers import ModelSource, ParallelRunner, RandomWeights, TensorParallelGroup, load_rank_model
from minillama.sampling_params import SamplingParams
from minillama.values import MAX_COUNT, as_flag, is_int

_T = TypeVar("_T")  # what an engine call returns, carried by ObserverError


class LLMEngine(BeamSearchSteps):
    def __init__(
        self,
        model: LlamaForCausalLM,
        config: EngineConfig,
        tokenizer=None,
        eos_token_ids: tuple[int, ...] = (),
        model_dir: Path | None = None,
        parallel: TensorParallelGroup | None = None,
    ):
        """Wrap an already built model; most callers want from_pretrained or from_config. With
        `parallel` (from_pretrained with tensor_parallel_size > 1), `model` is rank 0's part and
        the group's workers hold the others."""
        config.validate()
        self.device = next(model.parameters()).device
        config = config.for_device(self.device)  # the batch budgets it leaves to the device
        self.config = config
        self.model_config: ModelConfig = model.config
        self.model_dir = model_dir
        self.dtype = next(model.parameters()).dtype
        self.max_model_len = _max_model_len(self.model_config, config)
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        runner_args = (model, self.model_config, config, self.device, self.dtype, self.max_model_len)
        self.runner = ModelRunner(*runner_args) if parallel is None else ParallelRunner(parallel, *runner_args)
        self.block_manager = BlockManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens)
        self.sampler = Sampler(self.device, config.seed)
        self._no_tokens = torch.empty(0, dtype=torch.long, device=self.device)  # a step nobody samples in
        self.sequences: dict[int, Sequence] = {}  # every request not yet collected
        self._request_ids = itertools.count()  # request ids: 0, 1, 2, ... per engine
        self._generators: dict[int, torch.Generator] = {}
        self._detokenizers: dict[int, IncrementalDetokenizer] = {}
        # Parallel sampling: leader id -> the ids of its samples so far, in sample order; and
        # the leaders whose prompt has not sampled yet (the step checks this one; empty, it costs
        # one truth test).
        self._samples: dict[int, tuple[int, ...]] = {}
        self._pending_samples: set[int] = set()
        # Copies on write (src block, dst block, slots) that forks asked for, not made yet.
        self._pending_copies: list[tuple[int, int, int]] = []
        # Beam search: request id -> its search, until forgotten; and the searches still running
        # (the step checks this one: empty, it costs one truth test).
        self._beam_groups: dict[int, BeamGroup] = {}
        self._searching: dict[int, BeamGroup] = {}
        self.observers: list[Observer] = []
        self._observer_failure: tuple[Observer, str, Exception] | None = None  # _notify: the first this call
        self._running: str | None = None  # the call whose observer hooks are running now (step, fork): _exclusive
        self.step_count = 0
        self.stats = EngineStats()
        # With observers on CUDA: events timing the forward and the sampler, made once.
        self._gpu_timer = _GpuTimer(self.device) if self.device.type == "cuda" else None
        # Async scheduling (in_flight.py): the step launched and not read yet; the outputs of one
        # read between step() calls, for the next call; whether the next call must read before
        # it plans (a sequence reaches its length limit in the step in flight); when a step was
        # last read (a step's time in EngineStats runs from there, or from its launch if later).
        self.async_scheduling = config.resolved_async_scheduling(self.device)
        self._in_flight: InFlightStep | None = None
        self._ready: list[RequestOutput] = []
        self._must_read = False
        self._last_read_at = 0.0

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, config: EngineConfig | None = None) -> LLMEngine:
        """Load a Hugging Face Llama directory, or the embedded model when `model` is None."""
        config = _engine_config(config)
        config.validate()
        path = resolve_model_dir(model)
        model_config = ModelConfig.from_file(path / "config.json")
        files = safetensors_files(path)  # fail on missing or pickled weights before the slow part
        has_tokenizer = any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
        tokenizer = load_tokenizer(path) if has_tokenizer else None
        eos = eos_token_ids(path, model_config)
        if config.tensor_parallel_size > 1:
            return cls._split(path, model_config, config, tokenizer, eos, path)
        llm = cls._build(model_config, config)
        load_hf_weights(llm, read_safetensors(files))
        return cls(llm, config, tokenizer, eos, model_dir=path)

    @classmethod
    def _split(cls, source: ModelSource, model_config: ModelConfig, config: EngineConfig, tokenizer,
               eos: tuple[int, ...], model_dir: Path | None) -> LLMEngine:
        """An engine split over tensor_parallel_size processes (minillama/parallel/): the
        workers start first and read (or draw) their slices while this process makes rank 0's."""
        device = config.resolved_device()
        check_splits(model_config, config.tensor_parallel_size, device)
        ops = select_ops(device, config.resolved_dtype(device), model_config, config.fused_ops, config.attention)
        _check_block_size(ops.attention, config.block_size)
        max_model_len = _max_model_len(model_config, config)
        group = TensorParallelGroup.start(source, config, max_model_len)
        try:
            group.share_threads(config.tensor_parallel_size)
            shard = Shard(0, config.tensor_parallel_size)
            llm = load_rank_model(source, model_config, config, shard, max_model_len)
            return cls(llm, config, tokenizer, eos, model_dir=model_dir, parallel=group)
        except BaseException:
            group.close()
            raise

    @classmethod
    def from_config(cls, model_config: ModelConfig, config: EngineConfig | None = None, seed: int = 0) -> LLMEngine:
        """A model of the given shape with random weights (benchmarks; no tokenizer). Split over
        tensor_parallel_size processes, each rank draws its own slices (RandomWeights)."""
        if not isinstance(model_config, ModelConfig):  # a dict would fail deep in the model's construction
            raise ConfigError(f"from_config takes a ModelConfig (ModelConfig.from_dict(settings)), not {type(model_config).__name__}")
        if not is_int(seed) or not 0 <= seed < 2**63:  # EngineConfig.seed's rule; torch would take -1, not "1"
            raise ConfigError(f"seed (of the random weights) must be an integer in [0, 2**63), got {seed!r}")
        config = _engine_config(config)
        config.validate()
        if config.tensor_parallel_size > 1:
            return cls._split(RandomWeights(model_config, seed), model_config, config, None,
                              model_config.eos_token_ids, None)
        llm = cls._build(model_config, config)
        init_random_weights(llm, seed)
        return cls(llm, config, None, model_config.eos_token_ids)

    @classmethod
    def from_hf_model(cls, hf_model, config: EngineConfig | None = None, tokenizer=None) -> LLMEngine:
        """The same weights as a transformers LlamaForCausalLM already in memory (benchmarks
        and tests run both side by side)."""
        if not isinstance(hf_model, torch.nn.Module) or not hasattr(getattr(hf_model, "config", None), "to_dict"):
            raise ConfigError(f"from_hf_model takes a transformers LlamaForCausalLM, not {type(hf_model).__name__}")
        config = _engine_config(config)
        config.validate()
        model_config = ModelConfig.from_dict(hf_model.config.to_dict())
        llm = cls._build(model_config, config)
        load_hf_weights(llm, in_memory(hf_model.state_dict().items(), "the transformers model"))
        # generate stops at the generation config's ids (read from generation_config.json, or
        # made from the config when the model was built in memory), which may differ from
        # config.json's: Llama-3 lists three there and one in config.json.
        generation = getattr(hf_model, "generation_config", None)
        if generation is not None:  # its logits processors, named as from_pretrained names them
            warn_unapplied_settings(generation.to_dict(), "the model's generation_config")
        eos = model_config.eos_token_ids if generation is None else FieldReader(
            {"eos_token_id": generation.eos_token_id}, "the model's generation_config",
        ).token_ids("eos_token_id", model_config.vocab_size)
        return cls(llm, config, tokenizer, eos)

    @classmethod
    def sharing_weights(cls, base: LLMEngine, config: EngineConfig) -> LLMEngine:
        """A new engine over `base`'s model: its own scheduler, block manager, KV pool and
        sampler, no copy of the weights. The web UI gives each browser session one.

        The model's device, dtype and attention backend are base's (config's are ignored), and
        its context is at most base's. Engines sharing a model must not step at the same time."""
        if not isinstance(base, LLMEngine):
            raise ConfigError(f"sharing_weights shares an LLMEngine's weights, not a {type(base).__name__}'s")
        config = _engine_config(config)
        base._check_whole_model("engines sharing the weights (the web UI's sessions)")
        model = base.runner.model
        config = dataclasses.replace(
            config, device=base.config.device, dtype=base.config.dtype, attention=base.config.attention,
            max_model_len=min(config.max_model_len or base.max_model_len, base.max_model_len),
        )
        config.validate()
        _check_block_size(model.ops.attention, config.block_size)
        return cls(model, config, base.tokenizer, tuple(base.eos_token_ids), base.model_dir)

    @classmethod
    def reference_copy(cls, base: LLMEngine) -> LLMEngine:
        """base's model again, in float32 on base's device, every call served by the readable
        reference ops (minillama/ops/reference, attention included) and run eagerly: the
        yardstick a fidelity check replays a run against (inspector's replay), to see how far
        base's fast kernels and its dtype move the logits. Its weights are read again from
        base's checkpoint (so a bf16 base is compared with the float32 weights, not with its own
        rounding of them), or widened from base's when it has none (random weights): 4 bytes a
        parameter. Its own KV pool is one block; replays make engines of their own over it."""
        if not isinstance(base, LLMEngine):
            raise ConfigError(f"reference_copy copies an LLMEngine's model, not a {type(base).__name__}'s")
        config = dataclasses.replace(
            base.config, dtype="float32", attention="reference", fused_ops=False, enforce_eager=True,
            num_kv_blocks=1, max_model_len=base.max_model_len, tensor_parallel_size=1,
        )
        if base.model_dir is not None:
            return cls.from_pretrained(base.model_dir, config)
        base._check_whole_model("a float32 reference copy of random weights")
        config.validate()
        model = cls._build(base.model_config, config)
        weights = dict(base.runner.model.named_parameters())
        with torch.no_grad():
            for name, param in model.named_parameters():  # the same names: the ops are not parameters
                param.copy_(weights[name])
        return cls(model, config, base.tokenizer, tuple(base.eos_token_ids), base.model_dir)

    @staticmethod
    def _build(model_config: ModelConfig, config: EngineConfig) -> LlamaForCausalLM:
        if config.tensor_parallel_size > 1:
            raise ConfigError("--tensor-parallel-size > 1 needs the model's source, a directory "
                              "(LLMEngine.from_pretrained) or a shape (from_config): each rank reads or draws its own slices")
        device = config.resolved_device()
        dtype = config.resolved_dtype(device)
        ops = select_ops(device, dtype, model_config, config.fused_ops, config.attention)
        _check_block_size(ops.attention, config.block_size)
        return build_model(model_config, _max_model_len(model_config, config), ops, device, dtype)

    # -- requests --------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of a text prompt, wrapped in the model's chat template when `chat`.
        InvalidRequestError for what is no text (check_text): the tokenizer would raise its own
        TypeError on a lone surrogate, naming neither the prompt nor the character."""
        check_text(prompt)
        as_flag(chat, "chat", InvalidRequestError)
        if self.tokenizer is None:
            raise InvalidRequestError("this model has no tokenizer: pass the prompt as token ids")
        if chat:
            prompt = render_chat_prompt(self.tokenizer, prompt)
            return self._within_vocabulary(self.tokenizer.encode(prompt, add_special_tokens=False))
        return self._within_vocabulary(self.tokenizer.encode(prompt))

    def _within_vocabulary(self, token_ids: list[int]) -> list[int]:
        """The tokenizer's ids, refused if one is past the model's embeddings: a tokenizer with
        more tokens than config.json's vocab_size would otherwise fail the step that embeds it,
        and every step after it, with the other requests in the batch."""
        vocab = self.model_config.vocab_size
        position = first_outside_vocabulary(token_ids, vocab)
        if position is not None:
            raise InvalidRequestError(
                f"the tokenizer gives token id {token_ids[position]} (at position {position}), outside this model's "
                f"vocabulary of {vocab}: its tokenizer and config.json's vocab_size disagree"
            )
        return token_ids

    def add_request(
        self, prompt: str | list[int], params: SamplingParams | None = None, chat: bool = False
    ) -> int:
        """Queue a request; returns its id. Raises InvalidRequestError, changing nothing, when
        the prompt or the parameters are bad.

        With params.n = k > 1 the id is sample 0's (the leader's). Its prompt is computed once:
        in the step that samples its first token, samples 1..k-1 draw theirs from the same
        logits and become new requests sharing the prompt's blocks (samples(id) lists them).
        Each then runs on its own: aborting the leader does not abort its samples.

        With params.beam_width = k > 1 the id is the beam search's (its first beam's, the
        prompt's): beams(id) lists its beams, and abort(id) stops the whole search."""
        self._check_not_running("add_request")
        params = SamplingParams() if params is None else params
        token_ids = self.check_request(prompt, params, chat)
        seq = Sequence(next(self._request_ids), token_ids, params)
        self._queue(seq)
        if params.n > 1:
            self._samples[seq.seq_id] = (seq.seq_id,)
            self._pending_samples.add(seq.seq_id)
        return seq.seq_id

    def samples(self, leader_id: int) -> tuple[int, ...]:
        """The ids of request `leader_id`'s samples in sample order, the leader first: all n once
        its prompt has sampled, only the leader before. (leader_id,) for an n = 1 request."""
        self._check_held(leader_id)
        return self._samples.get(leader_id, (leader_id,))

    def beams(self, request_id: int) -> tuple[int, ...]:
        """The ids of beam search `request_id`'s beams: while it runs, its live beams, best
        first; once it is done, its results, the finished beams best first (beam_width of them,
        fewer if it was aborted), whose request(id).beam_score is their score. Every beam is a
        request of its own (its output: all the tokens it generated); the pruned ones finish
        with reason "pruned". (request_id,) for a request without beam search."""
        self._check_held(request_id)
        group = self._beam_groups.get(request_id)
        if group is None:
            return (request_id,)
        return group.results() if group.done else tuple(beam.seq_id for beam in group.beams)

    def fork(self, seq_id: int, num_tokens: int, forced_token_ids: list[int],
             params: SamplingParams | None = None) -> int:
        """A new request that continues request `seq_id` from its first `num_tokens` tokens
        (prompt and output) with `forced_token_ids` instead of what came next ("what if it had
        picked the other token?"); returns its id. Its prompt is those tokens, prefix and forced
        ones; params default to the parent's (with n = 1: a fork is one sequence).

        While the parent holds its K/V blocks, the fork shares them (BlockManager.fork), and its
        first step computes only the forced tokens (and any of the prefix the parent had not
        computed yet). Once the parent's blocks are gone (finished, preempted) or when no block
        is free for the copy, it queues like a new request, and the prefix cache serves what it
        still holds. request(id) tells which (fork_prefix). With params asking for beam_width
        k > 1 (a beam's own, by default) the fork starts a beam search of its own from there.
        Raises InvalidRequestError, changing nothing, on bad input."""
        with self._exclusive("fork"):
            return self._fork(seq_id, num_tokens, forced_token_ids, params)

    def _fork(self, seq_id: int, num_tokens: int, forced_token_ids: list[int], params: SamplingParams | None) -> int:
        self._settle()  # the parent's last token must be real, not a placeholder
        parent = self.sequences.get(seq_id) if is_int(seq_id) else None
        if parent is None:
            raise InvalidRequestError(f"no request {seq_id!r} to fork (unknown, or finished and collected)")
        if not (is_int(num_tokens) and 1 <= num_tokens <= parent.num_tokens):
            raise InvalidRequestError(
                f"num_tokens must be an integer in [1, {parent.num_tokens}] (request {seq_id}'s tokens), not {num_tokens!r}"
            )
        vocab_size = self.model_config.vocab_size
        if not isinstance(forced_token_ids, (list, tuple)) or not forced_token_ids:
            raise InvalidRequestError("forced_token_ids must be a non-empty list of token ids")
        if not all(_is_token_id(t, vocab_size) for t in forced_token_ids):
            raise InvalidRequestError(f"forced_token_ids must be token ids in [0, {vocab_size}): {forced_token_ids!r}")
        if params is None:  # the parent's, as one sequence: a sample's params ask for its request's n
            params = dataclasses.replace(parent.params, n=1)
        self._check_params(params)
        if params.n > 1:
            raise InvalidRequestError(f"a fork continues one sequence: n must be 1, got {params.n} (fork again for more)")
        # The parent's tokens were checked when they came; the forced ones above.
        token_ids = [*parent.token_ids[:num_tokens], *forced_token_ids]
        self._check_fits(len(token_ids), params, what=f"the fork's prompt ({num_tokens} + {len(forced_token_ids)} forced)")
        seq = Sequence(next(self._request_ids), token_ids, params)
        seq.parent_id, seq.fork_position = parent.seq_id, num_tokens
        shared = bool(parent.block_table and parent.num_computed_tokens) and self._share_prefix(parent, seq)
        self._copy_on_write()
        self._queue(seq)
        self._notify_fork(parent, seq, "user", shared)
        return self._raise_observer_failure(seq.seq_id)

    def _share_prefix(self, parent: Sequence, child: Sequence) -> bool:
        """Give `child` its parent's K/V of its prefix when enough blocks are free (_fork_blocks).
        -> whether it did."""
        if not self.block_manager.can_fork(parent, child):
            return False
        self._fork_blocks(parent, child)
        return True

    def _fork_blocks(self, parent: Sequence, child: Sequence, donor: Sequence | None = None) -> None:
        """Give `child` its parent's K/V of its prefix (BlockManager.fork: full blocks shared,
        the partly used one copied on write, `donor`'s blocks handed over); the caller checked
        that the blocks it needs are free."""
        copy = self.block_manager.fork(parent, child, donor)
        if copy is not None:
            self._pending_copies.append(copy)  # made by _copy_on_write, before anything reads them
        child.fork_prefix = "shared"
        child.copy_on_write = CopyOnWrite(*copy) if copy is not None else None

    def _copy_on_write(self) -> None:
        """Make the copies the forks since the last call asked for, in one kernel. Called once
        the forks of a fork() call, a step's samples or a step's beam searches are all made: their
        sources are held by the sequences that go on, so no block is reused before the copy."""
        if self._pending_copies:
            self.runner.copy_kv_slots(self._pending_copies)
            self._pending_copies = []

    def _notify_fork(self, parent: Sequence, child: Sequence, cause: ForkCause, shared: bool) -> None:
        """Tell the observers about a fork just made (ForkEvent): what it shares, what it copied."""
        if not self.observers:
            return
        position = child.fork_position
        # BlockManager.fork shares the parent's full computed blocks of the prefix: the child's
        # first num_computed_tokens // block_size blocks.
        shared_ids = child.block_table[: child.num_computed_tokens // self.block_manager.block_size] if shared else ()
        event = ForkEvent(child.seq_id, parent.seq_id, position, tuple(child.token_ids[position:]), cause,
                          "shared" if shared else "queued", shared_ids, child.copy_on_write if shared else None)
        self._notify("on_fork", event)

    def _queue(self, seq: Sequence) -> None:
        params = seq.params
        if params.beam_width > 1:  # a beam search: it draws nothing at random
            seq.beam_of = seq.seq_id
            stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_token_ids)
            max_new = min(params.max_tokens, self.max_model_len - seq.num_prompt_tokens)
            self._beam_groups[seq.seq_id] = self._searching[seq.seq_id] = BeamGroup(seq, stop_ids, max_new)
        elif params.seed is not None:
            self._generators[seq.seq_id] = self.sampler.new_generator(params.seed)
        if self.tokenizer is not None:
            self._detokenizers[seq.seq_id] = IncrementalDetokenizer(self.tokenizer, seq.token_ids)
        self.sequences[seq.seq_id] = seq
        self.scheduler.add(seq)

    def check_request(self, prompt: str | list[int], params: SamplingParams, chat: bool = False) -> list[int]:
        """The prompt's token ids if add_request would take the request; raises
        InvalidRequestError naming the problem otherwise. Changes nothing: a caller adding a
        batch checks every request first, so a bad one leaves the batch unqueued."""
        self._check_params(params)
        as_flag(chat, "chat", InvalidRequestError)  # `if chat:` would take "no" or None as a choice
        if isinstance(prompt, str):
            token_ids = self.encode_prompt(prompt, chat)
            if not token_ids:
                raise InvalidRequestError("the prompt encodes to no tokens")
        elif isinstance(prompt, (list, tuple)):
            token_ids = check_token_ids(prompt, self.model_config.vocab_size)
        else:
            hint = " (decode bytes into str first)" if isinstance(prompt, (bytes, bytearray)) else ""
            raise InvalidRequestError(f"a prompt is a string or a list of token ids, not {type(prompt).__name__}{hint}")
        self._check_fits(len(token_ids), params)
        return token_ids

    def _check_params(self, params: SamplingParams) -> None:
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError(f"params must be a SamplingParams or None, not {type(params).__name__}")
        params.validate()
        if not all(_is_token_id(t, self.model_config.vocab_size) for t in params.stop_token_ids):
            raise InvalidRequestError(f"stop_token_ids must be in [0, {self.model_config.vocab_size})")

    def _check_fits(self, num_prompt_tokens: int, params: SamplingParams, what: str = "the prompt") -> None:
        """Refuse a request that could never run: `what` names its prompt in the messages."""
        if params.beam_width > self.config.max_num_seqs:
            raise InvalidRequestError(
                f"beam_width {params.beam_width} exceeds max_num_seqs {self.config.max_num_seqs}: a search's beams run side by side"
            )
        if num_prompt_tokens >= self.max_model_len:
            raise InvalidRequestError(
                f"{what} has {num_prompt_tokens} tokens; this engine's max_model_len is "
                f"{self.max_model_len}, which must also leave room for at least one new token"
            )
        # The K/V of every token but the last sampled one (it is never fed back) must fit.
        longest = min(num_prompt_tokens + params.max_tokens, self.max_model_len) - 1
        bs = self.config.block_size
        # A beam search's beams must fit side by side: a preempted search is admitted whole.
        blocks = (longest + bs - 1) // bs * params.beam_width
        if blocks > self.block_manager.num_blocks:
            beams = f" for each of {params.beam_width} beams" if params.beam_width > 1 else ""
            raise InvalidRequestError(
                f"the request can never fit the KV cache: the K/V of {longest} tokens{beams} need {blocks} blocks of "
                f"{bs}, the cache has {self.block_manager.num_blocks}; lower max_tokens or add KV blocks"
            )

    def abort(self, request_id: int) -> None:
        """Stop a request wherever it is, free its blocks and forget it. The id of any beam of
        a running beam search (its request id too) stops the whole search: every live beam."""
        _check_request_id(request_id)
        self._check_not_running("abort")
        self._settle()  # its last token may still be a placeholder: it ends with the real one
        if self._ready:  # read early, not returned yet: the caller hears nothing more of it
            self._ready = [output for output in self._ready if output.request_id != request_id]
        seq = self.sequences.get(request_id)
        group = self._searching.pop(seq.beam_of, None) if seq is not None and seq.beam_of is not None else None
        if group is not None:
            for beam in group.beams:
                self.scheduler.abort(beam)
            group.beams, group.done = [], True
        elif seq is not None and not seq.is_finished:
            self.scheduler.abort(seq)
        self.forget(request_id)

    def forget(self, request_id: int) -> None:
        """Drop a finished request's bookkeeping once its output has been collected; a beam
        search's request id drops the whole search (every beam it made, pruned ones too).
        InvalidRequestError, changing nothing, for a request still waiting or running (abort
        stops and forgets one): the scheduler would keep it, and the next step, looking it up
        here, would fail, and every step after it, the other requests with it."""
        _check_request_id(request_id)
        self._check_not_running("forget")
        seq = self.sequences.get(request_id)
        if request_id in self._searching or (seq is not None and (not seq.is_finished or seq.beam_of in self._searching)):
            raise InvalidRequestError(f"request {request_id} has not finished: abort({request_id}) stops and forgets it")
        group = self._beam_groups.pop(request_id, None)
        for seq_id in group.members if group is not None else (request_id,):
            self.sequences.pop(seq_id, None)
            self._generators.pop(seq_id, None)
            self._detokenizers.pop(seq_id, None)
        self._samples.pop(request_id, None)
        self._pending_samples.discard(request_id)

    def has_unfinished(self) -> bool:
        """True while a step() call has something to do: requests to run, a step in flight to
        read (async scheduling), or outputs read early to return."""
        return self.scheduler.has_unfinished() or self._in_flight is not None or bool(self._ready)

    def text(self, request_id: int) -> str:
        """The output text of a request so far."""
        self._check_held(request_id)
        detokenizer = self._detokenizers.get(request_id)
        return detokenizer.text if detokenizer else ""

    # -- observers ---------------------------------------------------------------------------------

    def add_observer(self, observer: Observer) -> None:
        """Watch every step from the next one; the engine then steps in order (in_flight.py)."""
        if not isinstance(observer, Observer):
            raise InvalidRequestError(f"an observer is a minillama.Observer (subclass it), not {type(observer).__name__}")
        if any(o is observer for o in self.observers):  # attached twice, it would see (and record) every step twice
            raise InvalidRequestError(f"this {type(observer).__name__} already observes this engine")
        self._settle()
        self.observers.append(observer)
        self._time_collectives()

    def _notify(self, hook: str, *args: object, to: list[Observer] | None = None) -> None:
        """Call `hook` of each observer (of `to`, else all). One that raises is detached at once,
        and the engine goes on with what it was doing: an exception let through mid-step would
        leave the step half-done (sequences scheduled but not run, tokens sampled but not
        returned) and every later step failing. The caller's entry point (step, fork) raises
        ObserverError once it is done (_raise_observer_failure)."""
        for observer in tuple(self.observers if to is None else to):
            if observer not in self.observers:  # detached earlier in this step
                continue
            try:
                getattr(observer, hook)(*args)
            except Exception as error:  # noqa: BLE001 - whatever it was, the observer's, not the engine's
                if observer in self.observers:  # not if it detached itself before it raised
                    self.remove_observer(observer)
                self._observer_failure = self._observer_failure or (observer, hook, error)

    def _raise_observer_failure(self, result: _T) -> _T:
        """`result`, or ObserverError carrying it when an observer failed during this call."""
        if self._observer_failure is None:
            return result
        observer, hook, error = self._observer_failure
        self._observer_failure = None
        raise ObserverError(
            f"observer {type(observer).__name__} raised in {hook} ({type(error).__name__}: {error}); it was detached "
            "and the engine finished the call without it (ObserverError.result holds what the call returned)",
            result,
        ) from error

    @contextlib.contextmanager
    def _exclusive(self, call: str) -> Iterator[None]:
        """Run `call` (step, fork), whose observer hooks may run, refusing the calls that change
        the engine's requests from inside those hooks: a hook that called step() (or generate())
        stepped again in the middle of the step, and again from that step's hook, until Python's
        recursion limit; one that aborted or added a request changed the batch the step was
        running. Refused, InvalidRequestError reaches the hook, which the engine detaches
        (ObserverError), and the step goes on whole."""
        self._check_not_running(call)
        self._running = call
        try:
            yield
        finally:
            self._running = None

    def _check_not_running(self, call: str) -> None:
        if self._running is not None:
            raise InvalidRequestError(
                f"{call}() was called inside {self._running}(), from an observer's hook: observers read the engine; "
                f"call {call}() once {self._running}() has returned"
            )

    def close(self) -> None:
        """Stop the tensor-parallel worker processes, if any (they also stop when this process
        exits). The engine cannot step afterwards; without tensor parallelism this does nothing."""
        if isinstance(self.runner, ParallelRunner):
            self.runner.close()

    def _check_whole_model(self, what: str) -> None:
        if isinstance(self.runner, ParallelRunner):
            raise ConfigError(f"{what}: only with the whole model in one process (--tensor-parallel-size 1)")

    def remove_observer(self, observer: Observer) -> None:
        if observer not in self.observers:
            raise InvalidRequestError(f"{type(observer).__name__} is not an observer of this engine")
        self.observers.remove(observer)
        self._time_collectives()

    def _time_collectives(self) -> None:
        """Tensor parallelism on GPUs: while observers read the step timings, time the collectives
        on the GPU too (CollectiveClock). One process has no collective, and a clock its
        engines share (Shard's default) that this leaves alone."""
        if isinstance(self.runner, ParallelRunner):
            self.runner.model.shard.clock.time_gpu = bool(self.observers)

    def _layer_hooks(self) -> tuple:
        """The per-layer hooks of the observers that want them this step: (on_attention or
        None, on_layer or None). Read after on_schedule: an observer may ask only in some steps."""
        attention = [o for o in self.observers if o.wants_attention]
        layers = [o for o in self.observers if o.wants_layers]

        def on_attention(layer, q, k, v, output, metadata):
            self._notify("on_attention", layer, q, k, v, output, metadata, to=attention)

        def on_layer(layer, stream, metadata):
            self._notify("on_layer", layer, stream, metadata, to=layers)

        return (on_attention if attention else None), (on_layer if layers else None)

    # -- what observers read ------------------------------------------------------------------------
    # Read-only views: an observer is given the engine once, at construction, and reads its state
    # through these, never through the scheduler, the block manager, the runner or the model.

    @property
    def attention_backend(self) -> str:
        """The name of the attention backend the model runs (one of BACKEND_NAMES)."""
        return self.runner.model.ops.attention.name

    @property
    def num_kv_blocks(self) -> int:
        """Blocks in the KV pool (NB), however the pool was sized."""
        return self.block_manager.num_blocks

    def kv_block_bytes(self, block_size: int | None = None) -> int:
        """Bytes of one KV block of `block_size` tokens (this engine's by default): K and V of
        every layer, of this process's KV heads, in the engine's dtype. An engine sharing these
        weights with that block size takes (num_kv_blocks + 1) of them (+ 1: the scratch block).
        ConfigError for a block size no engine takes (a dict failed in the product, -1 or 1.5
        answered a size no pool has)."""
        if block_size is not None and not (is_int(block_size) and 1 <= block_size <= MAX_COUNT):
            raise ConfigError(f"block_size must be an integer in [1, {MAX_COUNT:,}] or None, got {block_size!r:.60}")
        size = self.runner.block_size if block_size is None else block_size
        return kv_block_bytes(self.model_config, size, self.dtype, self.runner.num_kv_heads)

    @property
    def kv_cache(self) -> torch.Tensor:
        """The engine's paged KV cache, [num_layers, 2 (K, V), num_blocks + 1, block_size, Hkv, D]:
        token p of a sequence is at [layer, :, block_table[p // block_size], p % block_size]. The
        engine's own tensor, not a copy: read it, never write it (the last block is the scratch
        block a CUDA graph's padding rows write to). Not with tensor parallelism, where each
        process holds its own KV heads."""
        self._check_whole_model("engine.kv_cache (one tensor of every KV head)")
        return self.runner.kv_cache

    def read_keys(self, layers: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Keys of the paged cache, every KV head: layers [L] and [n] (block, offset) pairs (long
        tensors on the engine's device) -> [L, n, Hkv, D], post-RoPE, as attention reads them.
        With tensor parallelism each rank reads its own heads and rank 0 gathers them.
        InvalidRequestError for indices outside the cache (engine/read_checks.py)."""
        check_key_indices(layers, blocks, offsets, self.device, self.runner.kv_cache.shape)
        return self.runner.read_keys(layers, blocks, offsets)

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the model reads out of a residual stream: final RMSNorm, then the LM head.
        hidden [N, hidden_size] -> logits [N, vocab] fp32. (The logit lens reads every layer's
        stream this way, as if that layer were the last.) With tensor parallelism every rank
        computes its slice of the vocabulary. InvalidRequestError for another shape, dtype or
        device (engine/read_checks.py)."""
        check_streams(hidden, self.device, self.dtype, self.model_config.hidden_size)
        return self.runner.readout(hidden)

    def _check_held(self, request_id: object) -> None:
        """UnknownRequestError unless the engine holds request `request_id` (queued, running, or
        finished and not yet forgotten, a beam search's results included). The reads that name a
        request (text, samples, beams) check it as request() does: they answered an id never
        given, or aborted, as if it were there (text "", samples and beams the id alone), so a
        caller's mistake read as an empty answer. (abort and forget of such an id do nothing,
        as documented: there is nothing left to stop.)"""
        _check_request_id(request_id)
        if request_id not in self.sequences and request_id not in self._beam_groups:
            raise UnknownRequestError(f"no request {request_id} (never added, or aborted or forgotten since)")

    def request(self, seq_id: int) -> RequestInfo:
        """A copy of a request's state, as it is now; UnknownRequestError (a KeyError too) once the
        request is forgotten (aborted, or collected by LLM.generate)."""
        _check_request_id(seq_id)
        self._settle()
        seq = self.sequences.get(seq_id)
        if seq is None:
            raise UnknownRequestError(f"no request {seq_id} (never added, or aborted or forgotten since)")
        return seq.info()

    def block_pool_snapshot(self, computed: Mapping[int, int] | None = None, include: Iterable[int] = ()
                            ) -> BlockPoolSnapshot:
        """The KV block pool as it is now (minillama/engine/block_pool.py). computed: seq id ->
        tokens whose K/V it holds, for a snapshot taken while a step's forward is computing them
        (default: what the engine has committed); include: blocks to list whatever their state."""
        if computed is not None and not isinstance(computed, Mapping):
            raise InvalidRequestError(f"computed must be a mapping of seq id -> tokens, or None, not {type(computed).__name__}")
        include = self._block_ids(include, "include")
        self._settle()  # first: a step in flight may still add the tokens a count names
        self._check_computed(computed or {})
        return snapshot_block_pool(self.block_manager, self.scheduler.holders, computed, include)

    def _check_computed(self, computed: Mapping[object, object]) -> None:
        """InvalidRequestError naming the first entry of `computed` that is not a request of this
        engine -> a count of its tokens, in [0, its tokens]. The counts index the block tables:
        a negative one read blocks from a table's end, one past the sequence filled blocks it
        had not computed, a str, None or a float failed deep inside (divmod, a tuple index)."""
        for seq_id, count in computed.items():
            seq = self.sequences.get(seq_id) if is_int(seq_id) else None
            if seq is None:
                raise InvalidRequestError(f"computed names {seq_id!r:.60}, which is no request of this engine")
            if not is_int(count) or not 0 <= count <= seq.num_tokens:
                raise InvalidRequestError(
                    f"computed[{seq_id}] must be a count of its tokens in [0, {seq.num_tokens}], got {count!r:.60}")

    def cached_flags(self, block_ids: Iterable[int]) -> list[bool]:
        """For each block: does a later prompt hit it (is it the prefix cache's entry for its hash)?"""
        return cached_flags(self.block_manager, self._block_ids(block_ids, "block_ids"))

    def _block_ids(self, block_ids: Iterable[int], name: str) -> list[int]:
        """`block_ids` as a list, each a block of this pool; InvalidRequestError naming the first that is not:
        a negative id would read the pool from its end, a str or one past it fail as a list index."""
        if isinstance(block_ids, (str, bytes)) or not isinstance(block_ids, Iterable):
            raise InvalidRequestError(f"{name} must be a list of block ids, not {type(block_ids).__name__}")
        ids = list(block_ids)
        position = first_outside_vocabulary(ids, self.block_manager.num_blocks)  # the same rule: ints in [0, n)
        if position is not None:
            raise InvalidRequestError(
                f"{name} must be block ids in [0, {self.block_manager.num_blocks}); position {position} holds {ids[position]!r}"
            )
        return ids

    # -- the step ----------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one scheduler iteration: one forward pass over the batch it picks. -> the new
        tokens' outputs: this step's, or with async scheduling the step before's (in_flight.py)."""
        with self._exclusive("step"):
            return self._step()

    def _step(self) -> list[RequestOutput]:
        if self._ready:  # a step read between calls (request(), fork(), ...): its outputs first
            outputs, self._ready = self._ready, []
            return outputs
        if self._overlaps():
            return self._step_overlapped()
        if self._in_flight is not None:  # in order from here: read the step launched first
            return self._read_in_flight()
        return self._raise_observer_failure(self._step_in_order())

    def _overlaps(self) -> bool:
        """May the next step be planned before the step in flight is read? Not while anything
        must act on a step's tokens before the next is planned: an observer (it sees each step
        whole), a request with n > 1 before its first token (its samples start from it), a
        sequence reaching its length limit. A beam search's beams sit out the step planned while
        their selection is in flight (Scheduler.selecting), which other work, or the other half of
        the searches, may fill; while they sit out, no decode step may need to preempt (there is a
        free block for every running sequence), since a search is preempted whole."""
        return (self.async_scheduling and not self.observers and not self._pending_samples and not self._must_read
                and (not self._searching or self.block_manager.num_free_blocks >= len(self.scheduler.running)))

    def _step_overlapped(self) -> list[RequestOutput]:
        """Plan and launch a step, then read the step before (which the GPU finished meanwhile)."""
        launched_at = time.perf_counter()
        self.block_manager.step = self.step_count
        batch = self.scheduler.schedule(split_searches=bool(self._searching))
        previous = self._in_flight
        if not batch.scheduled:  # all that is left is in flight
            return self._read_in_flight() if previous is not None else []
        # Step N-1's sampled tokens stay on the device: this step's inputs gather them there.
        # Only the sampler reads these logits: it widens to fp32 just the rows it draws from.
        inputs = self.runner.prepare(batch, previous.tokens if previous is not None else None)
        logits = self.runner.run(inputs, float32=False)
        seqs = [self.sequences[item.seq_id] for item in batch.sampling]
        drawn, drawn_logits, split = seqs, logits, None
        if self._searching:
            drawn, drawn_logits, split = self._set_beams_apart(seqs, logits)
        tokens = self._sample(drawn_logits, drawn)
        searches = self._launch_searches(logits, seqs, split[1]) if split is not None else None
        self._in_flight = InFlightStep(drawn, tokens, searches, batch.phase, batch.num_tokens, len(batch.preempted),
                                       launched_at)
        outputs = self._read_step(previous) if previous is not None else []
        # Committed after the read: the blocks it hashes hold no placeholder any more.
        self.scheduler.update_after_step(batch)
        if searches is not None:  # the beams wait for their selection: the next plan leaves them out
            self.scheduler.selecting.update(seqs[row].seq_id for row in split[1])
        for row, seq in enumerate(drawn):
            if seq.is_finished:  # it stopped at the step before: this row ran in vain
                continue
            seq.token_ids.append(placeholder(row))
            if seq.num_output_tokens >= seq.params.max_tokens or seq.num_tokens >= self.max_model_len:
                self._must_read = True  # it finishes with this token: plan nothing past its limit
        self.step_count += 1
        return outputs

    def _read_in_flight(self) -> list[RequestOutput]:
        """Wait for the step in flight and read its tokens; nothing new is launched."""
        flight, self._in_flight = self._in_flight, None
        return self._read_step(flight)

    def _read_step(self, flight: InFlightStep) -> list[RequestOutput]:
        """A launched step's tokens take their placeholders' places, as outputs; the sequences
        they finish give back their blocks (the step launched since may still be writing its
        rows of them: whoever takes them next writes later, on the same stream)."""
        self._must_read = False
        outputs = []
        waiting_since = time.perf_counter()
        tokens = flight.read()
        self.stats.wait_seconds += time.perf_counter() - waiting_since
        for seq, token in zip(flight.seqs, tokens):
            if seq.is_finished:  # stopped a step earlier (its row ran in vain), or aborted
                continue
            seq.token_ids[-1] = token
            output = self._output(seq, token)
            if output.finished:
                self.scheduler.finish(seq, output.finish_reason)
            outputs.append(output)
        if flight.searches is not None:
            self.scheduler.selecting.clear()  # they may be planned again (or pruned, forked)
            self._finish_searches(flight.searches, outputs)
        now = time.perf_counter()
        # The step had the GPU from its launch, or from the end of the step before it if later.
        self.stats.record(flight.phase, flight.num_tokens, now - max(flight.launched_at, self._last_read_at),
                          flight.num_preempted)
        self._last_read_at = now
        return outputs

    def _settle(self) -> None:
        """Read the step in flight, if any, so that what is read next holds no placeholder; its
        outputs wait for the next step() call."""
        if self._in_flight is not None:
            self._ready += self._read_in_flight()

    def _step_in_order(self) -> list[RequestOutput]:
        """One step synchronously: plan, run, read the tokens, tell the observers."""
        t0 = time.perf_counter()
        clock = self.runner.model.shard.clock
        collective_before = clock.seconds
        self.block_manager.step = self.step_count  # the step evictions are recorded at
        batch = self.scheduler.schedule()
        t1 = time.perf_counter()
        schedule_ms, observe_ms = (t1 - t0) * 1e3, 0.0
        if not batch.scheduled:  # only possible with nothing to do
            return []
        if self.observers:
            self._notify("on_schedule", batch)
            observe_ms += (time.perf_counter() - t1) * 1e3
        readers = [o for o in self.observers if o.wants_queries]
        if readers:  # once, before the inputs go into the graphs' buffers, which it makes again
            self.runner.enable_query_capture()  # the decode graphs then copy the queries out
        t1 = time.perf_counter()
        inputs = self.runner.prepare(batch)
        t2 = time.perf_counter()
        # On CUDA the forward and the sampler only launch kernels; with observers attached
        # their GPU time is measured with events, so nothing waits for the GPU early.
        events = self._gpu_timer if self.observers else None
        if events:
            events.start()
        if self.observers:
            logits = self.runner.run(inputs, *self._layer_hooks())
            if readers and self.runner.last_queries is not None:
                self._notify("on_queries", self.runner.last_queries, inputs.metadata, to=readers)
        else:
            logits = self.runner.run(inputs)
        t3 = time.perf_counter()
        prepare_ms, forward_ms = (t2 - t1) * 1e3, (t3 - t2) * 1e3
        if events:
            events.mark()
        if self.observers:
            self._notify("on_logits", batch, logits)
            t4 = time.perf_counter()
            observe_ms += (t4 - t3) * 1e3
            t3 = t4
        if events:
            events.mark()
        seqs = [self.sequences[item.seq_id] for item in batch.sampling]
        drawn, drawn_logits, split = seqs, logits, None  # the rows the sampler draws from: all
        if self._searching:  # the one check beam search costs an ordinary step
            drawn, drawn_logits, split = self._set_beams_apart(seqs, logits)
        tokens = self._sample(drawn_logits, drawn).tolist()
        sample_ms = (time.perf_counter() - t3) * 1e3
        if events:
            events.mark()
            forward_ms, _, sample_ms = events.elapsed_ms()
        self.scheduler.update_after_step(batch)
        rows = None  # outputs[i] came from logits row i
        if self._pending_samples:  # the one check parallel sampling costs an ordinary step
            # Before _update: a leader that finishes on its first token frees its blocks there.
            sample_outputs, sample_rows = self._start_samples(drawn_logits, drawn)
            self._copy_on_write()
            outputs = self._update(drawn, tokens) + sample_outputs
            rows = (*range(len(drawn)), *sample_rows)
        else:
            outputs = self._update(drawn, tokens)
        if split is not None:  # the outputs so far came from the drawn rows: their rows in the whole batch
            output_rows = [split[0][row] for row in (rows if rows is not None else range(len(outputs)))]
            self._finish_searches(self._launch_searches(logits, seqs, split[1]), outputs, output_rows)
            rows = tuple(output_rows)
        timings = StepTimings(schedule_ms, prepare_ms, forward_ms, sample_ms, observe_ms,
                              (clock.seconds - collective_before) * 1e3)
        result = StepResult(
            self.step_count, batch, tuple(outputs), timings, self.block_manager.num_free_blocks,
            tuple(o.request_id for o in outputs if o.finished), rows,
        )
        self.step_count += 1
        self.stats.record(batch.phase, batch.num_tokens, time.perf_counter() - t0, len(batch.preempted))
        if self.observers:
            self._notify("on_step_end", result)
        return outputs

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """One token for each of `seqs` from its logits row ([S, V], in order), each drawn by its
        params with its own generator (or the shared one) -> [S] int64 on the device; [0] when
        nobody samples (a prefill step whose prompts all go on in the next chunk)."""
        if not seqs:
            return self._no_tokens
        return self.sampler(logits, [seq.params for seq in seqs], [self._generators.get(seq.seq_id) for seq in seqs],
                            self.runner.sampled_tokens_buffer(len(seqs)))

    def _update(self, seqs: list[Sequence], tokens: list[int]) -> list[RequestOutput]:
        """Append each sampling sequence's new token (in batch order); finish the done ones."""
        outputs = []
        for seq, token in zip(seqs, tokens):
            seq.token_ids.append(token)
            output = self._output(seq, token)
            if output.finished:
                self.scheduler.finish(seq, output.finish_reason)
            outputs.append(output)
        return outputs

    def _output(self, seq: Sequence, token: int) -> RequestOutput:
        """`seq`'s new token as an output, ended by the usual rules (_finish_reason)."""
        return self._emit(seq, token, self._finish_reason(seq, token))

    def _emit(self, seq: Sequence, token: int, reason: str | None) -> RequestOutput:
        """`seq`'s new token as an output: its text, and whether it ends the request (`reason`;
        then its detokenizer flushes and its generator goes; the caller gives its blocks back)."""
        detokenizer = self._detokenizers.get(seq.seq_id)
        delta = detokenizer.push(token) if detokenizer else ""
        if reason is not None:
            if detokenizer:
                delta += detokenizer.finish()
            self._generators.pop(seq.seq_id, None)
        return RequestOutput(seq.seq_id, token, delta, reason is not None, reason)

    def _start_samples(self, logits: torch.Tensor, seqs: list[Sequence]) -> tuple[list[RequestOutput], list[int]]:
        """For each leader (SamplingParams.n > 1) sampling its first token this step: draw the
        first tokens of its samples 1..n-1 from the leader's logits row, and make each sample a
        new sequence sharing the leader's prompt blocks. Returns those tokens' outputs, and the
        logits row each came from (its leader's)."""
        outputs, rows = [], []
        for row, leader in enumerate(seqs):
            if leader.seq_id not in self._pending_samples:
                continue
            self._pending_samples.discard(leader.seq_id)
            params = leader.params
            # Sample i is a request of its own with seed + i (the shared generator when unseeded).
            sample_params = [
                dataclasses.replace(params, n=1, seed=None if params.seed is None else params.seed + i)
                for i in range(1, params.n)
            ]
            generators = [self.sampler.new_generator(p.seed) if p.seed is not None else None for p in sample_params]
            # The leader's row repeated, [n - 1, V]: each copy drawn with its own generator.
            repeated = logits[row].expand(len(sample_params), -1)
            tokens = self.sampler(repeated, sample_params, generators).tolist()
            ids = [leader.seq_id]
            for i, (p, generator, token) in enumerate(zip(sample_params, generators, tokens), start=1):
                seq = self._new_sample(leader, i, p, token)
                if generator is not None:
                    self._generators[seq.seq_id] = generator
                ids.append(seq.seq_id)
                outputs.append(self._sample_output(leader, seq, token))
                rows.append(row)
            self._samples[leader.seq_id] = tuple(ids)
        return outputs, rows

    def _new_sample(self, leader: Sequence, index: int, params: SamplingParams, token: int) -> Sequence:
        """Sample `index` of `leader`: the prompt plus its first token, which is output (not
        prompt) and not computed yet; it shares the prompt's K/V (its full blocks by reference,
        the partly filled last block copied on write), so its next step is a one-token decode."""
        prompt = leader.token_ids[: leader.num_prompt_tokens]
        seq = Sequence(next(self._request_ids), prompt, params)
        seq.token_ids.append(token)
        seq.sample_of, seq.sample_index = leader.seq_id, index
        seq.parent_id, seq.fork_position = leader.seq_id, len(prompt)
        self.sequences[seq.seq_id] = seq
        if self.tokenizer is not None:
            self._detokenizers[seq.seq_id] = IncrementalDetokenizer(self.tokenizer, prompt)
        return seq

    def _sample_output(self, leader: Sequence, seq: Sequence, token: int) -> RequestOutput:
        """A new sample's first token, finished by the usual rules; one that goes on joins
        the scheduler holding the leader's blocks, or queues to recompute when none is free."""
        output = self._output(seq, token)
        shared = False
        if output.finished:
            seq.finish(output.finish_reason)
        elif shared := self._share_prefix(leader, seq):
            self.scheduler.add_sample(seq)
        else:
            self.scheduler.add(seq)  # no block for its copy: it recomputes its prompt later
        self._notify_fork(leader, seq, "sample", shared)
        return output

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        params = seq.params
        if (token in self.eos_token_ids and not params.ignore_eos) or token in params.stop_token_ids:
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None


class _GpuTimer:
    """CUDA events recorded on the engine's stream: GPU milliseconds between marks, read once
    the host has the sampled tokens (by then the stream has passed every mark). The events and
    the stream are looked up once, not every step: each costs a few microseconds of host time."""

    def __init__(self, device: torch.device, marks: int = 3):
        self.stream = torch.cuda.current_stream(device)  # the stream the engine runs on
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(marks + 1)]
        self.count = 0  # events recorded this step

    def start(self) -> None:
        self.count = 0
        self.mark()

    def mark(self) -> None:
        self.events[self.count].record(self.stream)
        self.count += 1

    def elapsed_ms(self) -> list[float]:
        events = self.events[: self.count]
        events[-1].synchronize()
        return [a.elapsed_time(b) for a, b in zip(events, events[1:])]


def _check_block_size(attention: AttentionOps, block_size: int) -> None:
    if block_size % attention.min_block_size:
        raise ConfigError(
            f"--attention {attention.name} needs a block size that is a multiple of "
            f"{attention.min_block_size} (got {block_size})"
        )
    if attention.power_of_two_blocks and block_size & (block_size - 1):
        raise ConfigError(f"--attention {attention.name} needs a block size that is a power of two (got {block_size})")


def _engine_config(config: object) -> EngineConfig:
    """`config`, or the defaults for None; anything else is refused by name (a dict of settings
    would fail later at its first attribute)."""
    if config is None:
        return EngineConfig()
    if not isinstance(config, EngineConfig):
        raise ConfigError(f"config must be an EngineConfig (EngineConfig(**settings)), not {type(config).__name__}")
    return config


def _check_request_id(request_id: object) -> None:
    """A request id is an int: a list would fail as a dict key (unhashable), True as request 1."""
    if not is_int(request_id):
        raise InvalidRequestError(f"a request id is an integer (what add_request returned), not {request_id!r}")


def _is_token_id(value: object, vocab_size: int) -> bool:
    return is_int(value) and 0 <= value < vocab_size


def _max_model_len(model_config: ModelConfig, config: EngineConfig) -> int:
    context = model_config.context_length
    if config.max_model_len is None:
        return min(context, 8192)
    if config.max_model_len > context:
        window = context < model_config.max_position_embeddings
        raise ConfigError(
            f"max_model_len {config.max_model_len} exceeds the model's context ({context} positions"
            + (", its attention window: config.json's sliding_window or attention_chunk_size)" if window else ")")
        )
    return config.max_model_len
