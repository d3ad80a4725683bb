"""Tensor parallelism on CPUs (gloo, 2 and 4 processes): the split engine must compute what the
whole model computes in one process (minillama/parallel/).

Each rank holds a slice of every layer, so its partial sums add up in another order than the
single process's matmuls: fp32 logits agree to ~1e-6, not bit for bit, and greedy tokens are
compared on a model whose top two logits are never that close (checked)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tiny_model import write_byte_tokenizer

from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.engine.outputs import EngineStats
from minillama.errors import ConfigError, ModelLoadError
from minillama.parallel.shard import check_splits
from minillama.parallel.workers import TensorParallelError

# Heads, KV heads, features and vocabulary all divide by 2 and by 4.
SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256)
PROMPTS = [[5, 17, 200, 3], list(range(40, 90)), [7] * 23, [255, 0, 128]]
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random Llama (std 0.1: outputs that vary, not one repeated token) with a byte-level
    tokenizer (the command line takes text)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tp_model")
    config = LlamaConfig(**SHAPE, tie_word_embeddings=False, initializer_range=0.1,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    write_byte_tokenizer(path)
    return path


def run(model_dir: Path, tp: int, requests: list[tuple[list[int], SamplingParams]], **config) -> tuple[dict, list, EngineStats]:
    """Every output token per request, the logits of every forward pass and the engine's
    counters, from an engine split over `tp` processes."""
    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=tp, **config))
    logits: list[torch.Tensor] = []
    forward = engine.runner.run

    def recording_run(*args, **kwargs):
        out = forward(*args, **kwargs)
        logits.append(out.float().clone())
        return out

    engine.runner.run = recording_run
    try:
        ids = [engine.add_request(prompt, params) for prompt, params in requests]
        tokens: dict[int, list[int]] = {i: [] for i in ids}
        while engine.has_unfinished():
            for output in engine.step():
                tokens.setdefault(output.request_id, []).append(output.token_id)
        return tokens, logits, engine.stats
    finally:
        engine.close()


def assert_same(single: tuple, split: tuple) -> None:
    assert len(single[1]) == len(split[1])
    for a, b in zip(single[1], split[1]):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-5)
        if a.numel() == 0:  # a prefill chunk that samples nothing
            continue
        top2 = a.topk(2, dim=-1).values
        # The logits move by ~1e-6: a margin of 1e-4 between the best two cannot be crossed.
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-4, "a near tie: the tokens could differ for rounding alone"
    assert single[0] == split[0]


@pytest.mark.parametrize("tp", [2, 4])
def test_greedy_tokens_and_logits_equal_the_single_process_engine(model_dir, tp):
    requests = [(prompt, GREEDY) for prompt in PROMPTS]
    assert_same(run(model_dir, 1, requests), run(model_dir, tp, requests))


def test_chunked_prefill_prefix_caching_and_preemption_under_tensor_parallelism(model_dir):
    # A 16-token prefill budget chunks the 30-token prompt; the repeated prompt hits the prefix
    # cache; 16 blocks of 4 tokens cannot hold the four sequences at full length (40 blocks).
    config = dict(max_num_batched_tokens=16, block_size=4, num_kv_blocks=16, max_model_len=64)
    requests = [(PROMPTS[0] * 2, GREEDY), (PROMPTS[1][:30], GREEDY), (PROMPTS[0] * 2, GREEDY), (PROMPTS[2], GREEDY)]
    single, split = run(model_dir, 1, requests, **config), run(model_dir, 2, requests, **config)
    assert_same(single, split)
    stats = split[2]
    assert stats.preemptions > 0 and stats.prefill_steps > 4
    assert stats.prefill_tokens < sum(len(prompt) for prompt, _ in requests) + stats.preemptions * 64  # cache hits


def test_beams_and_samples_share_blocks_under_tensor_parallelism(model_dir):
    # Forks copy their parent's partial block on write, on every rank.
    requests = [(PROMPTS[1], SamplingParams(beam_width=3, max_tokens=8, ignore_eos=True)),
                (PROMPTS[0], SamplingParams(n=3, temperature=0, max_tokens=8, ignore_eos=True))]
    single, split = run(model_dir, 1, requests, block_size=4), run(model_dir, 2, requests, block_size=4)
    assert single[0] == split[0]
    for a, b in zip(single[1], split[1]):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-5)


def test_a_killed_worker_is_reported_and_no_process_is_left(model_dir):
    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=2))
    worker = engine.runner.group.workers[0]
    engine.add_request(PROMPTS[1], SamplingParams(temperature=0, max_tokens=200, ignore_eos=True))
    engine.step()
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(TensorParallelError, match="rank 1 exited with code -9"):
        for _ in range(100):
            engine.step()
    assert not worker.is_alive() and not dist.is_initialized()
    with pytest.raises(TensorParallelError, match="stopped"):
        engine.step()
    # The process can start another split engine afterwards.
    tokens, _, _ = run(model_dir, 2, [(PROMPTS[0], GREEDY)])
    assert len(tokens[0]) == GREEDY.max_tokens


def test_close_stops_the_workers(model_dir):
    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=2))
    workers = list(engine.runner.group.workers)
    engine.close()
    engine.close()  # twice is fine
    assert [w.exitcode for w in workers] == [0] and not dist.is_initialized()  # ended in order, no abort


def test_a_split_engine_gives_the_process_its_threads_back(model_dir, tmp_path):
    """While a split engine lives its ranks share the CPUs, so this process uses 1/N of its
    torch threads. They were never given back: each split engine halved them for good, and
    every later engine and test of the process computed with fewer (an order dependence)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        engine = LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=2))
        assert torch.get_num_threads() == 2
        engine.close()
        assert torch.get_num_threads() == 4
        (tmp_path / "config.json").write_text((model_dir / "config.json").read_text())  # no weights: refused
        with pytest.raises(ModelLoadError):
            LLMEngine.from_pretrained(tmp_path, EngineConfig(tensor_parallel_size=2))
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_settings_a_split_cannot_take_are_refused_with_a_clear_error(model_dir):
    from transformers import LlamaConfig

    from minillama.config import ModelConfig

    shape = ModelConfig.from_dict(LlamaConfig(**SHAPE).to_dict())
    with pytest.raises(ConfigError, match=r"must divide the model's num_attention_heads \(8\)"):
        check_splits(shape, 3, torch.device("cpu"))
    if torch.cuda.device_count() < 4:
        with pytest.raises(ConfigError, match=r"--tensor-parallel-size 4 needs 4 GPUs, one a rank; this machine has \d"):
            check_splits(shape, 4, torch.device("cuda"))
    with pytest.raises(ConfigError, match="runs rank r on cuda:r, not on --device cuda:1; choose the GPUs with "
                                          "CUDA_VISIBLE_DEVICES"):
        check_splits(shape, 2, torch.device("cuda:1"))
    with pytest.raises(ConfigError, match=r"must divide the model's num_key_value_heads \(4\)"):
        LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=8))
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ConfigError, match="tensor_parallel_size"):
            LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=bad))
    assert not dist.is_initialized()


