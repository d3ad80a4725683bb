/* The fused ops of a CPU decode step, in fp32: what triton/fused_ops.py does on a GPU with Triton,
   here in C. Each replaces a chain of small PyTorch ops by one call over a few rows; the work is
   tiny, and the chain's overhead is what costs (c_kernels.py says why). cpu_ops.py calls them
   and says which PyTorch code each one replaces; the tests hold them to it. */

#include <math.h>
#include <stddef.h>

/* reference/rms_norm.py's add_rms_norm. For each of the N rows (hidden vectors of `size` floats):
       stream = residual + x                   (x may be NULL: then stream = residual)
       out    = weight * (stream / sqrt(mean(stream^2) + eps))
   The sum of squares is accumulated in double, so its rounding does not depend on the order of
   the additions: it matches PyTorch's fp32 norm to a few ulps. */
void add_rms_norm(const float *x, const float *residual, const float *weight, float *out, float *stream, int N,
                  int size, float eps) {
    for (int n = 0; n < N; n++) {
        const float *r = residual + (long)n * size;
        float *s = stream + (long)n * size, *o = out + (long)n * size;
        for (int i = 0; i < size; i++) s[i] = x != NULL ? r[i] + x[(long)n * size + i] : r[i];
        double squares = 0.0;
        for (int i = 0; i < size; i++) squares += (double)s[i] * s[i];
        float scale = (float)(1.0 / sqrt(squares / size + eps));
        for (int i = 0; i < size; i++) o[i] = weight[i] * (s[i] * scale);
    }
}

/* RoPE on one head of D floats: with x1, x2 its halves, (x1, x2) -> (x1 cos - x2 sin,
   x2 cos + x1 sin), i.e. x * cos + cat(-x2, x1) * sin; cos, sin hold each half's angles twice. */
static void rotate(const float *x, const float *cos, const float *sin, float *out, int D) {
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        out[i] = x[i] * cos[i] - x[i + half] * sin[i];
        out[i + half] = x[i + half] * cos[i + half] + x[i] * sin[i + half];
    }
}

/* The attention layer's RoPE and store_kvcache (fused_ops.rotary_and_store on a GPU).
   qkv: [N, H + 2 Hkv, D], per token its H query heads, Hkv key heads, Hkv value heads;
   cos, sin: [N, D]; k_cache, v_cache: [num_slots, Hkv, D] (the paged cache seen flat: slot s
   is block s / block_size, row s % block_size); slots: [N], negative = padding, not written.
   q_out: [N, H, D], the rotated queries; the rotated keys and the values go to the cache. */
void rotary_and_store(const float *qkv, const float *cos, const float *sin, float *k_cache, float *v_cache,
                      const long *slots, float *q_out, int N, int H, int Hkv, int D) {
    for (int n = 0; n < N; n++) {
        const float *token = qkv + (long)n * (H + 2 * Hkv) * D, *c = cos + (long)n * D, *s = sin + (long)n * D;
        for (int h = 0; h < H; h++) rotate(token + (long)h * D, c, s, q_out + ((long)n * H + h) * D, D);
        if (slots[n] < 0) continue;
        for (int h = 0; h < Hkv; h++) {
            rotate(token + (long)(H + h) * D, c, s, k_cache + (slots[n] * Hkv + h) * D, D);
            const float *v = token + (long)(H + Hkv + h) * D;
            float *to = v_cache + (slots[n] * Hkv + h) * D;
            for (int i = 0; i < D; i++) to[i] = v[i];
        }
    }
}

/* 16 floats at a time, as GCC/Clang vectors (skinny_linear.c says more): the compiler maps
   them to the machine's SIMD registers. A cast between two vector types of one size keeps the
   bits, which is how exp_clamped writes 2^n. */
#define LANES 16
typedef float Vec __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));
typedef int VecInt __attribute__((vector_size(LANES * sizeof(int)), aligned(4)));

/* e^x, lane by lane, for x in [-87, 88] (beyond, x is clamped to the ends), to within a few
   ulps. The C library's expf is a call per element, which made SwiGLU the slowest of a decode
   step's small ops. The textbook method (Cephes' expf): e^x = 2^n * e^r with n = round(x / ln 2)
   and r = x - n ln 2 in [-ln2/2, ln2/2] (n ln 2 subtracted in two parts, so that r keeps its low
   bits); e^r by a polynomial; 2^n by writing n + 127 into the float's exponent bits. */
static Vec exp_clamped(Vec x) {
    for (int i = 0; i < LANES; i++) x[i] = x[i] < -87.0f ? -87.0f : x[i] > 88.0f ? 88.0f : x[i];
    /* Adding then subtracting 1.5 * 2^23 rounds to the nearest integer (the float has no bits
       left for a fraction at that size), and leaves n in the low bits of `shifted`. */
    Vec shifted = x * 1.44269504088896341f + 12582912.0f;
    Vec n = shifted - 12582912.0f;
    Vec r = x - n * 0.693359375f + n * 2.12194440e-4f;
    Vec p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    Vec e_r = p * r * r + r + 1.0f;
    VecInt exponent = ((VecInt)shifted - 0x4B400000 + 127) << 23; /* 0x4B400000: the bits of 1.5 * 2^23 */
    return e_r * (Vec)exponent;
}

/* The MLP's SwiGLU activation: gate_up [N, 2 I] (gate, then up) -> out [N, I],
   out = silu(gate) * up with silu(g) = g / (1 + e^-g). */
void silu_and_mul(const float *gate_up, float *out, int N, int I) {
    for (int n = 0; n < N; n++) {
        const float *gate = gate_up + (long)n * 2 * I, *up = gate + I;
        float *o = out + (long)n * I;
        int i = 0;
        for (; i + LANES <= I; i += LANES) {
            Vec g = *(const Vec *)(gate + i);
            *(Vec *)(o + i) = g / (1.0f + exp_clamped(-g)) * *(const Vec *)(up + i);
        }
        for (; i < I; i++) o[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i]; /* the last I % 16 */
    }
}
