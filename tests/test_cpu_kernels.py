"""The C kernels of a CPU decode step against what they replace, and when the model uses them:
the 1-8 row linear layers (minillama/ops/cpu/skinny_linear.c) against an exact product, the fused
ops (cpu_ops.c: residual add + RMSNorm, RoPE + KV-cache write, SwiGLU) against the PyTorch code
each replaces (minillama/ops/reference/), and the ops table's rule for which calls they take
(minillama/ops/select.py). (The decode attention kernel, ops/cpu/cpu_paged.c, is held to the
reference with the other backends in test_attention.py.)

Tolerance of the linear layers: each output is a dot product of K fp32 terms, summed in another order than BLAS
sums them (16 lanes, then across lanes). The difference to the exact (fp64) product is a few
fp32 roundings of the running sum, so it is held to 1e-6 * sqrt(K) of the terms' magnitude,
|x| @ |W|^T, a bound that random-order rounding stays far within and a wrong element breaks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_model import TINY

from minillama import EngineConfig, LLMEngine, ModelConfig, SamplingParams
from minillama.model.attention_metadata import AttentionMetadata
from minillama.model.linear import Linear
from minillama.model.norm import RMSNorm
from minillama.ops.cpu import c_kernels, cpu_ops, cpu_paged, skinny_linear
from minillama.ops.cpu.bounded_run import run_bounded
from minillama.ops.cpu.skinny_linear import MAX_ROWS
from minillama.ops.reference.rotary_and_store import apply_rotary, store_kvcache
from minillama.ops.select import select_ops
from minillama.ops.table import Ops

pytestmark = pytest.mark.skipif(
    not (skinny_linear.available() and cpu_ops.available()), reason="no C compiler to build the kernels"
)


def assert_near_exact(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    exact = x.double() @ weight.double().T
    scale = x.double().abs() @ weight.double().abs().T
    assert out.dtype == torch.float32 and out.shape == exact.shape
    assert bool(((out.double() - exact).abs() <= 1e-6 * x.shape[1] ** 0.5 * scale + 1e-30).all())


@pytest.mark.parametrize("rows", range(1, MAX_ROWS + 1))
@pytest.mark.parametrize(("n", "k"), [(1, 5), (7, 16), (33, 17), (960, 576), (257, 1536)])
def test_the_kernel_equals_the_exact_product(rows, n, k):
    """Odd column counts (the last column alone), K under 16 and not a multiple of it (the
    scalar tail), and the embedded model's shapes."""
    x, weight = torch.randn(rows, k), torch.randn(n, k)
    assert_near_exact(skinny_linear.skinny_linear(x, weight), x, weight)


def test_rows_that_are_not_contiguous_are_copied_first():
    wide, weight = torch.randn(4, 128), torch.randn(10, 64)
    x = wide[:, ::2]
    assert not x.is_contiguous()
    assert_near_exact(skinny_linear.skinny_linear(x, weight), x, weight)


@pytest.mark.parametrize("rows", [0, MAX_ROWS + 1])
def test_row_counts_outside_1_to_8_are_refused(rows):
    with pytest.raises(ValueError, match="1 to 8 rows"):
        skinny_linear.skinny_linear(torch.randn(rows, 16), torch.randn(4, 16))


def ops_table(fused_ops: bool) -> Ops:
    """The ops table of a CPU fp32 engine: the C kernels' ("cpu"), or with fused_ops off the reference."""
    config = ModelConfig.from_dict(dict(TINY, head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0))
    return select_ops(torch.device("cpu"), torch.float32, config, fused_ops, "sdpa")


def test_linear_sends_only_1_to_8_rows_without_autograd_to_the_kernel(monkeypatch):
    calls = []
    kernel = skinny_linear.skinny_linear
    monkeypatch.setattr(skinny_linear, "skinny_linear", lambda x, w: calls.append(x.shape[0]) or kernel(x, w))
    layer = Linear(64, 48, ops_table(fused_ops=True))
    with torch.inference_mode():
        for rows in (1, 2, 8, 9):
            x = torch.randn(rows, 64)
            assert_near_exact(layer(x), x, layer.weight.detach())
    assert calls == [1, 2, 8]  # nine: more than the kernel takes
    out = layer(torch.randn(4, 64))  # autograd on: the kernel has no backward
    assert calls == [1, 2, 8] and out.grad_fn is not None
    reference = Linear(64, 48, ops_table(fused_ops=False))
    with torch.inference_mode():
        reference(torch.randn(4, 64))
    assert calls == [1, 2, 8]