def test_random_weights_split_each_rank_drawing_its_own_slices():
    """from_config (the benchmarks' random weights) split over 2 ranks: every rank draws its
    slices (seed + rank), so it runs like any split engine; it has no checkpoint to give a float32
    reference copy, which needs the whole model."""
    from transformers import LlamaConfig

    from minillama.config import ModelConfig

    shape = ModelConfig.from_dict(LlamaConfig(**SHAPE).to_dict())
    engine = LLMEngine.from_config(shape, EngineConfig(device="cpu", tensor_parallel_size=2))
    try:
        engine.add_request(PROMPTS[1], GREEDY)
        tokens = [o.token_id for _ in range(200) if engine.has_unfinished() for o in engine.step()]
        assert len(tokens) == GREEDY.max_tokens and len(set(tokens)) > 1
        with pytest.raises(ConfigError, match="reference copy of random weights: only with the whole model"):
            LLMEngine.reference_copy(engine)
    finally:
        engine.close()
    assert not dist.is_initialized()


def test_shared_weights_and_the_whole_cache_need_the_whole_model(model_dir):
    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=2))
    try:
        with pytest.raises(ConfigError, match="sharing the weights .*: only with the whole model"):
            LLMEngine.sharing_weights(engine, EngineConfig())
        with pytest.raises(ConfigError, match="kv_cache .*: only with the whole model"):
            _ = engine.kv_cache
    finally:
        engine.close()


