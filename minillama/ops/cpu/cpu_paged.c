/* Decode attention over the paged KV cache, in fp32, for the CPU: flash_attn_with_kvcache's
   job (one new query token per sequence) in one call instead of a dozen PyTorch ops.

   q:            [B, H, D]      the newest token of each of B sequences, after RoPE
   k_cache:      [num_blocks, block_size, Hkv, D]   (v_cache the same)
   block_tables: [B, W] int32   sequence b's token t lives in block block_tables[b, t / block_size],
                                row t % block_size
   context_lens: [B] int32      tokens in the cache for sequence b, the new one included
   out:          [B, H, D]

   For each sequence b and query head h (GQA: query heads h share KV head h / (H / Hkv)), the
   textbook softmax attention in two passes over the sequence's tokens:

       s[t]  = scale * q[b, h] . K[t]           t = 0 .. len - 1   (scores)
       p[t]  = exp(s[t] - max s) / sum exp      (the max taken out: exp never overflows)
       out   = sum_t p[t] * V[t]

   The (b, h) pairs are independent and split between the threads; each pair's K and V rows
   are read straight from their blocks through the block table, never gathered into a copy.
   The new token needs no causal mask: every token in the cache is at or before it. */

#include <math.h>
#include <stdlib.h>

/* `omp simd reduction`: the compiler may add in lanes (reassociate), which plain C forbids. */
static float dot(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Returns 0, or -1 if a thread could not get memory for its scores. */
int paged_decode_attention(const float *q, const float *k_cache, const float *v_cache, const int *block_tables,
                           const int *context_lens, float *out, int B, int H, int Hkv, int D, int block_size,
                           int W, float scale) {
    int group = H / Hkv, failed = 0;
#pragma omp parallel
    {
        int longest = 0;
        for (int b = 0; b < B; b++) longest = context_lens[b] > longest ? context_lens[b] : longest;
        float *scores = malloc(sizeof(float) * (longest > 0 ? longest : 1));
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                if (scores == NULL) continue;
                const float *qh = q + ((long)b * H + h) * D;
                const int *table = block_tables + (long)b * W;
                int len = context_lens[b], kv_head = h / group;
                /* Where token t's row for this KV head starts, in k_cache or v_cache. */
#define ROW(t) (((long)table[(t) / block_size] * block_size + (t) % block_size) * Hkv + kv_head) * D
                float top = -INFINITY;
                for (int t = 0; t < len; t++) {
                    scores[t] = scale * dot(qh, k_cache + ROW(t), D);
                    top = scores[t] > top ? scores[t] : top;
                }
                float total = 0.0f;
                for (int t = 0; t < len; t++) {
                    scores[t] = expf(scores[t] - top);
                    total += scores[t];
                }
                float *o = out + ((long)b * H + h) * D;
                for (int d = 0; d < D; d++) o[d] = 0.0f;
                for (int t = 0; t < len; t++) {
                    const float *v = v_cache + ROW(t);
                    float p = scores[t] / total;
                    for (int d = 0; d < D; d++) o[d] += p * v[d];
                }
#undef ROW
            }
        }
        free(scores);
    }
    return failed ? -1 : 0;
}
