"""LogitLensCapture: each layer's guess at the next token, for the traced sequences.

A Llama layer adds its attention and MLP outputs to the residual stream; only after the last
layer does the model read a prediction out of it (final RMSNorm, then the LM head). The logit
lens reads one out after every layer the same way: softmax(lm_head(norm(stream_i))). Early
layers usually guess badly; watching where the right token first comes up shows where the
model "decides".

Per step: on_schedule plans which flat-batch rows to read (the position each traced, sampling
sequence samples from); on_layer copies those rows of the stream, [R, hidden], for each layer;
on_step_end runs them all through the norm and the head at once: [L * R, vocab] -> top k.
"""

from __future__ import annotations

import torch

from inspector.trace.model import LogitLens
from minillama import LLMEngine, SchedulerOutput

TOP_K = 5
# The most fp32 logits the read-out holds at once. Every kept row at once is [L * R, vocab]:
# with Llama 3's 128,256 tokens, 32 layers and 64 traced sequences sampling, 1 GiB, and as much
# again for its softmax, in one step and outside the recorder's memory budget (which counts the
# top 5 kept). In chunks of rows, the transient stays within this whatever the shape.
READOUT_CHUNK_BYTES = 32 * 2**20


def rows_per_chunk(vocab_size: int, chunk_bytes: int = READOUT_CHUNK_BYTES) -> int:
    """How many rows of fp32 logits over `vocab_size` tokens fit `chunk_bytes` (at least one)."""
    return max(1, chunk_bytes // (4 * vocab_size))


class LogitLensCapture:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.rows: dict[int, int] = {}  # traced seq id -> its sampling row in the flat batch
        self.streams: list[torch.Tensor] = []  # per layer: [R, hidden], in self.rows' order
        self.chunk_bytes = READOUT_CHUNK_BYTES  # the read-out's logits at once, at most (one row at least)

    def bytes_per_token(self) -> int:
        """Ids and probabilities (4 bytes each) of the top k of every layer."""
        return self.engine.model_config.num_hidden_layers * TOP_K * 8

    def begin_step(self, batch: SchedulerOutput, traced: set[int]) -> bool:
        """Plan the rows to read. -> whether this step has any (a traced sequence that samples)."""
        self.rows, self.streams, row = {}, [], 0
        for item in batch.scheduled:
            row += item.num_tokens  # the flat batch lays the sequences' tokens out in order
            if item.samples and item.seq_id in traced:
                self.rows[item.seq_id] = row - 1  # it samples from its last token
        return bool(self.rows)

    def write(self, stream: torch.Tensor) -> None:
        """on_layer: stream [N, hidden] -> keep the planned rows, [R, hidden] (a copy)."""
        self.streams.append(stream[list(self.rows.values())])

    def end_step(self, token_text) -> dict[int, LogitLens]:
        """Read every kept row through the final norm and the LM head. -> seq id -> its lens."""
        if not self.streams:
            return {}
        vocab = self.engine.model_config.vocab_size
        k = min(TOP_K, vocab)  # a vocabulary may be smaller than TOP_K
        step = rows_per_chunk(vocab, self.chunk_bytes)
        with torch.inference_mode():
            streams = torch.stack(self.streams)  # [L, R, hidden]
            flat = streams.flatten(0, 1)  # [L * R, hidden]
            tops = []
            for start in range(0, flat.shape[0], step):
                logits = self.engine.readout(flat[start : start + step])  # [<= step, vocab] fp32
                tops.append(logits.softmax(dim=-1).topk(k, dim=-1))  # ([<= step, k], [<= step, k])
            probs, ids = torch.cat([p for p, _ in tops]), torch.cat([i for _, i in tops])  # [L * R, k]
        layers = streams.shape[0]
        probs = probs.view(layers, len(self.rows), k).cpu().tolist()  # [L][R][k]
        ids = ids.view(layers, len(self.rows), k).cpu().tolist()
        lenses = {}
        for r, seq_id in enumerate(self.rows):
            top_ids = [ids[layer][r] for layer in range(layers)]
            lenses[seq_id] = LogitLens(
                top_ids, [[token_text(t) for t in layer] for layer in top_ids], [probs[layer][r] for layer in range(layers)]
            )
        self.streams = []
        return lenses