def test_the_readout_runs_on_every_rank(model_dir):
    # The logit lens's readout (final norm, LM head): each rank computes its vocabulary slice.
    hidden = torch.randn(5, SHAPE["hidden_size"], generator=torch.Generator().manual_seed(0))
    whole = LLMEngine.from_pretrained(model_dir, EngineConfig())
    split = LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=2))
    try:
        expected = whole.readout(hidden)
        torch.testing.assert_close(split.readout(hidden), expected, atol=2e-5, rtol=1e-5)
        tokens: list[int] = []  # and the engine still steps in step with its workers
        split.add_request(PROMPTS[0], GREEDY)
        while split.has_unfinished():
            tokens += [o.token_id for o in split.step()]
        assert len(tokens) == GREEDY.max_tokens and expected.shape == (5, SHAPE["vocab_size"])
    finally:
        split.close()


def test_the_command_line_runs_split_and_refuses_a_bad_size_in_one_line(model_dir):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    base = [sys.executable, "-m", "minillama", "--model", str(model_dir), "--max-tokens", "5"]
    ok = subprocess.run([*base, "--tensor-parallel-size", "2", "--prompt", "hello"],
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "[5 tokens, length]" in ok.stdout
    bad = subprocess.run([*base, "--tensor-parallel-size", "3", "--prompt", "hello"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "num_attention_heads" in bad.stderr


DRIVER = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the caller's shell ignores
from minillama import EngineConfig, LLMEngine, SamplingParams
engine = LLMEngine.from_pretrained(sys.argv[1], EngineConfig(tensor_parallel_size=2))
print(*(w.pid for w in engine.runner.group.workers), flush=True)
while True:
    if not engine.has_unfinished():
        engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_tokens=50, ignore_eos=True))
    engine.step()
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_ctrl_c_or_a_killed_driver_leaves_no_worker_behind(model_dir, how):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(model_dir)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        workers = [int(pid) for pid in driver.stdout.readline().split()]
        assert workers, driver.stderr.read()
        time.sleep(1.0)  # stepping
        driver.send_signal(how)
        driver.wait(timeout=60)
        deadline = time.monotonic() + 30  # a worker sees its peer's socket close, then exits
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        driver.kill()
        driver.wait()


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not reaped by its dead parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_checkpoint_no_rank_can_read_fails_cleanly(model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut in half
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        LLMEngine.from_pretrained(broken, EngineConfig(tensor_parallel_size=2))
    assert not dist.is_initialized()
    assert not any("spawn_main" in _cmdline(pid) for pid in _children())


def _children() -> list[int]:
    """This process's child processes (the workers it spawned and did not reap)."""
    me = str(os.getpid())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def record(model_dir: Path, tp: int):
    """A debugger session's trace of three greedy requests (the third hits the first's cached
    prefix), attention traced for the first and third, the logit lens on."""
    from inspector import CapturePolicy, DebugSession

    engine = LLMEngine.from_pretrained(model_dir, EngineConfig(tensor_parallel_size=tp, block_size=4))
    try:
        session = DebugSession(engine, CapturePolicy(attention_requests=(0, 2), logit_lens=True))
        session.add(PROMPTS[1][:21], GREEDY)
        session.step()  # the first prompt's blocks are cached before the others arrive
        session.add(PROMPTS[0], GREEDY)
        session.add(PROMPTS[1][:21] + [9, 9], GREEDY)
        assert session.run().finished
        return session.trace
    finally:
        engine.close()


def test_the_recorder_sees_the_whole_model_under_tensor_parallelism(model_dir):
    """Every head's queries and keys (gathered from the ranks that hold them, the prefix-cache
    hit's keys read on every rank), the logit lens (read out on every rank) and the logits
    summaries equal the single process's."""
    single, split = record(model_dir, 1), record(model_dir, 2)
    assert sorted(single.attention) == sorted(split.attention) == [0, 2]
    assert -1 in single.attention[2].q_step.tolist()  # keys it read from the prefix cache
    for seq_id, store in single.attention.items():
        other = split.attention[seq_id]
        assert (store.layers, store.q_step.tolist()) == (other.layers, other.q_step.tolist())
        torch.testing.assert_close(other.q, store.q, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(other.k, store.k, atol=2e-5, rtol=1e-5)
    assert len(single.steps) == len(split.steps)
    for a, b in zip(single.steps, split.steps):
        assert [(t.seq_id, t.token_id) for t in a.tokens] == [(t.seq_id, t.token_id) for t in b.tokens]
        for ta, tb in zip(a.tokens, b.tokens):
            assert ta.logits.top_ids == tb.logits.top_ids
            assert ta.logits.top_probs == pytest.approx(tb.logits.top_probs, abs=1e-5)
            assert (ta.lens is None) == (tb.lens is None)
            if ta.lens is not None:
                assert ta.lens.top_ids == tb.lens.top_ids
    assert any(t.lens is not None for step in split.steps for t in step.tokens)
    assert split.attention[0].q.shape[2] == SHAPE["num_attention_heads"]  # every rank's heads
    assert split.model.weights_fingerprint is None and single.model.weights_fingerprint is not None


def test_a_trace_recorded_split_opens_and_says_which_rank_computed_each_head(model_dir, tmp_path):
    from inspector import load, save
    from inspector.trace import format_step
    from inspector.views import attention_figure, step_details_html
    from webui.render import head_label

    save(record(model_dir, 2), tmp_path / "split.mltrace")
    trace = load(tmp_path / "split.mltrace")
    assert trace.model.tensor_parallel_size == 2
    assert [head_label(trace, h) for h in (0, 3, 4, 7)] == ["head 0 (rank 0)", "head 3 (rank 0)",
                                                            "head 4 (rank 1)", "head 7 (rank 1)"]
    step = len(trace.steps) - 1
    assert trace.steps[step].timings.collective_ms > 0
    assert "all-reduce etc. (2 ranks)" in step_details_html(trace, step)
    assert "joining the ranks" in format_step(trace, step)
    attention_figure(trace, step)  # the attention view draws from the gathered heads


def test_a_trace_whose_split_does_not_divide_its_heads_is_refused(model_dir, tmp_path):
    import json
    import zipfile

    from inspector import load, save
    from inspector.trace import TraceError

    path = tmp_path / "split.mltrace"
    save(record(model_dir, 1), path)
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    document = json.loads(files["trace.json"])
    assert document["trace"]["model"]["tensor_parallel_size"] == 1
    document["trace"]["model"]["tensor_parallel_size"] = 3  # the model has 4 KV heads
    files["trace.json"] = json.dumps(document).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(TraceError, match="tensor_parallel_size 3 does not divide its 4 kv heads"):
        load(path)


def test_a_rank_puts_a_decode_block_where_its_graphs_read_it():
    """What a worker does with rank 0's decode step on GPUs, emulated on the CPU: two runners
    with decode-graph input buffers (no graphs: a CPU cannot capture), the first preparing a
    batch of 3 (padded to the graph of 4), the second receiving what wire would send. The block
    lands in the second runner's graph input buffer, header included, as the first's did; a
    block padded to no graph's size runs as it came."""
    from transformers import LlamaConfig

    from minillama.config import ModelConfig
    from minillama.engine.model_runner import ModelRunner
    from minillama.parallel import wire

    shape = ModelConfig.from_dict(LlamaConfig(**SHAPE).to_dict())
    engine = LLMEngine.from_config(shape, EngineConfig(device="cpu", max_num_seqs=8, num_kv_blocks=64))
    rank0 = engine.runner
    rank1 = ModelRunner(rank0.model, shape, engine.config, rank0.device, rank0.dtype, engine.max_model_len)
    for runner in (rank0, rank1):
        with torch.inference_mode(False):
            runner._make_static_buffers(runner.max_num_seqs)
        runner.graph_sizes = runner._graph_sizes(runner.max_num_seqs)
    for prompt in PROMPTS[:3]:
        engine.add_request(prompt, GREEDY)
    engine.step()  # the prefill
    batch = engine.scheduler.schedule()
    assert batch.phase == "decode" and len(batch.scheduled) == 3
    sent = rank0.prepare(batch)
    assert sent.graph_size == 4 and rank0._in_graph_buffer(sent)

    tensors = wire.inputs_to_tensors(sent)
    assert len(tensors) == 2  # the sizes, then the packed block: all a decode step sends
    received = wire.tensors_to_inputs([t.clone() for t in tensors], rank1)
    assert received.graph_size == 4 and rank1._in_graph_buffer(received)
    used = 1 + sent.packed.numel()
    assert torch.equal(rank1.static["inputs"][:used], rank0.static["inputs"][:used])
    for name in ("input_ids", "positions"):
        assert torch.equal(getattr(received, name), getattr(sent, name))
    assert torch.equal(received.metadata.slot_mapping, sent.metadata.slot_mapping)

    unpadded = sent.packed[:3].clone()
    eager = rank1.decode_inputs(unpadded, 3)
    assert eager.graph_size is None and eager.packed is unpadded


def test_a_worker_refuses_a_message_whose_header_it_cannot_read(monkeypatch):
    """wire.receive checks every number of a header before it allocates anything: the command,
    the count, each tensor's dtype code, device flag and shape. (The broadcasts are replaced by
    a queue of what rank 0 would have sent.)"""
    from minillama.parallel import wire

    def message(command: int, entries: list[list[int]], payloads: list[torch.Tensor] = ()) -> list[torch.Tensor]:
        header = torch.full((wire.HEADER_INTS,), -1, dtype=torch.int64)
        header[:3] = torch.tensor([command, 0, len(entries)])
        for i, entry in enumerate(entries):
            header[3 + wire.ENTRY_INTS * i: 3 + wire.ENTRY_INTS * (i + 1)] = torch.tensor(entry)
        return [header, *payloads]

    def _with_count(count: int) -> torch.Tensor:  # a header claiming more tensors than fit in it
        header = message(wire.Command.RUN, [])[0]
        header[2] = count
        return header

    def receive(sent: list[torch.Tensor]):
        queue = list(sent)
        monkeypatch.setattr(wire.dist, "broadcast", lambda tensor, src: tensor.copy_(queue.pop(0)))
        return wire.receive(torch.device("cpu"))

    payload = torch.arange(6, dtype=torch.int32).view(2, 3)
    command, _, tensors = receive(message(wire.Command.COPY_KV, [[1, 0, 2, 3]], [payload]))
    assert command is wire.Command.COPY_KV and torch.equal(tensors[0], payload)
    for bad_header, why in [
        (message(99, []), "bad header"),
        ([_with_count(wire.MAX_TENSORS + 1)], "bad header"),
        (message(wire.Command.RUN, [[len(wire.DTYPES), 0, 1, -1]]), "bad tensor entry"),
        (message(wire.Command.RUN, [[0, 2, 1, -1]]), "bad tensor entry"),  # the device flag
        (message(wire.Command.RUN, [[0, 0, -5, -1]]), "bad tensor entry"),
        (message(wire.Command.RUN, [[0, 0, 1, -7]]), "bad tensor entry"),
    ]:
        with pytest.raises(RuntimeError, match=f"tensor-parallel message with a {why}"):
            receive(bad_header)
