/* Fused greedy residual series on the CPU (fpxint.fused): one row of the 2-D view [G, K] at a time.
 *
 * Per row: one pass finds min / max of the row, then ONE pass per term quantizes, writes the integer
 * term, updates the residual in a scratch row and reduces min / max of the new residual for the next
 * scale. A row of a per-channel weight (<= a few 10 KB) stays in L1 / L2, so the weights are read
 * from memory once instead of ~9 times per term.
 *
 * Every float operation mirrors the eager code in fpxint/quant.py and fpxint/series.py, in the same
 * order and rounding, so results are bit-identical:
 *   scale    amax / denom (IEEE division), fixed rule s_k = s_(k-1) * (float)f
 *   quantize rint(r / safe(s)) (+ zero before rounding, asymmetric), clamp where eager clamps
 *   update   r - q*s as ONE fused multiply-add when torch's addcmul is fused (probed at load time),
 *            else two roundings; asymmetric: r - ((q - z) * s), two roundings
 *   output   x - R_n (activation path), or sum_j c_j (q_j s_j) accumulated with a fused add
 * Build flags must keep -ffp-contract=off (no silent FMA) and no -ffast-math.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { SYM = 0, FULL = 1, ASYM = 2 };

typedef struct {
    int grid, terms, fixed, binary, fma, check;
    float denom, f, qmin, qmax, zmax;
} Params;

typedef struct { float s, safe, z; } Term;

/* scale (and zero point) of term k from the min / max of the residual R_(k-1) */
static Term term_scale(const Params* p, int k, float mn, float mx, const Term* prev,
                       const float* given_s, const float* given_z) {
    Term t;
    t.z = 0.0f;
    if (k == 0 && given_s) {            /* the MSE rule's first scale, computed by the caller */
        t.s = *given_s;
        if (given_z) t.z = *given_z;
    } else if (k > 0 && p->fixed) {
        t.s = prev->s * p->f;
    } else if (p->grid == ASYM) {
        float lo = mn > 0.0f ? 0.0f : mn, hi = mx < 0.0f ? 0.0f : mx;
        float d = hi - lo;
        t.s = d / p->denom;
        float safe = t.s > 0.0f ? t.s : 1.0f;
        float nl = -lo;
        float zz = rintf(nl / safe);
        zz = zz < 0.0f ? 0.0f : zz;
        t.z = zz > p->zmax ? p->zmax : zz;
    } else {
        float a = -mn;
        a = a > mx ? a : mx;
        t.s = a / p->denom;
    }
    t.safe = t.s > 0.0f ? t.s : 1.0f;
    return t;
}

/* min / max (and a non-finite flag) of x[0..n) */
static void minmax(const float* restrict x, int64_t n, int check, float* mn_io, float* mx_io, int* bad_io) {
    float mn = *mn_io, mx = *mx_io;
    uint32_t bad = 0;
    if (check) {
        const uint32_t* restrict u = (const uint32_t*)x;
        #pragma omp simd reduction(|:bad)
        for (int64_t i = 0; i < n; i++) bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    }
    #pragma omp simd reduction(min:mn) reduction(max:mx)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    *mn_io = mn; *mx_io = mx;
    if (bad) *bad_io = 1;
}

/* One term over src[0..n): integer term to q (int8 / uint8, may be NULL), new residual to dst (may be
 * NULL), its min / max, and for the last term of the activation path x - R_n to out; with coeffs,
 * out accumulates c * (q * s) instead. */
#define QUANT_SYMFULL(v) ({ float _t = rintf((v) / safe); _t = _t < qmin ? qmin : _t; _t > qmax ? qmax : _t; })
#define QUANT_BIN(v) ((v) >= 0.0f ? 1.0f : -1.0f)
#define QUANT_ASYM(v) ({ float _t = (v) / safe; _t = _t + z; _t = rintf(_t); _t = _t < qmin ? qmin : _t; _t > qmax ? qmax : _t; })

