"""Tensor parallelism's processes: the driver (rank 0, the engine's own process) starts one
worker process per other rank; each builds its part of the model (reading only its slices of
the checkpoint) and its share of the paged KV cache, then runs whatever the driver sends
(minillama/parallel/wire.py) until told to stop. The driver schedules, samples and keeps every
sequence; the workers only compute, on the same block tables.

The ranks talk through torch.distributed, never through a transport of our own: gloo between
CPU processes; on GPUs (rank r on cuda:r) NCCL for the tensors on the GPUs, the layers'
all-reduces among them (inside each rank's CUDA graphs too), and gloo for the small messages
the hosts read. A worker that fails prints one line and exits; the driver's next
collective then fails, and it reports which rank is gone (TensorParallelError) and stops the
others. Workers are daemon processes: they end with the driver, also on Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import time
import weakref
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path

import torch
import torch.distributed as dist

from minillama.config import EngineConfig, ModelConfig
from minillama.engine.model_runner import ModelInputs, ModelRunner
from minillama.errors import MinillamaError
from minillama.loader import build_model, init_random_weights, load_hf_weights, read_safetensors, safetensors_files
from minillama.model.llama import AttentionHook, LayerHook, LlamaForCausalLM
from minillama.ops.select import select_ops
from minillama.parallel import wire
from minillama.parallel.shard import Shard

# How long a rank waits for the others to join, or for a collective: long enough for a worker
# to import torch and read its weights; a dead peer is noticed at once anyway (its socket closes).
TIMEOUT = timedelta(seconds=300)


class TensorParallelError(MinillamaError, RuntimeError):
    """A tensor-parallel worker failed or is gone; the engine cannot step any more."""


@dataclass(frozen=True)
class RandomWeights:
    """A model of this shape with random weights (LLMEngine.from_config, for benchmarks): each
    rank draws its own slices from seed + rank, so a split model costs what one process's does,
    with other numbers."""

    model_config: ModelConfig
    seed: int


ModelSource = Path | RandomWeights  # a checkpoint directory, or random weights


def load_rank_model(source: ModelSource, model_config: ModelConfig, config: EngineConfig, shard: Shard,
                    max_model_len: int) -> LlamaForCausalLM:
    """Rank `shard.rank`'s part of the model: its own slices read from the checkpoint, or drawn."""
    device = config.resolved_device()
    dtype = config.resolved_dtype(device)
    ops = select_ops(device, dtype, model_config, config.fused_ops, config.attention)
    model = build_model(model_config, max_model_len, ops, device, dtype, shard)
    if isinstance(source, RandomWeights):
        init_random_weights(model, source.seed + shard.rank)
    else:
        load_hf_weights(model, read_safetensors(safetensors_files(source), shard))
    return model


