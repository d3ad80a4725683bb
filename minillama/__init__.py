"""minillama: a compact batched Llama inference engine with a paged KV cache."""

from minillama.config import EngineConfig, ModelConfig
from minillama.engine.llm import LLM
from minillama.engine.llm_engine import LLMEngine
from minillama.engine.outputs import Completion, RequestOutput, StepResult
from minillama.errors import ConfigError, InvalidRequestError, MinillamaError, ModelLoadError
from minillama.observe import Observer
from minillama.sampling_params import SamplingParams

__all__ = [
    "LLM", "LLMEngine", "EngineConfig", "ModelConfig", "SamplingParams", "Observer", "Completion",
    "RequestOutput", "StepResult", "MinillamaError", "InvalidRequestError", "ConfigError", "ModelLoadError",
]