#define DEF_PASS(NAME, QUANT, QT, UPDATE)                                                              \
static void NAME(const float* restrict src, float* restrict dst, QT* restrict q, float* restrict out,  \
                 const float* restrict x, int64_t n, const Term* t, float qmin, float qmax,          \
                 int mode, float c, int afma, float* mn_io, float* mx_io) {                           \
    const float s = t->s, safe = t->safe, z = t->z;                                                   \
    float mn = *mn_io, mx = *mx_io;                                                                   \
    (void)safe; (void)z; (void)qmin; (void)qmax;                                                      \
    if (mode == 0) {        /* middle term: q, residual, min / max */                                 \
        _Pragma("omp simd reduction(min:mn) reduction(max:mx)")                                        \
        for (int64_t i = 0; i < n; i++) {                                                             \
            float v = src[i], qv = QUANT(v), nv;                                                      \
            UPDATE;                                                                                   \
            q[i] = (QT)qv;                                                                            \
            dst[i] = nv;                                                                              \
            mn = nv < mn ? nv : mn;                                                                   \
            mx = nv > mx ? nv : mx;                                                                   \
        }                                                                                             \
    } else if (mode == 1) { /* last weight term: q only */                                            \
        _Pragma("omp simd")                                                                            \
        for (int64_t i = 0; i < n; i++) { float v = src[i]; q[i] = (QT)QUANT(v); }                    \
    } else if (mode == 2) { /* activation, middle term: residual, min / max */                        \
        _Pragma("omp simd reduction(min:mn) reduction(max:mx)")                                        \
        for (int64_t i = 0; i < n; i++) {                                                             \
            float v = src[i], qv = QUANT(v), nv;                                                      \
            UPDATE;                                                                                   \
            dst[i] = nv;                                                                              \
            mn = nv < mn ? nv : mn;                                                                   \
            mx = nv > mx ? nv : mx;                                                                   \
        }                                                                                             \
    } else if (mode == 3) { /* activation, last term: out = x - R_n */                                \
        _Pragma("omp simd")                                                                            \
        for (int64_t i = 0; i < n; i++) {                                                             \
            float v = src[i], qv = QUANT(v), nv;                                                      \
            UPDATE;                                                                                   \
            out[i] = x[i] - nv;                                                                       \
        }                                                                                             \
    } else {                /* activation with coefficients: out += c * (q s) (dequantized term) */   \
        _Pragma("omp simd reduction(min:mn) reduction(max:mx)")                                        \
        for (int64_t i = 0; i < n; i++) {                                                             \
            float v = src[i], qv = QUANT(v), nv;                                                      \
            UPDATE;                                                                                   \
            if (dst) dst[i] = nv;                                                                     \
            if (c != 0.0f) { float d = DEQUANT; out[i] = afma ? fmaf(c, d, out[i]) : out[i] + c * d; } \
            mn = nv < mn ? nv : mn;                                                                   \
            mx = nv > mx ? nv : mx;                                                                   \
        }                                                                                             \
    }                                                                                                 \
    *mn_io = mn; *mx_io = mx;                                                                         \
}

#define UPD_FMA nv = fmaf(-qv, s, v)
#define UPD_TWO { float _p = qv * s; nv = v - _p; }
#define UPD_ASYM { float _c = qv - z; float _d = _c * s; nv = v - _d; }

#define DEQUANT (qv * s)
DEF_PASS(pass_sym_fma, QUANT_SYMFULL, int8_t, UPD_FMA)
DEF_PASS(pass_sym_two, QUANT_SYMFULL, int8_t, UPD_TWO)
DEF_PASS(pass_bin_fma, QUANT_BIN, int8_t, UPD_FMA)
DEF_PASS(pass_bin_two, QUANT_BIN, int8_t, UPD_TWO)
#undef DEQUANT
#define DEQUANT ((qv - z) * s)
DEF_PASS(pass_asym, QUANT_ASYM, uint8_t, UPD_ASYM)
#undef DEQUANT

static void term_pass(const Params* p, const float* src, float* dst, void* q, float* out, const float* x,
                      int64_t n, const Term* t, int mode, float c, float* mn, float* mx) {
    if (p->grid == ASYM)
        pass_asym(src, dst, (uint8_t*)q, out, x, n, t, p->qmin, p->qmax, mode, c, p->fma, mn, mx);
    else if (p->binary)
        (p->fma ? pass_bin_fma : pass_bin_two)(src, dst, (int8_t*)q, out, x, n, t, p->qmin, p->qmax, mode, c, p->fma, mn, mx);
    else
        (p->fma ? pass_sym_fma : pass_sym_two)(src, dst, (int8_t*)q, out, x, n, t, p->qmin, p->qmax, mode, c, p->fma, mn, mx);
}

/* Row layout shared by the entry points: tensor b has G[b] rows of K[b] elements at x[b]; its terms
 * go to q[b] ([terms, G, K]), scales to s[b] ([terms, G]), zero points to zp[b] ([terms, G] or NULL),
 * activation output to out[b] ([G, K]). given_s / given_z: first-term scales ([G]) or NULL. */
