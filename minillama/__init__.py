"""minillama: a compact batched Llama inference engine with a paged KV cache.

The package's face: every consumer (the inspector, the web UI, benchmarks, tests) imports what it
needs from here, `from minillama import LLMEngine, SamplingParams`, not from the modules behind.
Names are imported lazily, on first use (PEP 562): `from minillama import SamplingParams` reads
minillama/sampling_params.py alone, so a trace viewer that checks sampling parameters never loads
the engine, its model or its kernels; `from minillama import LLMEngine` loads them.
"""

from __future__ import annotations

import importlib

# Public name -> the module that defines it.
_HOMES = {
    "LLM": "minillama.engine.llm",
    "LLMEngine": "minillama.engine.llm_engine",
    "EngineConfig": "minillama.config",
    "ModelConfig": "minillama.config",
    "SamplingParams": "minillama.sampling_params",
    "Observer": "minillama.observe",
    # What observers receive and read (minillama/observe.py).
    "SchedulerOutput": "minillama.engine.scheduler",
    "ScheduledSequence": "minillama.engine.scheduler",
    "StepResult": "minillama.engine.outputs",
    "ForkEvent": "minillama.engine.outputs",
    "PruneEvent": "minillama.engine.outputs",
    "CopyOnWrite": "minillama.engine.outputs",
    "StepTimings": "minillama.engine.outputs",
    "RequestOutput": "minillama.engine.outputs",
    "Completion": "minillama.engine.outputs",
    "AttentionMetadata": "minillama.model.attention_metadata",
    "BlockPoolSnapshot": "minillama.engine.block_pool",
    "RequestInfo": "minillama.engine.sequence",
    # Errors.
    "MinillamaError": "minillama.errors",
    "InvalidRequestError": "minillama.errors",
    "ConfigError": "minillama.errors",
    "ModelLoadError": "minillama.errors",
    "ObserverError": "minillama.errors",
    "CacheFolderError": "minillama.errors",
    "UnappliedSettingWarning": "minillama.errors",
    # Helpers the inspector shares with the engine.
    "filtered_logits": "minillama.model.sampler",  # the distribution a request samples from
    "check_text": "minillama.engine.prompts",  # a prompt text's checks, before any tokenizer
    "IncrementalDetokenizer": "minillama.engine.detokenizer",  # the text each token completes
    "BACKEND_NAMES": "minillama.ops.attention",  # the --attention choices
    "ASYNC_SCHEDULING": "minillama.config",  # the --async-scheduling choices
    "embedded_model_dir": "minillama.loader",  # where the embedded model's files are
    "check_fits": "minillama.memory",  # does an allocation fit the device's memory (the benchmarks' peers)
    # The number rules every user-given value follows (True is no int, 10**400 no float).
    "is_int": "minillama.values",
    "is_finite_real": "minillama.values",
    "as_int": "minillama.values",  # a checked count, in [minimum, MAX_COUNT]
    "as_number": "minillama.values",  # a checked finite amount
    "MAX_COUNT": "minillama.values",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> object:
    """Import a public name's module on first use. Not a public name: AttributeError, which also
    lets `from minillama import memory` fall back to importing the submodule."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'minillama' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
