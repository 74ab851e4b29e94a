/* Compact sparse kernels for sparse_rl: CSR weight (int32 row pointers and columns, float32 values)
 * times feature-major activations ((features, batch), row-major, contiguous).
 *
 *   forward       y[r, :]  = bias[r] + sum_j values[j] * x[col[j], :]        (rows = out features), rectified
 *                 (max(y, 0), NaN kept, as torch.relu) when the layer's ReLU is fused into it
 *   input_grad    dx[c, :] = sum_{r: (r, c) active} W[r, c] * dy[r, :]        (the forward loop over Wᵀ's CSR, W's
 *                 values gathered into Wᵀ's order first, or for a narrow batch read through the permutation in the
 *                 loop: VALUE)
 *   values_grad   gv[j]    = dot(dy[r, :], x[col[j], :])                      (the active positions only); for a
 *                 layer with a fused ReLU, dy masked first (dym[r, :] = dy[r, :] where y[r, :] > 0, else 0, as
 *                 torch's threshold_backward: one pass that writes dym for the input gradient while each row goes
 *                 into the dot products from L1); with gb, also the bias' gradient gb[r] = sum_b dy[r, b] of the
 *                 (masked) row while it is in L1, instead of another pass over dy
 *
 *   grads_t       input_grad and values_grad together, in one pass over Wᵀ's rows where both are wanted for every
 *                 weight: each chunk of dy[r, :] loaded once feeds both (GRADS_T_GROUP)
 *
 * Python calls `forward` and `backward`: a layer's whole backward (mask, values', bias' and input gradients, each
 * where wanted) in one call, the masked dy in a per-thread buffer that every call reuses (still in cache for the
 * input gradient, where a fresh tensor's memory was not: 1.02x on SAC's and TD3's train(), Intel Xeon).
 *
 * Each loop is written once with GCC vector extensions and compiled three times, for AVX-512, AVX2+FMA and the
 * architecture's baseline (SSE2 on x86-64, NEON on aarch64), through `target` attributes; the variant is picked
 * at import from what the CPU reports (`__builtin_cpu_supports`), never from the build machine (no -march=native).
 * The forward loop keeps up to 8 vectors of batch columns in registers per weight row, so each active weight costs
 * one broadcast and 8 fused multiply-adds; narrower blocks (4, 2, 1 vectors, then 8- and 4-float vectors, then
 * scalars) take the batch's rest. The weight gradient takes eight active weights of a row at once, so one load of dy
 * feeds eight products, and reduces the eight accumulators together with shuffles into one vector of eight sums
 * (no per-weight horizontal sum); a row's last 1-4 weights take a padded group of four, 5-7 one of eight, not a
 * single-weight loop.
 *
 * Beside them, CrossQ's BatchRenorm (sparse_rl/sb3/batch_renorm.py): its per-feature statistics, the backward's
 * per-feature sums and its input gradient, each one pass over a row-major (batch, features) or a feature-major
 * input (see DEFINE_RENORM).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
#define omp_get_thread_num() 0
#define omp_get_num_threads() 1
#endif

/* The j-th active weight: values[j], or values[perm[j]] where the values are W's and the structure Wᵀ's (the
 * input gradient of a narrow batch, which reads each weight once or twice: cheaper than gathering them all first). */
#define VALUE(j) (perm ? values[perm[j]] : values[j])

