"""LLM: run a list of prompts to completion on top of LLMEngine."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from minillama.config import EngineConfig
from minillama.engine.llm_engine import LLMEngine
from minillama.engine.outputs import Completion
from minillama.errors import ConfigError, InvalidRequestError
from minillama.sampling_params import SamplingParams
from minillama.values import as_flag


class LLM:
    def __init__(self, model: str | Path | None = None, config: EngineConfig | None = None):
        self.engine = LLMEngine.from_pretrained(model, config)

    @classmethod
    def from_engine(cls, engine: LLMEngine) -> LLM:
        """An LLM over an engine already built (LLMEngine.from_config, from_hf_model, ...)."""
        if not isinstance(engine, LLMEngine):  # else every later call fails on a missing attribute
            raise ConfigError(f"from_engine takes an LLMEngine, not {type(engine).__name__}")
        llm = cls.__new__(cls)
        llm.engine = engine
        return llm

    def generate(
        self,
        prompts: list[str] | list[list[int]],
        params: SamplingParams | list[SamplingParams] | None = None,
        chat: bool = False,
        progress: bool = False,
    ) -> list[Completion]:
        """All prompts in one continuous batch; completions in the order of `prompts`. A prompt
        whose params ask for n > 1 samples gives its n completions one after the other, in
        sample order (Completion.sample_index 0..n-1); one that asks for a beam search gives its
        beam_width finished beams the same way, best first, each with its Completion.score.

        Every prompt is checked before any runs: a bad one raises InvalidRequestError and no
        request of this call stays queued. A step that raises (an observer's ObserverError,
        Ctrl-C) aborts this call's requests before the error goes on."""
        as_flag(chat, "chat", InvalidRequestError)
        as_flag(progress, "progress", InvalidRequestError)
        if not isinstance(prompts, (list, tuple)):
            raise InvalidRequestError(f"prompts must be a list of prompts (for one, [prompt]), not {type(prompts).__name__}")
        params_list = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(params_list) != len(prompts):
            raise InvalidRequestError(f"{len(prompts)} prompts but {len(params_list)} SamplingParams")
        # None is the defaults, as add_request takes it; anything else add_request checks (0 is no
        # SamplingParams: `params or SamplingParams()` would have run it with the defaults).
        params_list = [SamplingParams() if p is None else p for p in params_list]
        engine = self.engine
        ids: list[int] = []
        try:
            for prompt, p in zip(prompts, params_list):
                ids.append(engine.add_request(prompt, p, chat=chat))
        except Exception:
            for request_id in ids:
                engine.abort(request_id)
            raise
        total = sum(p.max_tokens * max(p.n, p.beam_width) for p in params_list)
        try:
            with tqdm(total=total, desc="generating", unit="tok", disable=not progress) as bar:
                while engine.has_unfinished():
                    bar.update(len(engine.step()))
        except BaseException:  # an observer's ObserverError, Ctrl-C: this call's requests leave the engine
            for leader in ids:
                for request_id in engine.samples(leader):  # a search's id stops all its beams
                    engine.abort(request_id)
            raise
        completions = []
        for leader, p in zip(ids, params_list):
            results = engine.beams(leader) if p.beam_width > 1 else engine.samples(leader)
            for index, request_id in enumerate(results):
                info = engine.request(request_id)
                completions.append(
                    Completion(
                        request_id, list(info.prompt_token_ids), list(info.output_token_ids), engine.text(request_id),
                        info.finish_reason, info.num_cached_tokens, info.num_preemptions, index, info.beam_score,
                    )
                )
        for request_id in [*ids, *(c.request_id for c in completions)]:  # a search's id forgets all its beams
            engine.forget(request_id)
        return completions