def backend(device: torch.device) -> str:
    """The process group's backends: on GPUs, NCCL for GPU tensors and gloo for the CPU tensors
    of the messages' headers (wire.py); gloo alone on CPUs."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


class TensorParallelGroup:
    """The worker processes of one engine, and the process group they share with the driver."""

    def __init__(self, workers: list[BaseProcess], on_gpus: bool):
        self.workers = workers
        self.on_gpus = on_gpus  # NCCL joins the ranks' GPUs
        self.closed = False
        # Out of step with the workers: they are still loading (until rank 0's runner is built:
        # the ranks agree on the cache size and capture their graphs together), or a step stopped
        # inside a collective (Ctrl-C, an error) and they wait in one; a STOP message would then
        # never match, so they are terminated.
        self.busy = True
        self._threads: int | None = None  # this process's torch threads before share_threads, until close

    def share_threads(self, world: int) -> None:
        """This process's torch threads divided by the ranks (the CPUs are shared by them) until
        close() gives them back, so an engine made after this one gets the process's own count."""
        self._threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self._threads // world))

    @classmethod
    def start(cls, source: ModelSource, config: EngineConfig, max_model_len: int) -> TensorParallelGroup:
        """Start ranks 1..N-1 and join them as rank 0 (this process, on cuda:0 on GPUs)."""
        world = config.tensor_parallel_size
        if dist.is_initialized():
            raise TensorParallelError("one tensor-parallel engine per process at a time: close() the other first")
        # The rendezvous store listens before any worker starts, on a port the kernel gives it
        # as it binds: a port picked free first and bound later (at init_process_group) could be
        # taken meanwhile by any other socket of the machine, and the group then failed to start.
        store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, timeout=TIMEOUT, wait_for_workers=False)
        port = store.port
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
        workers = [
            context.Process(target=_worker_main, args=(source, config, rank, world, port, max_model_len),
                            name=f"minillama-tp-rank{rank}", daemon=True)
            for rank in range(1, world)
        ]
        for worker in workers:
            worker.start()
        group = cls(workers, config.resolved_device().type == "cuda")
        try:
            dist.init_process_group(backend(config.resolved_device()), store=store, rank=0, world_size=world,
                                    timeout=TIMEOUT)
        except Exception as exc:
            group.close()
            raise TensorParallelError(f"the tensor-parallel workers did not join: {group.gone() or exc}") from exc
        return group

    def gone(self) -> str:
        """The workers that exited, as words ('' when all run)."""
        return ", ".join(f"rank {rank} exited with code {w.exitcode}"
                         for rank, w in enumerate(self.workers, start=1) if w.exitcode is not None)

    def fail(self, exc: BaseException) -> TensorParallelError:
        """The error to raise after a collective failed: which rank is gone, if one is; then
        every process stops (the step cannot be finished without it)."""
        for worker in self.workers:
            worker.join(timeout=1.0)
        why = self.gone() or f"{type(exc).__name__}: {exc}"
        self.close()
        return TensorParallelError(f"tensor parallelism stopped: {why}")

    def close(self) -> None:
        """Tell the workers to stop and wait for them, or, when they cannot hear it (a rank is
        gone, or a step stopped halfway), terminate them; then leave the group."""
        if self.closed:
            return
        self.closed = True
        orderly = dist.is_initialized() and not self.busy and not self.gone()
        if orderly:
            try:
                wire.send(wire.Command.STOP)
            except RuntimeError:  # a rank went meanwhile
                orderly = False
        for worker in self.workers:
            worker.join(timeout=10.0 if orderly else 0.0)
            if worker.is_alive():
                worker.terminate()
                worker.join()
        if dist.is_initialized():
            if orderly or not self.on_gpus:
                dist.destroy_process_group()
            else:  # NCCL's orderly shutdown would wait for a rank that is gone: abort its communicators
                dist.distributed_c10d._abort_process_group()
        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None