/* One output row times a block of NV vectors of batch columns, accumulated in registers. */
#define ROW_BLOCK(SUFFIX, NV)                                                                                  \
    for (; b + NV * W <= batch; b += NV * W) {                                                                 \
        vec_##SUFFIX acc[NV];                                                                                  \
        _Pragma("GCC unroll 8") for (int i = 0; i < NV; i++) acc[i] = (vec_##SUFFIX){0} + b0;                 \
        for (int32_t j = begin; j < end; j++) {                                                                \
            const vec_##SUFFIX w = (vec_##SUFFIX){0} + VALUE(j);                                               \
            const vec_##SUFFIX *xp = (const vec_##SUFFIX *)(x + (int64_t)col[j] * batch + b);                  \
            _Pragma("GCC unroll 8") for (int i = 0; i < NV; i++) acc[i] += w * xp[i];                          \
        }                                                                                                      \
        _Pragma("GCC unroll 8") for (int i = 0; i < NV; i++)((vec_##SUFFIX *)(yr + b))[i] = acc[i];            \
    }

/* The batch's last columns, narrower than a vector of the variant: one vector of NW floats (type VT) at a time. */
#define ROW_TAIL(VT, NW)                                                                                       \
    for (; b + NW <= batch; b += NW) {                                                                         \
        VT acc = (VT){0} + b0;                                                                                 \
        for (int32_t j = begin; j < end; j++) acc += VALUE(j) * *(const VT *)(x + (int64_t)col[j] * batch + b); \
        *(VT *)(yr + b) = acc;                                                                                 \
    }

/* K (8 or 4) active weights of one row against the same chunk of dy: one load of dy feeds K products, and K
 * independent accumulators hide the multiply-add latency. The accumulators are reduced together by shuffles
 * (REDUCE8_*, the unused four of a 4-group held at zero) into one vector of eight sums, stored at once. A group
 * short of weights repeats the row's last weight in its spare slots; their sums land on the next row's slots, which
 * that row overwrites (only the last group of a call's row range stores its valid sums alone: the rows after it may
 * be another thread's), so no branch depends on a row's length modulo K. A row takes 8-groups while more than 4
 * weights are left and its last 1-4 weights take a 4-group: at low densities most rows are short (about 5 weights at
 * 256 inputs, d = 0.02), and a padded 8-group alone would do 1.6 times the needed work there. */
#define DOT_GROUP(SUFFIX, K)                                                                                   \
    {                                                                                                          \
        const int n = end - j < K ? end - j : K;                                                               \
        const float *xs[K];                                                                                    \
        gvec_##SUFFIX a[8];                                                                                    \
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] = (gvec_##SUFFIX){0};                         \
        _Pragma("GCC unroll 8") for (int k = 0; k < K; k++)                                                    \
            xs[k] = x + (int64_t)col[j + (k < n ? k : n - 1)] * batch;                                         \
        int64_t b = 0;                                                                                         \
        for (; b + GW <= batch; b += GW) {                                                                     \
            const gvec_##SUFFIX d = *(const gvec_##SUFFIX *)(dyr + b);                                        \
            _Pragma("GCC unroll 8") for (int k = 0; k < K; k++) a[k] += d * *(const gvec_##SUFFIX *)(xs[k] + b); \
        }                                                                                                      \
        float s[8];                                                                                            \
        REDUCE8_##SUFFIX(a, s);                                                                                \
        if (GW > 8) DOT_TAIL(v8_##SUFFIX, 8, REDUCE8_avx2, K)                                                  \
        if (GW > 4) DOT_TAIL(v4_##SUFFIX, 4, REDUCE8_generic, K)                                               \
        if (b < batch)                                                                                         \
            for (int k = 0; k < K; k++)                                                                        \
                for (int64_t t = b; t < batch; t++) s[k] += dyr[t] * xs[k][t];                                 \
        if (j + 8 <= limit)                                                                                    \
            memcpy(gv + j, s, sizeof s);                                                                       \
        else                                                                                                   \
            for (int k = 0; k < n; k++) gv[j + k] = s[k];                                                      \
        j += n;                                                                                                \
    }
/* The batch's last columns, fewer than a vector of the level: one narrower vector (VT, VW lanes) of them, if that
 * many are left, reduced (RED) and added to the sums, before the scalar rest (at most 3 columns); a batch narrower
 * than the level's vector (4-15 at AVX-512) takes its products in vectors too. */
#define DOT_TAIL(VT, VW, RED, K)                                                                               \
    if (b + VW <= batch) {                                                                                     \
        VT acc_[8];                                                                                            \
        const VT d = *(const VT *)(dyr + b);                                                                   \
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) acc_[k] = (VT){0};                                 \
        _Pragma("GCC unroll 8") for (int k = 0; k < K; k++) acc_[k] = d * *(const VT *)(xs[k] + b);            \
        float p_[8];                                                                                           \
        RED(acc_, p_);                                                                                         \
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) s[k] += p_[k];                                     \
        b += VW;                                                                                               \
    }
#define DOT_ROW(SUFFIX)                                                                                        \
    while (end - j > 4) DOT_GROUP(SUFFIX, 8)                                                                   \
    if (j < end) DOT_GROUP(SUFFIX, 4)

/* Two-source shuffles with constant lane indices (GCC >= 4.7 and clang spell them differently). */
#ifdef __clang__
#define SHUF(a, b, IT, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUF(a, b, IT, ...) __builtin_shuffle(a, b, (IT){__VA_ARGS__})
#endif
/* Eight accumulators of 4 lanes to eight sums: pairs interleaved and added ([a0+a2, b0+b2, a1+a3, b1+b3]), then
 * pairs of those ([a, b, c, d]). */
#define REDUCE8_generic(a, out) do {                                                                           \
        __typeof__(a[0]) t_[4], u_[2];                                                                         \
        for (int i_ = 0; i_ < 4; i_++)                                                                         \
            t_[i_] = SHUF(a[2 * i_], a[2 * i_ + 1], iv4, 0, 4, 1, 5)                                           \
                     + SHUF(a[2 * i_], a[2 * i_ + 1], iv4, 2, 6, 3, 7);                                        \
        for (int i_ = 0; i_ < 2; i_++)                                                                         \
            u_[i_] = SHUF(t_[2 * i_], t_[2 * i_ + 1], iv4, 0, 1, 4, 5)                                         \
                     + SHUF(t_[2 * i_], t_[2 * i_ + 1], iv4, 2, 3, 6, 7);                                      \
        memcpy(out, u_, 32);                                                                                   \
    } while (0)
/* The same within each 128-bit lane of 8 lanes, then the two lanes of [abcd | abcd] and [efgh | efgh] added. */
#define REDUCE8_avx2(a, out) do {                                                                              \
        __typeof__(a[0]) t_[4], u_[2];                                                                         \
        for (int i_ = 0; i_ < 4; i_++)                                                                         \
            t_[i_] = SHUF(a[2 * i_], a[2 * i_ + 1], iv8, 0, 8, 1, 9, 4, 12, 5, 13)                             \
                     + SHUF(a[2 * i_], a[2 * i_ + 1], iv8, 2, 10, 3, 11, 6, 14, 7, 15);                        \
        for (int i_ = 0; i_ < 2; i_++)                                                                         \
            u_[i_] = SHUF(t_[2 * i_], t_[2 * i_ + 1], iv8, 0, 1, 8, 9, 4, 5, 12, 13)                           \
                     + SHUF(t_[2 * i_], t_[2 * i_ + 1], iv8, 2, 3, 10, 11, 6, 7, 14, 15);                      \
        const __typeof__(a[0]) s_ = SHUF(u_[0], u_[1], iv8, 0, 1, 2, 3, 8, 9, 10, 11)                          \
                                    + SHUF(u_[0], u_[1], iv8, 4, 5, 6, 7, 12, 13, 14, 15);                     \
        memcpy(out, &s_, 32);                                                                                  \
    } while (0)
/* The same within each 128-bit lane of 16 lanes; then the two vectors' halves added ([abcd x2 | efgh x2]), and the
 * two copies of each. */
#define REDUCE8_avx512(a, out) do {                                                                            \
        gvec_avx512 t_[4], u_[2];                                                                              \
        for (int i_ = 0; i_ < 4; i_++)                                                                         \
            t_[i_] = SHUF(a[2 * i_], a[2 * i_ + 1], iv16, 0, 16, 1, 17, 4, 20, 5, 21,                          \
                          8, 24, 9, 25, 12, 28, 13, 29)                                                        \
                     + SHUF(a[2 * i_], a[2 * i_ + 1], iv16, 2, 18, 3, 19, 6, 22, 7, 23,                        \
                            10, 26, 11, 27, 14, 30, 15, 31);                                                   \
        for (int i_ = 0; i_ < 2; i_++)                                                                         \
            u_[i_] = SHUF(t_[2 * i_], t_[2 * i_ + 1], iv16, 0, 1, 16, 17, 4, 5, 20, 21,                        \
                          8, 9, 24, 25, 12, 13, 28, 29)                                                        \
                     + SHUF(t_[2 * i_], t_[2 * i_ + 1], iv16, 2, 3, 18, 19, 6, 7, 22, 23,                      \
                            10, 11, 26, 27, 14, 15, 30, 31);                                                   \
        const gvec_avx512 f_ = SHUF(u_[0], u_[1], iv16, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) \
                               + SHUF(u_[0], u_[1], iv16, 8, 9, 10, 11, 12, 13, 14, 15,                        \
                                      24, 25, 26, 27, 28, 29, 30, 31);                                         \
        const gvec_avx512 s_ = SHUF(f_, f_, iv16, 0, 1, 2, 3, 8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11)          \
                               + SHUF(f_, f_, iv16, 4, 5, 6, 7, 12, 13, 14, 15, 4, 5, 6, 7, 12, 13, 14, 15);   \
        memcpy(out, &s_, 32);                                                                                  \
    } while (0)
typedef int32_t iv4 __attribute__((vector_size(16)));
typedef int32_t iv8 __attribute__((vector_size(32)));
typedef int32_t iv16 __attribute__((vector_size(64)));

/* The input and the weight gradient in one pass over Wᵀ's rows, the layer's input features c (py_backward, where
 * both are wanted for every weight). Up to eight active weights (r, c) of a row of Wᵀ at a time: each
 * chunk of dy[r, :] is loaded once (from L2: a random row) and feeds both the input gradient's multiply-add,
 * dx[c, :] += W[r, c] dy[r, :] (the running sums kept in dx's row in L1 between groups), and the weight's dot
 * product with x[c, :] (in L1 for the whole row of Wᵀ): one load from L2 per two multiply-adds, where the input
 * gradient's loop and the weight gradient's loop each pay one per multiply-add. The same operations in the same
 * order as those two loops, so the same floats: dx's sums run over the weights in Wᵀ's order from 0, each dot
 * product in GW lanes over the batch, then REDUCE8 (each accumulator reduced by the same tree whatever its slot). */
#define GRADS_T_GROUP(SUFFIX, N, FIRST)                                                                        \
    {                                                                                                          \
        const float *dr[N];                                                                                    \
        float wk[N];                                                                                           \
        gvec_##SUFFIX a[8];                                                                                    \
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] = (gvec_##SUFFIX){0};                         \
        _Pragma("GCC unroll 8") for (int k = 0; k < N; k++) {                                                  \
            dr[k] = dy + (int64_t)col_t[j + k] * batch;                                                        \
            wk[k] = values[perm[j + k]];                                                                       \
        }                                                                                                      \
        int64_t b = 0;                                                                                         \
        GRADS_T_CHUNKS(SUFFIX, N, FIRST, GU)                                                                   \
        GRADS_T_CHUNKS(SUFFIX, N, FIRST, 1)                                                                    \
        float s[8];                                                                                            \
        REDUCE8_##SUFFIX(a, s);                                                                                \
        if (GW > 8) GRADS_T_TAIL(v8_##SUFFIX, 8, REDUCE8_avx2, N, FIRST)                                       \
        if (GW > 4) GRADS_T_TAIL(v4_##SUFFIX, 4, REDUCE8_generic, N, FIRST)                                    \
        for (; b < batch; b++) { /* the last 1-3 columns, as the two loops' scalar rests */                   \
            float acc = FIRST ? 0.0f : dxr[b];                                                                 \
            _Pragma("GCC unroll 8") for (int k = 0; k < N; k++) {                                              \
                acc += wk[k] * dr[k][b];                                                                       \
                s[k] += dr[k][b] * xr[b];                                                                      \
            }                                                                                                  \
            dxr[b] = acc;                                                                                      \
        }                                                                                                      \
        _Pragma("GCC unroll 8") for (int k = 0; k < N; k++) gv[perm[j + k]] = s[k];                            \
        j += N;                                                                                                \
    }
/* The batch's last columns, fewer than a vector of the level: one narrower vector (VT, VW lanes) of them, if that
 * many are left, as DOT_TAIL takes them (products reduced by RED and added to the sums) and as ROW_TAIL adds them
 * into dx. */
#define GRADS_T_TAIL(VT, VW, RED, N, FIRST)                                                                    \
    if (b + VW <= batch) {                                                                                     \
        const VT xv = *(const VT *)(xr + b);                                                                   \
        VT acc = FIRST ? (VT){0} : *(const VT *)(dxr + b), acc_[8];                                            \
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) acc_[k] = (VT){0};                                 \
        _Pragma("GCC unroll 8") for (int k = 0; k < N; k++) {                                                  \
            const VT d = *(const VT *)(dr[k] + b);                                                             \
            acc += wk[k] * d;                                                                                  \
            acc_[k] = d * xv;                                                                                  \
        }                                                                                                      \
        *(VT *)(dxr + b) = acc;                                                                                \
        float p_[8];                                                                                           \
        RED(acc_, p_);                                                                                         \
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) s[k] += p_[k];                                     \
        b += VW;                                                                                               \
    }
/* v held in a vector register: GCC otherwise reloads a chunk of dy as the memory operand of each of its two
 * multiply-adds (1.15-1.23x over the two loops at batch 256 that way, 1.40-1.53x with it; x86 only). */
#if defined(__x86_64__) && defined(__GNUC__)
#define IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define IN_REGISTER(v) (void)0
#endif
/* U chunks of GW batch columns at a time (GU, per level: as many as the registers hold), their U sums of dx
 * interleaved so that each chunk's chain of N dependent multiply-adds overlaps the others'; each dot product still
 * takes the chunks in the batch's order. */
#define GRADS_T_CHUNKS(SUFFIX, N, FIRST, U)                                                                    \
    for (; b + U * GW <= batch; b += U * GW) {                                                                 \
        gvec_##SUFFIX xv[U], acc[U];                                                                           \
        _Pragma("GCC unroll 4") for (int u = 0; u < U; u++) {                                                  \
            xv[u] = *(const gvec_##SUFFIX *)(xr + b + u * GW);                                                 \
            acc[u] = FIRST ? (gvec_##SUFFIX){0} : *(const gvec_##SUFFIX *)(dxr + b + u * GW);                  \
        }                                                                                                      \
        _Pragma("GCC unroll 8") for (int k = 0; k < N; k++)                                                    \
            _Pragma("GCC unroll 4") for (int u = 0; u < U; u++) {                                              \
                gvec_##SUFFIX d = *(const gvec_##SUFFIX *)(dr[k] + b + u * GW);                                \
                IN_REGISTER(d);                                                                                \
                acc[u] += wk[k] * d;                                                                           \
                a[k] += d * xv[u];                                                                             \
            }                                                                                                  \
        _Pragma("GCC unroll 4") for (int u = 0; u < U; u++) *(gvec_##SUFFIX *)(dxr + b + u * GW) = acc[u];     \
    }
/* The next group of a row of Wᵀ: its eight weights, or the row's last one to seven (no padding: a padded slot
 * would add to dx). */
#define GRADS_T_NEXT(SUFFIX, FIRST)                                                                            \
    switch (end - j < 8 ? end - j : 8) {                                                                       \
    case 8: GRADS_T_GROUP(SUFFIX, 8, FIRST) break;                                                             \
    case 7: GRADS_T_GROUP(SUFFIX, 7, FIRST) break;                                                             \
    case 6: GRADS_T_GROUP(SUFFIX, 6, FIRST) break;                                                             \
    case 5: GRADS_T_GROUP(SUFFIX, 5, FIRST) break;                                                             \
    case 4: GRADS_T_GROUP(SUFFIX, 4, FIRST) break;                                                             \
    case 3: GRADS_T_GROUP(SUFFIX, 3, FIRST) break;                                                             \
    case 2: GRADS_T_GROUP(SUFFIX, 2, FIRST) break;                                                             \
    default: GRADS_T_GROUP(SUFFIX, 1, FIRST) break;                                                            \
    }

/* A one-output layer right after this one (a critic's Q head, sparse_rl/backends/compact_chain.py), fused into its
 * passes: its active weights' values and input columns (ascending; crow = {0, nnz}) and bias, and in the forward its
 * output row out (batch floats), in the backward its output gradient dy (batch floats). The forward adds each of
 * this layer's rows, rectified and still in L1, times the head's weight on it into out (which starts at the head's
 * bias), in the order of the head's own loop, so out holds the head's forward bit for bit without a second pass over
 * this layer's output. The backward makes this layer's output gradient row by row from the head's, dy[r, :] =
 * w[r] * head dy (0 where the head has no weight on r), as the head's input gradient loop computes it, instead of
 * reading it from memory. */
typedef struct {
    const float *values;
    const int32_t *crow, *col;
    const float *bias;
    float *out;
    const float *dy;
} head_t;

#define DEFINE_KERNELS(SUFFIX, WIDTH, GWIDTH, GUNROLL, TARGET)                                                 \
    typedef float vec_##SUFFIX __attribute__((vector_size(WIDTH * 4), aligned(4)));                           \
    typedef float gvec_##SUFFIX __attribute__((vector_size(GWIDTH * 4), aligned(4)));                         \
    typedef float v8_##SUFFIX __attribute__((vector_size(32), aligned(4)));                                    \
    typedef float v4_##SUFFIX __attribute__((vector_size(16), aligned(4)));                                    \
                                                                                                               \
    TARGET static void forward_##SUFFIX(const float *values, const int32_t *perm, const int32_t *crow,         \
                                        const int32_t *col, const float *x, const float *bias, float *y,       \
                                        int64_t r0, int64_t r1, int64_t batch, int relu, const head_t *head) { \
        enum { W = WIDTH };                                                                                    \
        int32_t hj = 0; /* the head's next weight: on row head->col[hj] */                                    \
        if (head)                                                                                              \
            for (int64_t b = 0; b < batch; b++) head->out[b] = 0.0f + (head->bias ? head->bias[0] : 0.0f);    \
        for (int64_t r = r0; r < r1; r++) {                                                                    \
            const int32_t begin = crow[r], end = crow[r + 1];                                                 \
            const float b0 = bias ? bias[r] : 0.0f;                                                            \
            float *yr = y + r * batch;                                                                         \
            int64_t b = 0;                                                                                     \
            ROW_BLOCK(SUFFIX, 8)                                                                               \
            ROW_BLOCK(SUFFIX, 4)                                                                               \
            ROW_BLOCK(SUFFIX, 2)                                                                               \
            ROW_BLOCK(SUFFIX, 1)                                                                               \
            if (W > 8) ROW_TAIL(v8_##SUFFIX, 8)                                                                \
            if (W > 4) ROW_TAIL(v4_##SUFFIX, 4)                                                                \
            for (; b < batch; b++) {                                                                           \
                float acc = b0;                                                                                \
                for (int32_t j = begin; j < end; j++) acc += VALUE(j) * x[(int64_t)col[j] * batch + b];        \
                yr[b] = acc;                                                                                   \
            }                                                                                                  \
            if (relu) /* while the row is in L1 */                                                             \
                for (b = 0; b < batch; b++) yr[b] = yr[b] <= 0.0f ? 0.0f : yr[b];                              \
            if (head && hj < head->crow[1] && head->col[hj] == r) { /* the head's term, the row still in L1 */  \
                const float hw = head->values[hj++];                                                           \
                float *out = head->out;                                                                        \
                for (b = 0; b + W <= batch; b += W)                                                            \
                    *(vec_##SUFFIX *)(out + b) += hw * *(const vec_##SUFFIX *)(yr + b);                        \
                for (; b < batch; b++) out[b] += hw * yr[b];                                                   \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    TARGET static void values_grad_##SUFFIX(const int32_t *crow, const int32_t *col, const float *dy,          \
                                            const float *y, float *dym, const float *x, float *gv, float *gb,  \
                                            int64_t r0, int64_t r1, int64_t batch, const head_t *head) {       \
        enum { GW = GWIDTH };                                                                                  \
        const int32_t limit = crow[r1]; /* no store past the range: another thread may own the next rows */    \
        int32_t hj = 0; /* the head's first weight on a row of this range */                                  \
        while (head && hj < head->crow[1] && head->col[hj] < r0) hj++;                                         \
        for (int64_t r = r0; r < r1; r++) {                                                                    \
            const float *dyr = head ? NULL : dy + r * batch;                                                   \
            if (head) { /* the row's gradient from the head's, as the head's input gradient loop makes it */  \
                float *mr = dym + r * batch;                                                                   \
                if (hj < head->crow[1] && head->col[hj] == r) {                                                \
                    const float hw = head->values[hj++];                                                       \
                    int64_t b = 0;                                                                             \
                    for (; b + GW <= batch; b += GW)                                                           \
                        *(gvec_##SUFFIX *)(mr + b) = 0.0f + hw * *(const gvec_##SUFFIX *)(head->dy + b);       \
                    for (; b < batch; b++) mr[b] = 0.0f + hw * head->dy[b];                                    \
                } else                                                                                         \
                    for (int64_t b = 0; b < batch; b++) mr[b] = 0.0f;                                          \
                dyr = mr;                                                                                      \
            }                                                                                                  \
            if (y) { /* the fused ReLU's mask, written out for the input gradient */                           \
                const float *yr = y + r * batch;                                                               \
                float *mr = dym + r * batch;                                                                   \
                for (int64_t b = 0; b < batch; b++) mr[b] = yr[b] <= 0.0f ? 0.0f : dyr[b];                     \
                dyr = mr;                                                                                      \
            }                                                                                                  \
            if (gb) { /* the bias' gradient: the row's sum, in four vectors of lanes, while the row is in L1 */ \
                gvec_##SUFFIX s4[4] = {{0}, {0}, {0}, {0}};                                                    \
                int64_t b = 0;                                                                                 \
                for (; b + 4 * GW <= batch; b += 4 * GW)                                                       \
                    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++)                                        \
                        s4[i] += *(const gvec_##SUFFIX *)(dyr + b + i * GW);                                   \
                for (; b + GW <= batch; b += GW) s4[0] += *(const gvec_##SUFFIX *)(dyr + b);                  \
                const gvec_##SUFFIX lanes = (s4[0] + s4[1]) + (s4[2] + s4[3]);                                 \
                float sum = 0.0f;                                                                              \
                for (int k = 0; k < GW; k++) sum += lanes[k];                                                  \
                for (; b < batch; b++) sum += dyr[b];                                                          \
                gb[r] = sum;                                                                                   \
            }                                                                                                  \
            if (!gv) continue; /* a frozen layer: the mask (and bias sums) only */                             \
            int32_t j = crow[r];                                                                               \
            const int32_t end = crow[r + 1];                                                                   \
            DOT_ROW(SUFFIX)                                                                                    \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    TARGET static void grads_t_##SUFFIX(const float *values, const int32_t *perm, const int32_t *crow_t,       \
                                        const int32_t *col_t, const float *dy, const float *x, float *dx,      \
                                        float *gv, int64_t c0, int64_t c1, int64_t batch) {                    \
        enum { GW = GWIDTH, GU = GUNROLL };                                                                    \
        for (int64_t c = c0; c < c1; c++) {                                                                    \
            int32_t j = crow_t[c];                                                                             \
            const int32_t end = crow_t[c + 1];                                                                 \
            const float *xr = x + c * batch;                                                                   \
            float *dxr = dx + c * batch;                                                                       \
            if (j == end) {                                                                                    \
                for (int64_t b = 0; b < batch; b++) dxr[b] = 0.0f;                                             \
                continue;                                                                                      \
            }                                                                                                  \
            GRADS_T_NEXT(SUFFIX, 1)                                                                            \
            while (j < end) GRADS_T_NEXT(SUFFIX, 0)                                                            \
        }                                                                                                      \
    }

/* BatchRenorm (CrossQ) over a row-major (n, f) float32 input, one column per feature: the loops run along rows with
 * the f columns' running sums in float64 (so the sums do not depend on n's rounding), written plainly for the
 * compiler to vectorise under each level's target attribute.
 *   renorm_stats       mean[c] = x[0, c] + sum_i (x[i, c] - x[0, c]) / n    (exactly x[0, c] for a constant column)
 *                      var[c]  = sum_i (x[i, c] - mean[c])^2 / (n - 1)     (exactly 0 for a constant column)
 *   renorm_grad_sums   gsum[c] = sum_i g[i, c],  gcsum[c] = sum_i g[i, c] (x[i, c] - mean[c])
 *   renorm_input_grad  dx[i, c] = alpha[c] g[i, c] + beta[c] (x[i, c] - mean[c]) + gamma[c] */
#define DEFINE_RENORM(SUFFIX, TARGET)                                                                          \
    TARGET static void renorm_stats_##SUFFIX(const float *x, float *mean, float *var, double *acc, int64_t n,     \
                                             int64_t f) {                                                      \
        for (int64_t c = 0; c < f; c++) acc[c] = 0.0;                                                          \
        for (int64_t i = 1; i < n; i++) {                                                                      \
            const float *xi = x + i * f;                                                                       \
            for (int64_t c = 0; c < f; c++) acc[c] += (double)(xi[c] - x[c]);                                  \
        }                                                                                                      \
        for (int64_t c = 0; c < f; c++) {                                                                      \
            mean[c] = x[c] + (float)(acc[c] / (double)n);                                                      \
            acc[c] = 0.0;                                                                                      \
        }                                                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                                      \
            const float *xi = x + i * f;                                                                       \
            for (int64_t c = 0; c < f; c++) {                                                                  \
                const double d = (double)(xi[c] - mean[c]);                                                    \
                acc[c] += d * d;                                                                               \
            }                                                                                                  \
        }                                                                                                      \
        for (int64_t c = 0; c < f; c++) var[c] = (float)(acc[c] / (double)(n - 1));                            \
    }                                                                                                          \
                                                                                                               \
    TARGET static void renorm_grad_sums_##SUFFIX(const float *g, const float *x, const float *mean, float *gsum,  \
                                                 float *gcsum, double *acc, int64_t n, int64_t f) {            \
        double *acc_c = acc + f;                                                                               \
        for (int64_t c = 0; c < f; c++) acc[c] = acc_c[c] = 0.0;                                               \
        for (int64_t i = 0; i < n; i++) {                                                                      \
            const float *gi = g + i * f, *xi = x + i * f;                                                      \
            for (int64_t c = 0; c < f; c++) {                                                                  \
                acc[c] += (double)gi[c];                                                                       \
                acc_c[c] += (double)gi[c] * (double)(xi[c] - mean[c]);                                         \
            }                                                                                                  \
        }                                                                                                      \
        for (int64_t c = 0; c < f; c++) {                                                                      \
            gsum[c] = (float)acc[c];                                                                           \
            gcsum[c] = (float)acc_c[c];                                                                        \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    TARGET static void renorm_input_grad_##SUFFIX(const float *g, const float *x, const float *mean,             \
                                                  const float *alpha, const float *beta, const float *gamma,     \
                                                  float *dx, int64_t n, int64_t f) {                             \
        for (int64_t i = 0; i < n; i++) {                                                                      \
            const float *gi = g + i * f, *xi = x + i * f;                                                      \
            float *di = dx + i * f;                                                                            \
            for (int64_t c = 0; c < f; c++) di[c] = alpha[c] * gi[c] + beta[c] * (xi[c] - mean[c]) + gamma[c];  \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    /* The same three for feature-major input ((features, batch) contiguous, as the compact layers hand it on):   \
     * each feature's sums run along its row in W float lanes (shifted by the row's first value or mean, so a     \
     * constant row sums exactly 0), whose lanes are added in float64. */                                      \
    TARGET static void renorm_stats_fm_##SUFFIX(const float *x, float *mean, float *var, double *unused,         \
                                                int64_t n, int64_t f) {                                        \
        enum { W = sizeof(vec_##SUFFIX) / sizeof(float) };                                                     \
        (void)unused;                                                                                          \
        for (int64_t c = 0; c < f; c++) {                                                                      \
            const float *xr = x + c * n, x0 = xr[0];                                                           \
            vec_##SUFFIX acc = (vec_##SUFFIX){0};                                                              \
            int64_t i = 0;                                                                                     \
            for (; i + W <= n; i += W) acc += *(const vec_##SUFFIX *)(xr + i) - x0;                            \
            double sum = 0.0;                                                                                  \
            for (int k = 0; k < W; k++) sum += acc[k];                                                         \
            for (; i < n; i++) sum += xr[i] - x0;                                                              \
            const float m = x0 + (float)(sum / (double)n);                                                     \
            acc = (vec_##SUFFIX){0};                                                                           \
            for (i = 0; i + W <= n; i += W) {                                                                  \
                const vec_##SUFFIX d = *(const vec_##SUFFIX *)(xr + i) - m;                                    \
                acc += d * d;                                                                                  \
            }                                                                                                  \
            sum = 0.0;                                                                                         \
            for (int k = 0; k < W; k++) sum += acc[k];                                                         \
            for (; i < n; i++) sum += (double)(xr[i] - m) * (double)(xr[i] - m);                               \
            mean[c] = m;                                                                                       \
            var[c] = (float)(sum / (double)(n - 1));                                                           \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    TARGET static void renorm_grad_sums_fm_##SUFFIX(const float *g, const float *x, const float *mean,          \
                                                    float *gsum, float *gcsum, double *unused, int64_t n,      \
                                                    int64_t f) {                                               \
        enum { W = sizeof(vec_##SUFFIX) / sizeof(float) };                                                     \
        (void)unused;                                                                                          \
        for (int64_t c = 0; c < f; c++) {                                                                      \
            const float *gr = g + c * n, *xr = x + c * n, m = mean[c];                                         \
            vec_##SUFFIX a1 = (vec_##SUFFIX){0}, a2 = (vec_##SUFFIX){0};                                       \
            int64_t i = 0;                                                                                     \
            for (; i + W <= n; i += W) {                                                                       \
                const vec_##SUFFIX gv = *(const vec_##SUFFIX *)(gr + i);                                       \
                a1 += gv;                                                                                      \
                a2 += gv * (*(const vec_##SUFFIX *)(xr + i) - m);                                              \
            }                                                                                                  \
            double s1 = 0.0, s2 = 0.0;                                                                         \
            for (int k = 0; k < W; k++) {                                                                      \
                s1 += a1[k];                                                                                   \
                s2 += a2[k];                                                                                   \
            }                                                                                                  \
            for (; i < n; i++) {                                                                               \
                s1 += gr[i];                                                                                   \
                s2 += (double)gr[i] * (double)(xr[i] - m);                                                     \
            }                                                                                                  \
            gsum[c] = (float)s1;                                                                               \
            gcsum[c] = (float)s2;                                                                              \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    TARGET static void renorm_input_grad_fm_##SUFFIX(const float *g, const float *x, const float *mean,         \
                                                     const float *alpha, const float *beta, const float *gamma, \
                                                     float *dx, int64_t n, int64_t f) {                         \
        for (int64_t c = 0; c < f; c++) {                                                                      \
            const float *gr = g + c * n, *xr = x + c * n;                                                      \
            float *dr = dx + c * n;                                                                            \
            const float al = alpha[c], be = beta[c], ga = gamma[c], m = mean[c];                               \
            for (int64_t i = 0; i < n; i++) dr[i] = al * gr[i] + be * (xr[i] - m) + ga;                        \
        }                                                                                                      \
    }

#if defined(__x86_64__) && defined(__GNUC__)
DEFINE_KERNELS(avx512, 16, 16, 4, __attribute__((target("avx512f,fma"))))
DEFINE_KERNELS(avx2, 8, 8, 2, __attribute__((target("avx2,fma"))))
DEFINE_RENORM(avx512, __attribute__((target("avx512f,fma"))))
DEFINE_RENORM(avx2, __attribute__((target("avx2,fma"))))
#define HAVE_X86 1
#endif
DEFINE_KERNELS(generic, 4, 4, 2, )
DEFINE_RENORM(generic, )

typedef void (*forward_fn)(const float *, const int32_t *, const int32_t *, const int32_t *, const float *,
                           const float *, float *, int64_t, int64_t, int64_t, int, const head_t *);
typedef void (*values_grad_fn)(const int32_t *, const int32_t *, const float *, const float *, float *,
                               const float *, float *, float *, int64_t, int64_t, int64_t, const head_t *);
typedef void (*grads_t_fn)(const float *, const int32_t *, const int32_t *, const int32_t *, const float *,
                           const float *, float *, float *, int64_t, int64_t, int64_t);
typedef void (*renorm_stats_fn)(const float *, float *, float *, double *, int64_t, int64_t);
typedef void (*renorm_grad_sums_fn)(const float *, const float *, const float *, float *, float *, double *, int64_t,
                                    int64_t);
typedef void (*renorm_input_grad_fn)(const float *, const float *, const float *, const float *, const float *,
                                     const float *, float *, int64_t, int64_t);

/* The BatchRenorm loops come in pairs, [0] for row-major input and [1] for feature-major. */
#define LEVEL(SUFFIX)                                                                                          \
    {#SUFFIX, forward_##SUFFIX, values_grad_##SUFFIX, grads_t_##SUFFIX,                                        \
     {renorm_stats_##SUFFIX, renorm_stats_fm_##SUFFIX},                                                        \
     {renorm_grad_sums_##SUFFIX, renorm_grad_sums_fm_##SUFFIX},                                                \
     {renorm_input_grad_##SUFFIX, renorm_input_grad_fm_##SUFFIX}}
static struct {
    const char *name;
    forward_fn forward;
    values_grad_fn values_grad;
    grads_t_fn grads_t;
    renorm_stats_fn renorm_stats[2];
    renorm_grad_sums_fn renorm_grad_sums[2];
    renorm_input_grad_fn renorm_input_grad[2];
} LEVELS[] = {
#ifdef HAVE_X86
    LEVEL(avx512),
    LEVEL(avx2),
#endif
    LEVEL(generic),
};
#define NUM_LEVELS ((int)(sizeof(LEVELS) / sizeof(LEVELS[0])))
static int current = NUM_LEVELS - 1;

/* Threads. With more than one (torch's intra-op thread count, passed by the Python wrapper), a product's rows are
 * split into one contiguous range per thread, balanced by active weights plus one per row (a row's fixed cost), and
 * each range runs the level's loop as it runs alone; each output row is computed by the same operations in the same
 * order, so the result does not depend on the thread count, bit for bit. OpenMP, where the compiler has it
 * (setup.py): its runtime is libgomp.so.1, the one torch's own wheel loads, so the kernels share torch's threads
 * instead of starting a second pool beside them. Below PARALLEL_MIN_WORK multiply-adds a call stays on the calling
 * thread: waking the others costs more than they would save (batch 1, small layers). */
#define PARALLEL_MIN_WORK ((int64_t)1 << 17)
#define PARALLEL_MIN_GATHER ((int64_t)1 << 15)

static int64_t first_row(const int32_t *crow, int64_t rows, int part, int parts) {
    if (part <= 0) return 0;
    if (part >= parts) return rows;
    const int64_t target = ((int64_t)crow[rows] + rows) * part / parts;
    int64_t lo = 0, hi = rows; /* the first row r with crow[r] + r >= target */
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if ((int64_t)crow[mid] + mid < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int parallel_threads(int threads, const int32_t *crow, int64_t rows, int64_t batch) {
#ifdef _OPENMP
    return threads > 1 && (int64_t)crow[rows] * batch >= PARALLEL_MIN_WORK ? threads : 1;
#else
    (void)threads, (void)crow, (void)rows, (void)batch;
    return 1;
#endif
}

static void forward_rows(int threads, const float *values, const int32_t *perm, const int32_t *crow,
                         const int32_t *col, const float *x, const float *bias, float *y, int64_t rows, int64_t batch,
                         int relu, const head_t *head) {
    const forward_fn loop = LEVELS[current].forward;
    const int parts = parallel_threads(threads, crow, rows, batch);
    if (parts == 1) {
        loop(values, perm, crow, col, x, bias, y, 0, rows, batch, relu, head);
        return;
    }
#pragma omp parallel num_threads(parts)
    {
        const int part = omp_get_thread_num(), n = omp_get_num_threads();
        loop(values, perm, crow, col, x, bias, y, first_row(crow, rows, part, n), first_row(crow, rows, part + 1, n),
             batch, relu, NULL);
    }
    if (head) /* the head's own loop over this layer's output: every thread's rows are in it now */
        loop(head->values, NULL, head->crow, head->col, y, head->bias, head->out, 0, 1, batch, 0, NULL);
}

static void values_grad_rows(int threads, const int32_t *crow, const int32_t *col, const float *dy, const float *y,
                             float *dym, const float *x, float *gv, float *gb, int64_t rows, int64_t batch,
                             const head_t *head) {
    const values_grad_fn loop = LEVELS[current].values_grad;
    const int parts = parallel_threads(threads, crow, rows, batch);
    if (parts == 1) {
        loop(crow, col, dy, y, dym, x, gv, gb, 0, rows, batch, head);
        return;
    }
#pragma omp parallel num_threads(parts)
    {
        const int part = omp_get_thread_num(), n = omp_get_num_threads();
        loop(crow, col, dy, y, dym, x, gv, gb, first_row(crow, rows, part, n), first_row(crow, rows, part + 1, n),
             batch, head);
    }
}

static void grads_t_rows(int threads, const float *values, const int32_t *perm, const int32_t *crow_t,
                         const int32_t *col_t, const float *dy, const float *x, float *dx, float *gv, int64_t cols,
                         int64_t batch) {
    const grads_t_fn loop = LEVELS[current].grads_t;
    const int parts = parallel_threads(threads, crow_t, cols, batch);
    if (parts == 1) {
        loop(values, perm, crow_t, col_t, dy, x, dx, gv, 0, cols, batch);
        return;
    }
#pragma omp parallel num_threads(parts)
    {
        const int part = omp_get_thread_num(), n = omp_get_num_threads();
        loop(values, perm, crow_t, col_t, dy, x, dx, gv, first_row(crow_t, cols, part, n),
             first_row(crow_t, cols, part + 1, n), batch);
    }
}

static int supported(int level) {
#ifdef HAVE_X86
    __builtin_cpu_init();
    const char *name = LEVELS[level].name;
    if (strcmp(name, "avx512") == 0) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    if (strcmp(name, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

/* Python arguments are tensor data pointers (ints) and sizes: the wrapper in sparse_rl/backends/kernels.py checks
 * dtypes, devices, contiguity and shapes before calling. The GIL is released around each loop. */
static PyObject *py_forward(PyObject *self, PyObject *args) {
    /* With hout not 0, a one-output head is fused in (head_t): its values, row pointers, columns, bias (0 for
     * none) and output row (batch floats; the values of a head without weights may be a null pointer). */
    Py_ssize_t values, crow, col, x, bias, y, rows, batch, hvalues, hcrow, hcol, hbias, hout;
    int relu, threads;
    if (!PyArg_ParseTuple(args, "nnnnnnnnpinnnnn", &values, &crow, &col, &x, &bias, &y, &rows, &batch, &relu,
                          &threads, &hvalues, &hcrow, &hcol, &hbias, &hout))
        return NULL;
    const head_t head = {(const float *)hvalues, (const int32_t *)hcrow, (const int32_t *)hcol,
                         (const float *)hbias, (float *)hout, NULL};
    Py_BEGIN_ALLOW_THREADS forward_rows(threads, (const float *)values, NULL, (const int32_t *)crow,
                                        (const int32_t *)col, (const float *)x, (const float *)bias, (float *)y, rows,
                                        batch, relu, hout ? &head : NULL);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

/* The masked output gradient of a layer with a fused ReLU lives here, not in a tensor: the input gradient reads it
 * right after, and a buffer that every call reuses is still in cache where a fresh tensor's memory is not (one
 * buffer per thread, grown to the largest layer's (out, batch) and kept). */
static __thread float *scratch = NULL;
static __thread size_t scratch_floats = 0;

static float *scratch_of(size_t floats) {
    if (floats > scratch_floats) { /* 64-byte aligned, as torch's tensors: an unaligned row costs split loads */
        void *grown = NULL;
        if (posix_memalign(&grown, 64, floats * sizeof(float)) != 0) return NULL;
        free(scratch);
        scratch = grown;
        scratch_floats = floats;
    }
    return scratch;
}

/* The widest batch whose input gradient reads W's values through perm inside the loop instead of gathering them
 * first: 1.08-1.34x faster at batches 4-32, about even at 64, up to 7 % slower at 128-256 (two passes over the
 * batch read each weight twice; Intel Xeon, docs/architecture.md). Settable for the tests, which compare both. */
static int64_t fused_gather_max_batch = 64;

/* Whether the input and weight gradients run in one pass over Wᵀ (grads_t) where both are wanted for every weight,
 * instead of the weight gradient's loop over W and the input gradient's over Wᵀ: the same floats, 1.4-1.5x faster at
 * batch 256, 1.06-1.26x at 16-64, about even at 8 (docs/architecture.md). Settable for the tests, which compare
 * both. */
static int64_t one_pass_grads = 1;

/* A setting above given a new value from Python (an int; a bool for one_pass_grads); returns the one before. */
static PyObject *swap_setting(PyObject *args, int64_t *setting) {
    Py_ssize_t value;
    if (!PyArg_ParseTuple(args, "n", &value)) return NULL;
    const int64_t before = *setting;
    *setting = value;
    return PyLong_FromLongLong(before);
}

static PyObject *py_set_fused_gather_max_batch(PyObject *self, PyObject *args) {
    return swap_setting(args, &fused_gather_max_batch);
}

static PyObject *py_set_one_pass_grads(PyObject *self, PyObject *args) { return swap_setting(args, &one_pass_grads); }

static PyObject *py_backward(PyObject *self, PyObject *args) {
    /* A compact layer's backward in one call. y is 0 unless the layer's ReLU is fused (dy is then masked by y into
     * the scratch buffer first); gv (the values' gradient), gb (the bias') and dx (the input's, Wᵀ dy over Wᵀ's CSR
     * structure, whose values are W's gathered through perm) are each 0 where not wanted. */
    /* With hdy not 0, dy is not read: this layer's output gradient comes from a fused one-output head's (head_t:
     * its values, row pointers, columns and output gradient hdy), made row by row into the scratch buffer. */
    /* An input gradient from feature first > 0 on is passed as Wᵀ's rows from there (crow_t and dx from row first,
     * cols the rows left). */
    Py_ssize_t crow, col, dy, y, x, gv, gb, values, perm, crow_t, col_t, dx, rows, cols, nnz, batch, hvalues, hcrow,
        hcol, hdy, first;
    int threads;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnnnnnnnninnnnn", &crow, &col, &dy, &y, &x, &gv, &gb, &values, &perm,
                          &crow_t, &col_t, &dx, &rows, &cols, &nnz, &batch, &threads, &hvalues, &hcrow, &hcol, &hdy,
                          &first))
        return NULL;
    const head_t head = {(const float *)hvalues, (const int32_t *)hcrow, (const int32_t *)hcol, NULL, NULL,
                         (const float *)hdy};
    float *dym = y || hdy ? scratch_of((size_t)(rows * batch > 0 ? rows * batch : 1)) : NULL;
    /* Both gradients in one pass over Wᵀ where every weight's column is in it (with first > 0, crow_t[0] > 0 unless
     * the rows before first are empty) */
    const int one_pass = one_pass_grads && dx && gv && batch > 0 && ((const int32_t *)crow_t)[0] == 0;
    /* The input gradient's own loop with a wide batch gathers Wᵀ's values first; a narrow one reads each weight
     * through perm in the loop */
    const int gather_first = dx && !one_pass && batch > fused_gather_max_batch;
    float *vt = gather_first ? malloc((size_t)(nnz > 0 ? nnz : 1) * sizeof(float)) : NULL;
    if (((y || hdy) && dym == NULL) || (gather_first && vt == NULL)) {
        free(vt);
        return PyErr_NoMemory();
    }
    const float *dy_in = y || hdy ? dym : (const float *)dy; /* the output gradient the products read */
    Py_BEGIN_ALLOW_THREADS {
        /* One pass over W's rows: the mask, the head's rows, the bias' sums and, unless the one pass over Wᵀ
         * computes them, the values' gradient */
        float *gv_rows = one_pass ? NULL : (float *)gv;
        if (y || gv_rows || gb || hdy)
            values_grad_rows(threads, (const int32_t *)crow, (const int32_t *)col, (const float *)dy,
                             (const float *)y, dym, (const float *)x, gv_rows, (float *)gb, rows, batch,
                             hdy ? &head : NULL);
        if (one_pass)
            grads_t_rows(threads, (const float *)values, (const int32_t *)perm, (const int32_t *)crow_t,
                         (const int32_t *)col_t, dy_in, (const float *)x + first * batch, (float *)dx, (float *)gv,
                         cols, batch);
        else if (dx) {
            const float *v = (const float *)values;
            const int32_t *p = (const int32_t *)perm;
            if (gather_first) { /* Wᵀ's values in its order first; the loop then reads them directly */
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && nnz >= PARALLEL_MIN_GATHER)
                for (Py_ssize_t j = 0; j < nnz; j++) vt[j] = v[p[j]];
                v = vt;
                p = NULL;
            }
            forward_rows(threads, v, p, (const int32_t *)crow_t, (const int32_t *)col_t, dy_in, NULL, (float *)dx,
                         cols, batch, 0, NULL);
        }
    }
    Py_END_ALLOW_THREADS free(vt);
    Py_RETURN_NONE;
}

/* The BatchRenorm entry points take (batch n, features f) and whether the input is feature-major; the gradient
 * and the input gradient's output have the input's layout (the wrapper makes them so). */
static PyObject *py_renorm_stats(PyObject *self, PyObject *args) {
    Py_ssize_t x, mean, var, n, f;
    int feature_major;
    if (!PyArg_ParseTuple(args, "nnnnnp", &x, &mean, &var, &n, &f, &feature_major)) return NULL;
    double *acc = malloc(2 * (size_t)f * sizeof(double));
    if (!acc) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS LEVELS[current].renorm_stats[feature_major]((const float *)x, (float *)mean, (float *)var,
                                                                       acc, n, f);
    Py_END_ALLOW_THREADS free(acc);
    Py_RETURN_NONE;
}

static PyObject *py_renorm_grad_sums(PyObject *self, PyObject *args) {
    Py_ssize_t g, x, mean, gsum, gcsum, n, f;
    int feature_major;
    if (!PyArg_ParseTuple(args, "nnnnnnnp", &g, &x, &mean, &gsum, &gcsum, &n, &f, &feature_major)) return NULL;
    double *acc = malloc(2 * (size_t)f * sizeof(double));
    if (!acc) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS LEVELS[current].renorm_grad_sums[feature_major](
        (const float *)g, (const float *)x, (const float *)mean, (float *)gsum, (float *)gcsum, acc, n, f);
    Py_END_ALLOW_THREADS free(acc);
    Py_RETURN_NONE;
}

static PyObject *py_renorm_input_grad(PyObject *self, PyObject *args) {
    Py_ssize_t g, x, mean, alpha, beta, gamma, dx, n, f;
    int feature_major;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnp", &g, &x, &mean, &alpha, &beta, &gamma, &dx, &n, &f, &feature_major))
        return NULL;
    Py_BEGIN_ALLOW_THREADS LEVELS[current].renorm_input_grad[feature_major](
        (const float *)g, (const float *)x, (const float *)mean, (const float *)alpha, (const float *)beta,
        (const float *)gamma, (float *)dx, n, f);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_levels(PyObject *self, PyObject *noargs) {
    PyObject *list = PyList_New(0);
    for (int i = 0; i < NUM_LEVELS; i++)
        if (supported(i)) PyList_Append(list, PyUnicode_FromString(LEVELS[i].name));
    return list;
}

static PyObject *py_level(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(LEVELS[current].name); }

static PyObject *py_set_level(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    for (int i = 0; i < NUM_LEVELS; i++)
        if (strcmp(LEVELS[i].name, name) == 0) {
            if (!supported(i)) return PyErr_Format(PyExc_ValueError, "this CPU does not support SIMD level %s", name);
            current = i;
            Py_RETURN_NONE;
        }
    return PyErr_Format(PyExc_ValueError, "unknown SIMD level %s", name);
}

static PyMethodDef METHODS[] = {
    {"forward", py_forward, METH_VARARGS, "y = W x + b, rectified or not (pointers, sizes, relu)"},
    {"backward", py_backward, METH_VARARGS, "a layer's masked dy, values', bias' and input gradients (pointers)"},
    {"renorm_stats", py_renorm_stats, METH_VARARGS, "BatchRenorm's column mean and variance (pointers and sizes)"},
    {"renorm_grad_sums", py_renorm_grad_sums, METH_VARARGS, "BatchRenorm's backward column sums"},
    {"renorm_input_grad", py_renorm_input_grad, METH_VARARGS, "BatchRenorm's input gradient"},
    {"set_fused_gather_max_batch", py_set_fused_gather_max_batch, METH_VARARGS,
     "widest batch whose input gradient reads W's values through perm in its loop; returns the one before"},
    {"set_one_pass_grads", py_set_one_pass_grads, METH_VARARGS,
     "whether the input and weight gradients run in one pass where they can; returns the setting before"},
    {"levels", py_levels, METH_NOARGS, "the SIMD levels this CPU runs, best first"},
    {"level", py_level, METH_NOARGS, "the SIMD level in use"},
    {"set_level", py_set_level, METH_VARARGS, "use another supported SIMD level"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_kernels", "Compact sparse kernels (see kernels.c).", -1,
                                    METHODS};

/* The calling convention of the entry points above; sparse_rl/backends/kernels.py uses an extension only when its
 * API_VERSION is the one it speaks (an extension built from another checkout falls back to torch's kernels). */
#define API_VERSION 5

PyMODINIT_FUNC PyInit__kernels(void) {
    for (int i = 0; i < NUM_LEVELS; i++)
        if (supported(i)) {
            current = i;
            break;
        }
    PyObject *module = PyModule_Create(&MODULE);
#ifdef _OPENMP
    const int openmp = 1;
#else
    const int openmp = 0;
#endif
    if (module != NULL && (PyModule_AddIntConstant(module, "API_VERSION", API_VERSION) != 0
                           || PyModule_AddIntConstant(module, "OPENMP", openmp) != 0)) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