def test_a_biased_linear_takes_the_kernel_and_adds_its_bias_to_every_row(monkeypatch):
    """attention_bias / mlp_bias: the kernel's product plus the bias, for every row count on
    either side of the kernel's limit, equal to F.linear with the bias (the kernel once skipped
    a biased layer; now it serves it)."""
    calls = []
    kernel = skinny_linear.skinny_linear
    monkeypatch.setattr(skinny_linear, "skinny_linear", lambda x, w: calls.append(x.shape[0]) or kernel(x, w))
    layer = Linear(64, 48, ops_table(fused_ops=True), bias=True)
    with torch.no_grad():
        layer.bias.normal_(0.0, 1.0)
    with torch.inference_mode():
        for rows in (1, 2, 8, 9, 16):
            x = torch.randn(rows, 64)
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(layer(x, with_bias=False), F.linear(x, layer.weight), rtol=1e-5, atol=1e-5)
    assert calls == [1, 1, 2, 2, 8, 8]


def clear_builds() -> None:
    """Forget the loaded libraries, so that the next use builds (or fails to build) again."""
    c_kernels._compiler.cache_clear()
    for library in (skinny_linear.KERNEL, cpu_paged.KERNEL, cpu_ops.KERNELS):
        library.forget()


@pytest.fixture
def fresh_builds() -> Iterator[None]:
    """A test whose first use of the kernels builds them anew (under the $CC or MINILLAMA_CACHE
    it sets), and after which the next test's use builds them again."""
    clear_builds()
    yield
    clear_builds()


def linears(engine: LLMEngine) -> list[Linear]:
    return [m for m in engine.runner.model.modules() if isinstance(m, Linear)]


def test_a_cpu_fp32_engine_uses_the_kernel_unless_fused_ops_are_off(tiny_model_dir):
    path, _ = tiny_model_dir("gqa-tied-llama3")
    on = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32"))
    off = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32", fused_ops=False))
    bf16 = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="bfloat16"))
    assert len(linears(on)) == 2 * 4 + 1  # qkv, o, gate_up, down per layer; the LM head
    assert on.runner.model.ops.name == "cpu"
    assert off.runner.model.ops.name == bf16.runner.model.ops.name == "reference"
    # One table for the whole model: every module that computes holds the engine's.
    holders = [m for m in on.runner.model.modules() if hasattr(m, "ops")]
    assert len(holders) > len(linears(on)) and all(m.ops is on.runner.model.ops for m in holders)
    # Same tokens either way (the HF parity tests hold the kernel's engine to transformers).
    assert generate(on) == generate(off)


def generate(engine: LLMEngine) -> list[list[int]]:
    """Three greedy requests decoded as one batch (3 rows: the kernel's path)."""
    params = SamplingParams(temperature=0, max_tokens=8)
    ids = [engine.add_request(p, params) for p in ([1, 2, 3, 4, 5], [9, 8, 7], [4, 4, 4, 4])]
    while engine.has_unfinished():
        engine.step()
    return [engine.sequences[i].output_token_ids for i in ids]


def test_without_a_compiler_the_engine_warns_and_uses_blas(monkeypatch, tmp_path, tiny_model_dir, fresh_builds):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(UserWarning, match="no C compiler"):
        assert not skinny_linear.available()
    path, _ = tiny_model_dir("gqa-tied-llama3")
    engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32"))
    assert engine.runner.model.ops.name == "reference"
    assert engine.runner.model.ops.attention.name == "sdpa"


# What $CC may be: (the script's body, a fragment of the warning). Each leaves the CPU path on
# PyTorch ops after one warning, and nothing half-written in the cache.
MISBEHAVING_COMPILERS = {
    "fails": ("echo 'fake-cc: cannot compile' >&2\nexit 1", "fake-cc: cannot compile"),
    # It waited for ever, and the engine with it; the sleep it started is killed too.
    "hangs": ("sleep 600 &\necho $! > \"$0.child\"\nwait", "ran past 1 s; killed"),
    # subprocess.run kept all of it in memory: only the end is kept, which says what failed.
    "floods-then-fails": ("head -c 5000000 /dev/zero | tr '\\0' x\necho 'fake-cc: the end' >&2\nexit 1",
                          "fake-cc: the end"),
}


