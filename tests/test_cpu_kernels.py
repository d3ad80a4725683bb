"""The C kernels of a CPU decode step against what they replace, and when the model uses them:
the 1-8 row linear layers (minillama/model/skinny_linear.c) against an exact product, the fused
ops (cpu_ops.c: residual add + RMSNorm, RoPE + KV-cache write, SwiGLU) against the PyTorch code
each replaces. (The decode attention kernel,
attention/cpu_paged.c, is held to the reference with the other backends in test_attention.py.)

Tolerance of the linear layers: each output is a dot product of K fp32 terms, summed in another order than BLAS
sums them (16 lanes, then across lanes). The difference to the exact (fp64) product is a few
fp32 roundings of the running sum, so it is held to 1e-6 * sqrt(K) of the terms' magnitude,
|x| @ |W|^T, a bound that random-order rounding stays far within and a wrong element breaks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minillama import EngineConfig, LLMEngine, SamplingParams
from minillama.model import c_kernels, cpu_ops, norm, skinny_linear
from minillama.model.attention import cpu_paged
from minillama.model.attention.kv_cache import store_kvcache
from minillama.model.rotary import apply_rotary
from minillama.model.skinny_linear import MAX_ROWS, Linear

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


def test_linear_sends_only_1_to_8_rows_without_autograd_to_the_kernel(monkeypatch):
    calls = []
    kernel = skinny_linear.skinny_linear
    monkeypatch.setattr(skinny_linear, "skinny_linear", lambda x, w: calls.append(x.shape[0]) or kernel(x, w))
    layer = Linear(64, 48, bias=False)
    layer.skinny = True
    with torch.inference_mode():
        for rows in (1, 2, 8, 9):
            x = torch.randn(rows, 64)
            assert_near_exact(layer(x), x, layer.weight.detach())
    assert calls == [1, 2, 8]  # nine: more than the kernel takes
    out = layer(torch.randn(4, 64))  # autograd on: the kernel has no backward
    assert calls == [1, 2, 8] and out.grad_fn is not None
    layer.skinny = False
    with torch.inference_mode():
        layer(torch.randn(4, 64))
    assert calls == [1, 2, 8]


def clear_builds() -> None:
    """Forget the loaded libraries, so that the next use builds (or fails to build) again."""
    c_kernels._compiler.cache_clear()
    for library in (skinny_linear.KERNEL, cpu_paged.KERNEL, cpu_ops.KERNELS):
        library.forget()


def linears(engine: LLMEngine) -> list[Linear]:
    return [m for m in engine.runner.model.modules() if isinstance(m, Linear)]


def norms(engine: LLMEngine) -> list[torch.nn.Module]:
    """Every module with a fused-op switch: the norms, the attention layers, the MLPs."""
    return [m for m in engine.runner.model.modules() if hasattr(m, "c_kernel")]


def test_a_cpu_fp32_engine_uses_the_kernel_unless_fused_ops_are_off(tiny_model_dir):
    path, _ = tiny_model_dir("gqa-tied-llama3")
    on = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32"))
    off = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32", fused_ops=False))
    bf16 = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="bfloat16"))
    assert len(linears(on)) == 2 * 4 + 1  # qkv, o, gate_up, down per layer; the LM head
    assert all(m.skinny for m in linears(on)) and all(m.c_kernel for m in norms(on))
    assert not any(m.skinny for m in linears(off) + linears(bf16))
    assert not any(m.c_kernel for m in norms(off) + norms(bf16))
    # Same tokens either way (the HF parity tests hold the kernel's engine to transformers).
    assert generate(on) == generate(off)


def generate(engine: LLMEngine) -> list[list[int]]:
    """Three greedy requests decoded as one batch (3 rows: the kernel's path)."""
    params = SamplingParams(temperature=0, max_tokens=8)
    ids = [engine.add_request(p, params) for p in ([1, 2, 3, 4, 5], [9, 8, 7], [4, 4, 4, 4])]
    while engine.has_unfinished():
        engine.step()
    return [engine.sequences[i].output_token_ids for i in ids]


def test_without_a_compiler_the_engine_warns_and_uses_blas(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    clear_builds()
    try:
        with pytest.warns(UserWarning, match="no C compiler"):
            assert not skinny_linear.available()
        path, _ = tiny_model_dir("gqa-tied-llama3")
        engine = LLMEngine.from_pretrained(path, EngineConfig(device="cpu", dtype="float32"))
        assert not any(m.skinny for m in linears(engine)) and not any(m.c_kernel for m in norms(engine))
        assert engine.runner.model.model.layers[0].self_attn.backend.name == "sdpa"
    finally:
        clear_builds()


def test_a_failed_compile_warns_with_the_compilers_message(monkeypatch, tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'fake-cc: cannot compile' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("MINILLAMA_CACHE", str(tmp_path / "cache"))
    clear_builds()
    try:
        with pytest.warns(UserWarning, match="fake-cc: cannot compile"):
            assert not skinny_linear.available()
        assert not list((tmp_path / "cache" / "kernels").iterdir())  # nothing half-written is left
    finally:
        clear_builds()


def test_the_result_matches_f_linear_on_the_embedded_models_shapes():
    """The same product BLAS computes, within fp32 rounding, for 8 rows of each weight shape."""
    for n, k in [(960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576)]:
        x, weight = torch.randn(8, k), torch.randn(n, k) * 0.02
        torch.testing.assert_close(skinny_linear.skinny_linear(x, weight), F.linear(x, weight), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("size", [64, 576, 2048])
def test_the_norm_kernel_equals_pytorchs_norm(rows, size):
    """add_and_norm and the plain norm, against the same module's PyTorch ops: within a few fp32
    ulps (the sum of squares is summed in another order)."""
    layer = norm.RMSNorm(size, eps=1e-5)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(size))
    x, residual = torch.randn(rows, size) * 3, torch.randn(rows, size)
    before = residual.clone()
    with torch.inference_mode():
        expected = layer.add_and_norm(x, residual), layer(residual)
        layer.c_kernel = True
        got = layer.add_and_norm(x, residual), layer(residual)
    (normed, stream), plain = got
    torch.testing.assert_close(stream, expected[0][1], rtol=0, atol=0)  # the add: exact
    torch.testing.assert_close(normed, expected[0][0], rtol=4e-6, atol=1e-6)
    torch.testing.assert_close(plain, expected[1], rtol=4e-6, atol=1e-6)
    assert torch.equal(residual, before)  # the residual given is left as it was


def test_the_norm_kernel_takes_up_to_8_rows_without_autograd(monkeypatch):
    calls = []
    kernel = cpu_ops.add_rms_norm
    monkeypatch.setattr(cpu_ops, "add_rms_norm", lambda *a: calls.append(a[1].shape[0]) or kernel(*a))
    layer = norm.RMSNorm(64, eps=1e-6)
    layer.c_kernel = True
    with torch.inference_mode():
        for rows in (1, 8, 9):
            layer.add_and_norm(torch.randn(rows, 64), torch.randn(rows, 64))
    assert calls == [1, 8]
    out, _ = layer.add_and_norm(torch.randn(2, 64), torch.randn(2, 64))  # autograd on
    assert calls == [1, 8] and out.grad_fn is not None


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
