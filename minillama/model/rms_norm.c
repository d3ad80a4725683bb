/* RMSNorm, with the residual add before it, in fp32 for the CPU: what norm.py's add_and_norm
   does in several PyTorch ops (the add, the mean of squares, the scaling, the weight), in one
   pass over each row. A decode step calls it twice a layer on a few rows: the work is tiny,
   and one call instead of a chain of small ops is what makes it cheaper (c_kernels.py says why).

   For each of the N rows (hidden vectors of `size` floats):
       stream = residual + x                   (x may be NULL: then stream = residual)
       out    = stream / sqrt(mean(stream^2) + eps) * weight

   The sum of squares is accumulated in double, so its rounding does not depend on the order of
   the additions: it matches PyTorch's fp32 norm to a few ulps. */

#include <math.h>
#include <stddef.h>

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
