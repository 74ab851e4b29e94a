/* kernels.c's baseline loops (the "generic" level: NEON on aarch64) behind one entry point for an emulated CPU
 * (tests/test_kernels_aarch64.py). h_call(args): args[0] names the loop, the rest are its arguments, pointers as
 * integers; the loops' fused Q head (head_t) is not passed (NULL: the x86 tests check it). Python's API is never
 * called here (the linker drops the module's functions, which alone use it), and memcpy/memset stand in for a C
 * library, so the build needs no libc for the target. */
#include "kernels.c"

void *memcpy(void *dst, const void *src, size_t n) {
    volatile char *d = dst; /* volatile: no compiler turns the loop back into a call to memcpy */
    const char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    volatile char *d = dst;
    while (n--) *d++ = (char)c;
    return dst;
}

enum { FORWARD, VALUES_GRAD, RENORM_STATS, RENORM_GRAD_SUMS, RENORM_INPUT_GRAD, GRADS_T };

void h_call(const int64_t *a) {
    const int g = NUM_LEVELS - 1; /* the baseline: the only level on aarch64 */
    switch (a[0]) {
    case FORWARD:
        LEVELS[g].forward((const float *)a[1], (const int32_t *)a[2], (const int32_t *)a[3], (const int32_t *)a[4],
                          (const float *)a[5], (const float *)a[6], (float *)a[7], 0, a[8], a[9], (int)a[10], NULL);
        break;
    case VALUES_GRAD:
        LEVELS[g].values_grad((const int32_t *)a[1], (const int32_t *)a[2], (const float *)a[3], (const float *)a[4],
                              (float *)a[5], (const float *)a[6], (float *)a[7], (float *)a[8], 0, a[9], a[10],
                              NULL);
        break;
    case RENORM_STATS:
        LEVELS[g].renorm_stats[a[1]]((const float *)a[2], (float *)a[3], (float *)a[4], (double *)a[5], a[6], a[7]);
        break;
    case RENORM_GRAD_SUMS:
        LEVELS[g].renorm_grad_sums[a[1]]((const float *)a[2], (const float *)a[3], (const float *)a[4], (float *)a[5],
                                         (float *)a[6], (double *)a[7], a[8], a[9]);
        break;
    case RENORM_INPUT_GRAD:
        LEVELS[g].renorm_input_grad[a[1]]((const float *)a[2], (const float *)a[3], (const float *)a[4],
                                          (const float *)a[5], (const float *)a[6], (const float *)a[7], (float *)a[8],
                                          a[9], a[10]);
        break;
    case GRADS_T:
        LEVELS[g].grads_t((const float *)a[1], (const int32_t *)a[2], (const int32_t *)a[3], (const int32_t *)a[4],
                          (const float *)a[5], (const float *)a[6], (float *)a[7], (float *)a[8], 0, a[9], a[10]);
        break;
    }
}