typedef struct {
    const float* x; void* q; float* s; float* zp; float* out;
    const float* given_s; const float* given_z;
    int64_t G, K;
    int64_t split;   /* 1: split each row over the threads (few long rows), 0: one row per thread */
} Tensor;

/* mode per term: weights (q, no out) or activations (out, no q); coeffs switch to accumulation */
static int pick_mode(const Tensor* T, int k, int last, const float* coeffs) {
    if (T->out == NULL) return last ? 1 : 0;
    if (coeffs) return 4;
    return last ? 3 : 2;
}

static void store_term(const Params* p, const Tensor* T, int64_t g, int k, const Term* t) {
    T->s[(int64_t)k * T->G + g] = t->s;
    if (T->zp) T->zp[(int64_t)k * T->G + g] = t->z;
}

static inline void* q_row(const Params* p, const Tensor* T, int k, int64_t g, int64_t i0) {
    if (!T->q) return NULL;
    int64_t off = ((int64_t)k * T->G + g) * T->K + i0;
    return p->grid == ASYM ? (void*)((uint8_t*)T->q + off) : (void*)((int8_t*)T->q + off);
}

/* term k of row g: its scale from the residual's range [mn, mx] (or the given scales), stored; *t holds
 * the previous term on entry and this one on return. Returns the mode of the term's pass. Shared by the
 * serial and the parallel row so both compute the same scales. */
static int begin_term(const Params* p, const Tensor* T, int64_t g, int k, float mn, float mx, Term* t,
                      const float* coeffs) {
    const float* gs = T->given_s ? T->given_s + g : NULL;
    const float* gz = T->given_z ? T->given_z + g : NULL;
    *t = term_scale(p, k, mn, mx, t, gs, gz);
    store_term(p, T, g, k, t);
    return pick_mode(T, k, k == p->terms - 1, coeffs);
}

/* L2 prefetch of x[i0..i1): the next row streams in while this row's passes compute from L1 */
static void prefetch(const float* x, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i += 16) __builtin_prefetch(x + i, 0, 2);
}

/* one whole row on the calling thread; scratch holds K floats; next: the row to prefetch, or NULL */
static int row_series(const Params* p, const Tensor* T, int64_t g, float* scratch, const float* coeffs,
                      const float* next, int64_t next_k) {
    const int64_t K = T->K;
    const float* x = T->x + g * K;
    float* out = T->out ? T->out + g * K : NULL;
    float mn = INFINITY, mx = -INFINITY;
    int bad = 0;
    minmax(x, K, p->check, &mn, &mx, &bad);
    if (bad) return 1;
    if (out && coeffs) memset(out, 0, (size_t)K * sizeof(float));
    Term t = {0, 1, 0};
    for (int k = 0; k < p->terms; k++) {
        const int last = k == p->terms - 1;
        const int mode = begin_term(p, T, g, k, mn, mx, &t, coeffs);
        if (next) prefetch(next, next_k * k / p->terms, next_k * (k + 1) / p->terms);
        mn = INFINITY; mx = -INFINITY;
        term_pass(p, k == 0 ? x : scratch, (mode == 4 && last) ? NULL : scratch, q_row(p, T, k, g, 0), out, x,
                  K, &t, mode, coeffs ? coeffs[k] : 0.0f, &mn, &mx);
    }
    return 0;
}

/* one long row split into chunks over all threads, one parallel pass per term (per-tensor views) */
#define CHUNK 16384
static int row_series_parallel(const Params* p, const Tensor* T, int64_t g, float* scratch, const float* coeffs,
                               int nthreads) {
    const int64_t K = T->K, nchunks = (K + CHUNK - 1) / CHUNK;
    const float* x = T->x + g * K;
    float* out = T->out ? T->out + g * K : NULL;
    float mn = INFINITY, mx = -INFINITY;
    int bad = 0;
    #pragma omp parallel for num_threads(nthreads) schedule(static) reduction(min:mn) reduction(max:mx) reduction(|:bad)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t i0 = c * CHUNK, n = K - i0 < CHUNK ? K - i0 : CHUNK;
        if (out && coeffs) memset(out + i0, 0, (size_t)n * sizeof(float));
        minmax(x + i0, n, p->check, &mn, &mx, &bad);
    }
    if (bad) return 1;
    Term t = {0, 1, 0};
    for (int k = 0; k < p->terms; k++) {
        const int last = k == p->terms - 1;
        const int mode = begin_term(p, T, g, k, mn, mx, &t, coeffs);
        const float* src = k == 0 ? x : scratch;
        float* dst = (mode == 4 && last) ? NULL : scratch;
        const float cf = coeffs ? coeffs[k] : 0.0f;
        float nmn = INFINITY, nmx = -INFINITY;
        #pragma omp parallel for num_threads(nthreads) schedule(static) reduction(min:nmn) reduction(max:nmx)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t i0 = c * CHUNK, n = K - i0 < CHUNK ? K - i0 : CHUNK;
            term_pass(p, src + i0, dst ? dst + i0 : NULL, q_row(p, T, k, g, i0), out ? out + i0 : NULL, x + i0,
                      n, &t, mode, cf, &nmn, &nmx);
        }
        mn = nmn; mx = nmx;
    }
    return 0;
}

