/* y = x W^T for a few rows of x, in fp32: the linear layers of a CPU decode step.

   x: [M, K] with M <= MAX_ROWS, W: [N, K] (nn.Linear's weight, row-major), y: [M, N].

   Why a kernel of its own: a decode step multiplies a handful of rows (one per sequence) by
   every weight matrix, so its time is the time to stream the weights from memory once. For
   one row BLAS comes close (a matrix-vector product); for 2 to 8 rows the BLAS library torch
   ships packs W into a scratch layout on every call, which reads and writes W again and, on a
   2-core machine, makes 8 rows cost twice what one row costs. Here each row of W is read once,
   straight from where it lies, and multiplied with all M rows of x while it is in L1:

       for each output column n (a row of W, split between the threads):
           acc[m] += W[n, k:k+16] * x[m, k:k+16]   for every m, along k      (16 lanes at once)
           y[m, n] = sum of acc[m]'s lanes

   x (at most 8 x K floats) stays in the cache; W streams through once. Two rows of W are
   processed together so that each load of x serves two multiply-adds. The hardware prefetcher
   alone does not run far enough ahead of a loop this busy; an explicit prefetch into L2,
   16 KiB ahead in each row of W, keeps the memory bus full.

   `Vec` is a GCC/Clang vector of 16 floats: the compiler maps it to the machine's SIMD (one
   AVX-512 register, two AVX2 registers, four NEON registers), so this file has no intrinsics. */

#define MAX_ROWS 8
#define LANES 16
#define PREFETCH_AHEAD 4096 /* floats: 16 KiB ahead in each row of W */
#define INTO_L2 2          /* __builtin_prefetch's locality: 3 = L1, 2 = L2 */

typedef float Vec __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));

static inline Vec load(const float *p) { return *(const Vec *)p; }

static inline float lane_sum(Vec v) {
    float s = 0.0f;
    for (int i = 0; i < LANES; i++) s += v[i];
    return s;
}

/* Columns n and n + 1 of y (rows n, n + 1 of W; `pair` = 0 when n is the last column). */
static void two_columns(const float *x, const float *w, float *y, int M, int N, int K, int n, int pair) {
    const float *w0 = w + (long)n * K, *w1 = w0 + (pair ? K : 0);
    Vec acc0[MAX_ROWS] = {0}, acc1[MAX_ROWS] = {0};
    int k = 0;
    for (; k + LANES <= K; k += LANES) {
        __builtin_prefetch(w0 + k + PREFETCH_AHEAD, 0, INTO_L2);
        __builtin_prefetch(w1 + k + PREFETCH_AHEAD, 0, INTO_L2);
        Vec a = load(w0 + k), b = load(w1 + k);
        for (int m = 0; m < M; m++) {
            Vec xm = load(x + (long)m * K + k);
            acc0[m] += a * xm;
            acc1[m] += b * xm;
        }
    }
    for (int m = 0; m < M; m++) {
        float s0 = lane_sum(acc0[m]), s1 = lane_sum(acc1[m]);
        for (int j = k; j < K; j++) { /* the last K % 16 */
            s0 += w0[j] * x[(long)m * K + j];
            s1 += w1[j] * x[(long)m * K + j];
        }
        y[(long)m * N + n] = s0;
        if (pair) y[(long)m * N + n + 1] = s1;
    }
}

/* Returns 0, or -1 when M is out of range (the caller then uses BLAS). */
int skinny_linear(const float *x, const float *w, float *y, int M, int N, int K) {
    if (M < 1 || M > MAX_ROWS) return -1;
    /* The threads split the columns; OpenMP here is torch's own runtime (the same libgomp
       loaded once in the process), so they are the threads torch's operators use. */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n += 2) two_columns(x, w, y, M, N, K, n, n + 1 < N);
    return 0;
}