@pytest.mark.parametrize("body, fragment", MISBEHAVING_COMPILERS.values(), ids=MISBEHAVING_COMPILERS)
def test_a_misbehaving_compiler_warns_and_leaves_nothing(monkeypatch, tmp_path, body, fragment, fresh_builds):
    fake = tmp_path / "cc"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(c_kernels, "COMPILE_SECONDS", 1.0)
    with pytest.warns(UserWarning, match=fragment) as warned:
        assert not skinny_linear.available()
    assert len(str(warned[0].message)) < 1000  # the end of what it said, not 5 MB of it
    assert not list((tmp_path / "cache" / "kernels").iterdir())  # nothing half-written is left
    child = tmp_path / "cc.child"
    if child.exists():  # the process the compiler started is gone (or a zombie about to be reaped)
        state = Path(f"/proc/{child.read_text().strip()}/stat")
        assert not state.exists() or state.read_text().split(") ")[1].startswith("Z")


def test_run_bounded_keeps_only_the_end_of_the_output():
    """The bytes kept are counted: 1,000,000 written, the last `keep` returned."""
    text = run_bounded(["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' a; printf end"], seconds=60, keep=100)
    assert len(text) == 100 and text.endswith("aend")


@pytest.mark.parametrize("name", ["cache-not-utf-8", "cache-unknown-user"])
def test_a_cache_folder_that_cannot_be_named_warns_and_runs_on_pytorch(monkeypatch, tmp_path, name, fresh_builds):
    """cache_root() refuses it (CacheFolderError, an OSError): the build warns, the engine runs on."""
    value = {"cache-not-utf-8": f"{tmp_path}/caf\udce9", "cache-unknown-user": "~no-such-user-here/cache"}[name]
    monkeypatch.setenv("MINILLAMA_CACHE", value)
    with pytest.warns(UserWarning, match="MINILLAMA_CACHE=.* cannot hold minillama's cache"):
        assert not skinny_linear.available()


def test_a_cache_that_cannot_take_the_build_is_named_in_the_warning(monkeypatch, tmp_path, fresh_builds):
    """It warned "[Errno 17] File exists: '...'", naming no variable."""
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path / "file"))
    with pytest.warns(UserWarning, match="MINILLAMA_CACHE=.* cannot hold minillama's cache: .* is a file"):
        assert not skinny_linear.available()


def test_the_result_matches_f_linear_on_the_embedded_models_shapes():
    """The same product BLAS computes, within fp32 rounding, for 8 rows of each weight shape."""
    for n, k in [(960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576)]:
        x, weight = torch.randn(8, k), torch.randn(n, k) * 0.02
        torch.testing.assert_close(skinny_linear.skinny_linear(x, weight), F.linear(x, weight), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("size", [64, 576, 2048])
def test_the_norm_kernel_equals_pytorchs_norm(rows, size):
    """add_and_norm and the plain norm, against the same module on the reference ops: within a
    few fp32 ulps (the sum of squares is summed in another order)."""
    layer, fast = RMSNorm(size, 1e-5, ops_table(fused_ops=False)), RMSNorm(size, 1e-5, ops_table(fused_ops=True))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(size))
        fast.weight.copy_(layer.weight)
    x, residual = torch.randn(rows, size) * 3, torch.randn(rows, size)
    before = residual.clone()
    with torch.inference_mode():
        expected = layer.add_and_norm(x, residual), layer(residual)
        got = fast.add_and_norm(x, residual), fast(residual)
    (normed, stream), plain = got
    torch.testing.assert_close(stream, expected[0][1], rtol=0, atol=0)  # the add: exact
    torch.testing.assert_close(normed, expected[0][0], rtol=4e-6, atol=1e-6)
    torch.testing.assert_close(plain, expected[1], rtol=4e-6, atol=1e-6)
    assert torch.equal(residual, before)  # the residual given is left as it was


