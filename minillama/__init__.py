"""minillama: a compact batched Llama inference engine with a paged KV cache."""

from minillama.config import EngineConfig, ModelConfig
from minillama.engine.llm import LLM
from minillama.engine.llm_engine import LLMEngine
from minillama.engine.outputs import Completion, RequestOutput, StepResult, StepTimings
from minillama.engine.prompts import check_text
from minillama.errors import ConfigError, InvalidRequestError, MinillamaError, ModelLoadError
from minillama.loader import embedded_model_dir
from minillama.observe import Observer
from minillama.ops.attention import BACKEND_NAMES
from minillama.sampling_params import SamplingParams

__all__ = [
    "LLM", "LLMEngine", "EngineConfig", "ModelConfig", "SamplingParams", "Observer", "Completion",
    "RequestOutput", "StepResult", "MinillamaError", "InvalidRequestError", "ConfigError", "ModelLoadError",
    # what the command lines and the benchmarks import besides: the attention backends' names, a
    # prompt's text check, a step's timings, where the embedded model's files are
    "BACKEND_NAMES", "StepTimings", "check_text", "embedded_model_dir",
]