/* Entry point: ntensors tensors; rows of tensors with split == 0 go one row per thread (all such
 * tensors' rows in one parallel loop), rows of the others are split over the threads. Returns -1 on
 * success, -2 when out of memory, or the index of the first tensor holding a non-finite value
 * (check on; that tensor's outputs are then incomplete). */
int fpx_series(const Tensor* tensors, int ntensors, int grid, int bits, int terms, int fixed, int fma,
               int clamp, int check, float f, const float* coeffs, int nthreads) {
    Params p;
    p.grid = grid; p.terms = terms; p.fixed = fixed; p.fma = fma; p.check = check; p.f = f;
    p.binary = grid == SYM && bits == 1;
    if (grid == SYM) {
        p.denom = bits == 1 ? 2.0f : (float)((1 << (bits - 1)) - 1);
        p.qmin = -(float)((1 << (bits - 1)) - 1); p.qmax = (float)((1 << (bits - 1)) - 1);
    } else if (grid == FULL) {
        p.denom = (float)(1 << (bits - 1)) - 0.5f;
        p.qmin = -(float)(1 << (bits - 1)); p.qmax = (float)((1 << (bits - 1)) - 1);
    } else {
        p.denom = (float)((1 << bits) - 1);
        p.qmin = 0.0f; p.qmax = (float)((1 << bits) - 1);
    }
    p.zmax = (float)((1 << bits) - 1);
    if (!clamp) { p.qmin = -INFINITY; p.qmax = INFINITY; }

    /* short rows: one flat parallel loop over (tensor, row) */
    int64_t total = 0, kmax = 0;
    int64_t* start = (int64_t*)malloc(sizeof(int64_t) * (size_t)(ntensors + 1));
    if (!start) return -2;
    for (int b = 0; b < ntensors; b++) {
        start[b] = total;
        if (!tensors[b].split) {
            total += tensors[b].G;
            if (tensors[b].K > kmax) kmax = tensors[b].K;
        }
    }
    start[ntensors] = total;
    int first_bad = ntensors, oom = 0;
    if (total > 0) {
        #pragma omp parallel num_threads(nthreads)
        {
            float* scratch = (float*)malloc(sizeof(float) * (size_t)(kmax > 0 ? kmax : 1));
            int b = 0;
            #pragma omp for schedule(dynamic, 16)
            for (int64_t r = 0; r < total; r++) {
                if (!scratch) { oom = 1; continue; }
                while (start[b + 1] <= r) b++;     /* rows are handed out in increasing order per thread */
                while (start[b] > r) b--;
                const Tensor* T = &tensors[b];
                int64_t g = r - start[b];
                const float* next = g + 1 < T->G ? T->x + (g + 1) * T->K : NULL;
                if (row_series(&p, T, g, scratch, coeffs, next, T->K)) {
                    #pragma omp critical
                    { if (b < first_bad) first_bad = b; }
                }
            }
            free(scratch);
        }
    }
    /* long rows: each split over the threads */
    for (int b = 0; b < ntensors; b++) {
        if (!tensors[b].split) continue;
        float* scratch = (float*)malloc(sizeof(float) * (size_t)tensors[b].K);
        if (!scratch) { free(start); return -2; }
        for (int64_t g = 0; g < tensors[b].G; g++)
            if (row_series_parallel(&p, &tensors[b], g, scratch, coeffs, nthreads) && b < first_bad) first_bad = b;
        free(scratch);
    }
    free(start);
    if (oom) return -2;
    return first_bad < ntensors ? first_bad : -1;
}