class ParallelRunner(ModelRunner):
    """Rank 0's ModelRunner: before each forward pass or copy on write it sends the other ranks
    the same inputs, and every rank then computes its heads and features in step (the
    projections' all-reduces join them; the LM head's all-gather gives every rank the logits)."""

    def __init__(self, group: TensorParallelGroup, model: LlamaForCausalLM, *args, **kwargs):
        self.group = group
        # Every rank builds its runner in step: the ranks agree on the number of KV blocks (the
        # block tables the scheduler hands out mean the same blocks everywhere) and, on GPUs,
        # measure their memory and capture their decode graphs with the same collectives.
        self._collective(super().__init__, model, *args, **kwargs)
        weakref.finalize(self, group.close)

    def run(self, inputs: ModelInputs, on_attention: AttentionHook | None = None,
            on_layer: LayerHook | None = None, float32: bool = True) -> torch.Tensor:
        """The step on every rank. An observer's hooks run here only, on whole tensors: the
        attention hook's q, k, v and output gathered from every rank's heads, the queries too;
        the residual stream (on_layer) is whole on every rank already, after its all-reduces."""
        shard = self.model.shard
        self.resolve_placeholders(inputs)  # the ranks receive real token ids
        flag = (wire.FLOAT32 * float32 | wire.GATHER_ATTENTION * (on_attention is not None)
                | wire.GATHER_QUERIES * (self.query_buffer is not None))
        self._send(wire.Command.RUN, wire.inputs_to_tensors(inputs), flag)
        hook = None if on_attention is None else _gathering_hook(shard, on_attention)
        logits = self._collective(super().run, inputs, hook, on_layer, float32)
        if self.last_queries is not None:
            self.last_queries = self._collective(shard.all_gather, self.last_queries, 2)  # [L, B, H, D]
        return logits

    def enable_query_capture(self) -> None:
        if self.query_buffer is None:  # every rank captures its graphs again, their collectives together
            self._send(wire.Command.CAPTURE_QUERIES)
            self._collective(super().enable_query_capture)

    def read_keys(self, layers: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        self._send(wire.Command.READ_KEYS, [layers, blocks, offsets])
        return self._collective(self.model.shard.all_gather, super().read_keys(layers, blocks, offsets), 2)

    def copy_kv_table(self, table: torch.Tensor) -> None:
        self._send(wire.Command.COPY_KV, [table])
        super().copy_kv_table(table)

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        self._send(wire.Command.READOUT, [hidden])
        return self._collective(super().readout, hidden)

    def close(self) -> None:
        self.group.close()

    def _send(self, command: wire.Command, tensors: list[torch.Tensor | None] = (), flag: int = 0) -> None:
        """A message to the workers, its time counted with the collectives'."""
        started = time.perf_counter()
        self._collective(wire.send, command, tensors, flag)
        self.model.shard.clock.host_seconds += time.perf_counter() - started

    def _collective(self, call, *args, **kwargs):
        """call(...), turning a failure of the group (a rank gone) into TensorParallelError."""
        group = self.group
        if group.closed:
            raise TensorParallelError("tensor parallelism stopped: the engine was closed, or a rank failed earlier")
        group.busy = True
        try:
            result = call(*args, **kwargs)
        except RuntimeError as exc:  # gloo reports a peer's closed connection as a RuntimeError
            if isinstance(exc, MinillamaError):
                raise
            raise group.fail(exc) from exc
        group.busy = False  # not reached when the call raised: the ranks are out of step
        return result


def _gathering_hook(shard: Shard, hook: AttentionHook | None = None) -> AttentionHook:
    """An attention hook that gathers q, k, v and the output over the ranks' heads (dim 1),
    then calls `hook` with them whole (rank 0), or nothing (the workers only take part)."""
    def gather(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, metadata) -> None:
        whole = [shard.all_gather(x, 1) for x in (q, k, v, out)]
        if hook is not None:
            hook(layer, *whole, metadata)
    return gather


def _worker_main(source: ModelSource, config: EngineConfig, rank: int, world: int, port: int,
                 max_model_len: int) -> None:
    """A worker process: join the group, build rank `rank`'s part, then serve until STOP.

    It ends with os._exit, not by returning: a spawned process's return runs the interpreter's
    finalisation, and there torch's C++ threads (gloo's, the rendezvous store's) can still wake
    up and take the GIL of an interpreter being torn down, which aborts the process
    ("terminate called without an active exception", exit code -6; pytorch/pytorch#179291)
    after it had stopped in order. Nothing is left to finalise: the group is destroyed and the
    output flushed first."""
    exit_code = 1  # until it stops in order
    try:
        _serve_rank(source, config, rank, world, port, max_model_len)
        exit_code = 0
    except Exception as exc:  # noqa: BLE001 - one line, then the driver reports the rank gone
        print(f"minillama tensor-parallel rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception as exc:  # noqa: BLE001 - still one line and an exit
            print(f"minillama tensor-parallel rank {rank}: leaving the group: {exc}", file=sys.stderr)
            exit_code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def _serve_rank(source: ModelSource, config: EngineConfig, rank: int, world: int, port: int,
                max_model_len: int) -> None:
    """Join the group as rank `rank`, build its part of the model and its runner, serve."""
    # Ctrl-C in a terminal reaches every process of the group; the driver decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(max(1, torch.get_num_threads() // world))  # the CPUs are shared by the ranks
    device = config.resolved_device()
    if device.type == "cuda":  # rank r computes on cuda:r
        torch.cuda.set_device(rank)
        config = dataclasses.replace(config, device=f"cuda:{rank}")
    # A client of rank 0's store, as rank 0 passes its own: both without init_method's key prefix.
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=TIMEOUT)
    dist.init_process_group(backend(device), store=store, rank=rank, world_size=world, timeout=TIMEOUT)
    model_config = (source.model_config if isinstance(source, RandomWeights)
                    else ModelConfig.from_file(source / "config.json"))
    model = load_rank_model(source, model_config, config, Shard(rank, world), max_model_len)
    device = config.resolved_device()
    runner = ModelRunner(model, model_config, config.for_device(device), device,
                         config.resolved_dtype(device), max_model_len)
    _serve(runner)


def _serve(runner: ModelRunner) -> None:
    """Run what rank 0 sends, in order, until it says STOP."""
    with torch.inference_mode():
        while True:
            command, flag, tensors = wire.receive(runner.device)
            if command is wire.Command.STOP:
                return
            if command is wire.Command.RUN:
                hook = _gathering_hook(runner.model.shard) if flag & wire.GATHER_ATTENTION else None
                inputs = wire.tensors_to_inputs(tensors, runner)
                runner.run(inputs, hook, float32=bool(flag & wire.FLOAT32))  # rank 0 samples
                if flag & wire.GATHER_QUERIES and runner.last_queries is not None:
                    runner.model.shard.all_gather(runner.last_queries, 2)
            elif command is wire.Command.READ_KEYS:
                runner.model.shard.all_gather(runner.read_keys(*tensors), 2)
            elif command is wire.Command.COPY_KV:
                runner.copy_kv_table(tensors[0])
            elif command is wire.Command.READOUT:
                runner.readout(tensors[0])
            elif command is wire.Command.CAPTURE_QUERIES:
                runner.enable_query_capture()