def test_the_norm_and_swiglu_kernels_take_up_to_8_rows_without_autograd(monkeypatch):
    calls = []
    norm_kernel, swiglu_kernel = cpu_ops.add_rms_norm, cpu_ops.silu_and_mul
    monkeypatch.setattr(cpu_ops, "add_rms_norm", lambda *a: calls.append(("norm", a[1].shape[0])) or norm_kernel(*a))
    monkeypatch.setattr(cpu_ops, "silu_and_mul", lambda g: calls.append(("swiglu", g.shape[0])) or swiglu_kernel(g))
    ops = ops_table(fused_ops=True)
    layer = RMSNorm(64, 1e-6, ops)
    with torch.inference_mode():
        for rows in (1, 8, 9):
            layer.add_and_norm(torch.randn(rows, 64), torch.randn(rows, 64))
            ops.silu_and_mul(torch.randn(rows, 32))
    assert calls == [("norm", 1), ("swiglu", 1), ("norm", 8), ("swiglu", 8)]
    out, _ = layer.add_and_norm(torch.randn(2, 64), torch.randn(2, 64))  # autograd on
    assert len(calls) == 4 and out.grad_fn is not None


def test_rope_and_the_cache_write_take_the_kernel_in_decode_steps_only(monkeypatch):
    """Whatever the batch: 9 rows of a decode step go to the kernel, 2 rows of a prefill do not;
    both write the values into their slots."""
    calls = []
    kernel = cpu_ops.rotary_and_store
    monkeypatch.setattr(cpu_ops, "rotary_and_store", lambda *a: calls.append(a[0].shape[0]) or kernel(*a))
    ops = ops_table(fused_ops=True)
    heads, kv_heads, head_dim = 4, 2, 8
    for rows, is_prefill in ((9, False), (2, True)):
        caches = torch.zeros(2, 4, 4, kv_heads, head_dim)  # K and V: 4 blocks of 4 slots
        qkv, angles = torch.randn(rows, heads + 2 * kv_heads, head_dim), torch.randn(rows, 1, head_dim)
        metadata = AttentionMetadata(is_prefill, slot_mapping=torch.arange(rows))
        with torch.inference_mode():
            q = ops.rotary_and_store(qkv, angles.cos(), angles.sin(), caches[0], caches[1], metadata)
        assert q.shape == (rows, heads, head_dim)
        assert torch.equal(caches[1].flatten(0, 1)[:rows], qkv[:, heads + kv_heads :])
    assert calls == [9]


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(9, 3, 64), (4, 1, 32), (32, 8, 128)])
def test_rotary_and_store_equals_apply_rotary_then_store_kvcache(heads, kv_heads, head_dim):
    """The engine's RoPE tables, tokens at scattered slots, one padding token (slot -1)."""
    from minillama.model.rotary import RotaryEmbedding

    rows, block_size, num_blocks = 5, 4, 6
    qkv = torch.randn(rows, heads + 2 * kv_heads, head_dim)
    cos, sin = RotaryEmbedding(head_dim, 64, 10000.0, None).cos_sin(torch.tensor([0, 3, 17, 40, 63]), torch.float32)
    slots = torch.tensor([5, 0, 22, -1, 13])
    caches = [torch.zeros(num_blocks, block_size, kv_heads, head_dim) for _ in range(4)]
    q = cpu_ops.rotary_and_store(qkv, cos, sin, caches[0], caches[1], slots, heads, kv_heads, head_dim)
    qk = apply_rotary(qkv[:, : heads + kv_heads], cos, sin)
    expected_q, k = qk.split([heads, kv_heads], dim=1)
    kept = slots >= 0
    store_kvcache(k[kept], qkv[kept, heads + kv_heads :], caches[2], caches[3], slots[kept])
    torch.testing.assert_close(q, expected_q, rtol=2e-6, atol=1e-6)  # a fused multiply-add may round once less
    torch.testing.assert_close(caches[0], caches[2], rtol=2e-6, atol=1e-6)
    assert torch.equal(caches[1], caches[3])  # values are copied as they are


@pytest.mark.parametrize(("rows", "width"), [(1, 1536), (8, 1536), (3, 37)])
def test_silu_and_mul_equals_the_mlps_pytorch_ops(rows, width):
    """Its own e^x (vectorised) against torch's, over the normal range and past the clamps at
    -87 and 88; a width that is not a multiple of 16 takes the scalar tail too."""
    gate_up = torch.randn(rows, 2 * width) * 4
    gate_up[0, :8] = torch.tensor([-1000.0, -100.0, -88.0, -87.0, 0.0, 87.0, 88.5, 1000.0])
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(cpu_ops.silu_and_mul(gate_up), F.silu(gate) * up, rtol=4e-6, atol=1e-6)
