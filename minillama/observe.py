"""The observer protocol: the hook points LLMEngine calls during every step.

An observer subclasses Observer and overrides the hooks it needs; `engine.add_observer(obs)`
attaches it. Hooks receive values, not the engine: the step's plan and result are immutable
(minillama/engine/scheduler.py, outputs.py), so what an observer keeps stays what happened. An
observer that needs more (the KV block pool, a request's prompt, the paged cache) is given the
engine once, when it is made, and reads it through the engine's read-only views (LLMEngine,
"what observers read"). The order within a step is:

    on_schedule(batch)                  the scheduler's decision (SchedulerOutput: the scheduled
                                        sequences, the preempted ones, the queues), before the run
    on_attention(layer, q, k, v, out, metadata)
                                        once per layer, only for observers with
                                        wants_attention = True (that step then runs eagerly,
                                        without CUDA graphs); wants_attention is read after
                                        on_schedule, every step, so an observer can ask for
                                        attention only in the steps it cares about
    on_layer(layer, stream, metadata)   once per layer, only for observers with wants_layers =
                                        True (read like wants_attention; eager too): the
                                        residual stream [N, hidden] after the layer
    on_queries(queries, metadata)       decode steps only, for observers with wants_queries =
                                        True (read like wants_attention): every layer's
                                        post-RoPE queries of the batch, [L, B, H, D], copied
                                        out inside the forward, so CUDA graphs stay on
    on_logits(batch, logits)            logits [S, vocab] fp32 of the S sequences that sample,
                                        in the order of batch.sampling
    on_step_end(result)                 the step's StepResult: its plan, sampled tokens, text
                                        deltas, finish reasons, timings, free blocks

Two hooks fire when it happens, inside a step or between steps:

    on_fork(event)                      a new sequence continues another (ForkEvent: LLMEngine.
                                        fork between steps; a sample's or a beam's fork inside
                                        a step, after on_logits): parent, position, forced
                                        tokens, who chose them, the blocks it shares and the
                                        copy on write it made
    on_prune(event)                     a beam search dropped a beam (PruneEvent), inside a step

With no observer attached, each hook costs the engine one `if`. Hooks must not change the
tensors they are given: they are the engine's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from minillama.model.attention_metadata import AttentionMetadata

if TYPE_CHECKING:
    from minillama.engine.outputs import ForkEvent, PruneEvent, StepResult
    from minillama.engine.scheduler import SchedulerOutput


class Observer:
    wants_attention: bool = False
    wants_layers: bool = False
    wants_queries: bool = False

    def on_schedule(self, batch: SchedulerOutput) -> None:
        pass

    def on_attention(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        output: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> None:
        pass

    def on_layer(self, layer: int, stream: torch.Tensor, metadata: AttentionMetadata) -> None:
        pass

    def on_queries(self, queries: torch.Tensor, metadata: AttentionMetadata) -> None:
        pass

    def on_logits(self, batch: SchedulerOutput, logits: torch.Tensor) -> None:
        pass

    def on_step_end(self, result: StepResult) -> None:
        pass

    def on_fork(self, event: ForkEvent) -> None:
        pass

    def on_prune(self, event: PruneEvent) -> None:
        pass
