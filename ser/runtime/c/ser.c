/* ser: the feature front end and the bit-packed MLP of one exported model (C99, libm only).
 *
 * It computes what ser/runtime/features.py and ser/runtime/model.py compute, frame by frame:
 *   frames of SER_N_FFT samples every SER_HOP (centred: SER_N_FFT/2 zeros before and after a clip or
 *   window) → periodic Hann window → real FFT (a radix-2² complex FFT of SER_N_FFT/2 points) → power
 *   spectrum → mel power (Slaney triangles, each stored as its nonzero span) → dB (10·log10, floored
 *   SER_TOP_DB below the clip's peak, or at −SER_TOP_DB dB) → MFCC (orthonormal DCT-II); chroma (Ellis
 *   filterbank, stored per class as spans of bins, peak-normalised per frame); mel (power or dB);
 *   pitch (YIN: the autocorrelation from the STFT's power by a short inverse FFT, or of the unwindowed
 *   frame by FFTs of 2·SER_N_FFT points; cumulative-mean-normalised difference, first trough below the
 *   threshold else the deepest, parabolic refinement → log F0, periodicity, voiced); spectral shape
 *   (loudness in dB, zero-crossing rate, centroid, bandwidth, roll-off, flatness, octave-band contrast in
 *   dB) → mean / standard deviation over the frames (Welford; log F0 over voiced frames only) →
 *   [speaker z-score →] standardisation → layers of integer codes on each layer's grid → softmax.
 *
 * Streaming (SER_STREAMING): a window of SER_WINDOW samples every SER_WINDOW_HOP (a multiple of SER_HOP),
 * each exactly the clip `ser listen` cuts: its frames are the stream's frames where they lie inside the
 * window (computed once, pooled into every open window they belong to) and, at its two edges, frames
 * computed again with zeros outside the window. Pooling runs per open window (at most
 * ceil(SER_WINDOW / SER_WINDOW_HOP)); the samples live in a ring of SER_N_FFT int16.
 * A clip of a model with dB floors below the clip's peak is read twice: the first pass finds the peaks.
 */
#include "ser.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#define SER_BINS (SER_N_FFT / 2 + 1)
#define SER_M (SER_N_FFT / 2) /* complex points of a frame's FFT */
#define SER_AMIN 1e-10f
#define SER_TWO_PASS (!SER_DB_ABSOLUTE && (SER_NEEDS_DB || SER_HAS_SPECTRAL))
#define SER_YIN_EXACT (SER_HAS_PITCH && !SER_YIN_STFT)
#define SER_YIN_K (SER_N_FFT / (2 * SER_YIN_STEP)) /* complex points of YIN's inverse FFT (stft) */
/* The DCT by an FFT of n_mels/2 points where n_mels is a power of two whose 4·n_mels divides the cosine table's period. */
#define SER_DCT_FFT (SER_N_MELS >= 8 && (SER_N_MELS & (SER_N_MELS - 1)) == 0 && SER_TWIDDLE_N % (4 * SER_N_MELS) == 0)
/* The frame's first FFT stage done while loading it, where that stage is radix-4 (log2 of SER_M even). */
#define SER_FUSED_LOAD (SER_STREAMING && SER_M >= 16 && (SER_M & 0x55555555) != 0)
#define SER_MAGNITUDES (SER_HAS_SPECTRAL || (SER_HAS_CHROMA && SER_CHROMA_POWER_IS_1)) /* beside the power */

#if defined(__GNUC__)
#define SER_ALWAYS_INLINE static inline __attribute__((always_inline))
#define SER_NOINLINE static __attribute__((noinline))
#define SER_HELPER static __attribute__((unused)) /* a helper some models' settings leave unused */
#else
#define SER_ALWAYS_INLINE static inline
#define SER_NOINLINE static
#define SER_HELPER static
#endif

enum { PART_MFCC = 0, PART_CHROMA = 1, PART_MEL = 2, PART_PITCH = 3, PART_SPECTRAL = 4 };
enum { STAT_MEAN = 0, STAT_STD = 1 };
enum { GRID_SYMMETRIC = 0, GRID_FULL = 1 };

/* Mean and (Welford) sum of squared deviations of the frames pooled so far. */
typedef struct {
    int frames, voiced; /* voiced: log F0's own count */
    float mean[SER_FRAME_DIM];
#if SER_HAS_STD
    float m2[SER_FRAME_DIM];
#endif
} pool_t;

/* Where a frame's samples come from: a float clip or the int16 ring; stream positions [lo, hi) are audio,
 * the rest of the frame (which starts at position `first`) is zeros. */
typedef struct {
    const float *clip;
    const int16_t *ring;
    int64_t first, lo, hi;
} source_t;

/* The dB floors: the same for every frame. */
typedef struct { float mel, loudness, peak; } floors_t;

static struct {
    union {
        float fft[SER_FFT_FLOATS]; /* the frame's FFT; then power and magnitude of bin k at 2k, 2k+1; then YIN's */
        float act[2][SER_MAX_WIDTH]; /* layer activations (ping-pong), between frames */
    } u;
    float mel[SER_N_MELS];  /* mel power */
    float db[SER_N_MELS];   /* mel power in dB, floored */
#if SER_HAS_MFCC
    float half[2 * ((SER_N_MELS + 1) / 2)]; /* the DCT's input: its FFT, or the dB bands' even and odd halves */
#endif
    float frame[SER_FRAME_DIM]; /* one frame's features, in the model's part order */
    float zcr;              /* zero-crossing rate of the unwindowed frame */
#if SER_HAS_SPECTRAL
    struct { float power, floored, magnitude, moment, second, product; long exponent; } sums; /* over the bins */
#endif
#if SER_HAS_PITCH
    float pitch[3];         /* log F0, periodicity, voiced */
#endif
#if SER_HAS_SPECTRAL
    uint32_t low[SER_CONTRAST_MAX_COUNT], high[SER_CONTRAST_MAX_COUNT]; /* a sub-band's smallest / largest magnitudes (bits) */
#endif
    pool_t clip_pool;       /* the clip API's */
} scratch;

const char *ser_class_name(int i) { return (i >= 0 && i < SER_N_CLASSES) ? ser_class_names[i] : NULL; }

/* cos(2πk/T) for 0 <= k <= T/2, T = SER_TWIDDLE_N, from the quarter-wave table (sin(2πk/T) is Q[T/4 − k] for
 * k <= T/4: every twiddle is taken in the first quadrant). */
SER_HELPER float cos_t(int k) { return k <= SER_TWIDDLE_N / 4 ? ser_cos_quarter[k] : -ser_cos_quarter[SER_TWIDDLE_N / 2 - k]; }

/* cos(2πi/SER_N_FFT), 0 <= i < SER_N_FFT, and the periodic Hann window 0.5 − 0.5·cos(2πi/SER_N_FFT). */
#define SER_COS_STRIDE (SER_TWIDDLE_N / SER_N_FFT)
SER_HELPER float cos_n(int i) { return i <= SER_N_FFT / 2 ? cos_t(i * SER_COS_STRIDE) : cos_t((SER_N_FFT - i) * SER_COS_STRIDE); }
SER_HELPER float window_at(int i) { return 0.5f - 0.5f * cos_n(i); }

/* -- FFT --------------------------------------------------------------------------------------------------- */

/* The bit reversal (over log2 m bits, m a power of two) of j + 1, given r, that of j: an increment counted from
 * the top bit down. Cortex-M3/M4/M7 reverse a word in one instruction (RBIT): rev(j + 1) = rbit(rbit(r) + 2^32/m). */
static int bit_reverse_next(int r, int m) {
#if defined(__GNUC__) && (defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_7M__))
    unsigned word;
    __asm__("rbit %0, %1" : "=r"(word) : "r"((unsigned)r));
    word += 1u << (__builtin_clz((unsigned)m) + 1);
    __asm__("rbit %0, %1" : "=r"(word) : "r"(word));
    return (int)word;
#else
    int bit = m >> 1;
    while (r & bit) { r ^= bit; bit >>= 1; }
    return r | bit;
#endif
}

/* In-place complex FFT of m points (interleaved re, im; m a power of two, m <= SER_TWIDDLE_N / 2) given in
 * bit-reversed order, out in natural order: decimation in time, two radix-2 stages fused into one radix-4
 * butterfly (three twiddle products instead of four), a single radix-2 stage first when log2(m) is odd.
 * Outputs 0..keep−1 are needed (keep <= m): the last stage skips the butterflies that feed none of them.
 * first: 1, or 4 where the caller did the first radix-4 stage itself (load_ring_first_stage). */
static void fft(float *z, int m, int keep, int first) {
    int h = first, s, k;
    if (first == 1 && (m & 0x55555555) == 0) { /* log2(m) odd: one radix-2 stage (twiddle 1) */
        for (s = 0; s < 2 * m; s += 4) {
            float *a = z + s, *b = a + 2, tr = b[0], ti = b[1];
            b[0] = a[0] - tr; b[1] = a[1] - ti;
            a[0] += tr; a[1] += ti;
        }
        h = 2;
    }
    for (; 4 * h <= m; h *= 4) {
        const int len = 4 * h, step = SER_TWIDDLE_N / len; /* W = e^{−2πik/len} = e^{−2πi(k·step)/T} */
        const int kmax = (len == m && keep < h) ? keep : h;
        for (s = 0; s < m; s += len) { /* k = 0: every twiddle is 1 */
            float *a = z + 2 * s, *b = a + 2 * h, *c = b + 2 * h, *d = c + 2 * h;
            const float ar = a[0] + b[0], ai = a[1] + b[1], br = a[0] - b[0], bi = a[1] - b[1];
            const float cr = c[0] + d[0], ci = c[1] + d[1], dr = c[0] - d[0], di = c[1] - d[1];
            a[0] = ar + cr; a[1] = ai + ci;
            c[0] = ar - cr; c[1] = ai - ci;
            b[0] = br + di; b[1] = bi - dr;
            d[0] = br - di; d[1] = bi + dr;
        }
        for (k = 1; k < kmax; ++k) {
            /* k·step < T/4: the first quadrant */
            const float w1r = ser_cos_quarter[k * step], w1i = -ser_cos_quarter[SER_TWIDDLE_N / 4 - k * step];
            const float w2r = w1r * w1r - w1i * w1i, w2i = 2.0f * w1r * w1i;
            const float w3r = w2r * w1r - w2i * w1i, w3i = w2r * w1i + w2i * w1r;
            for (s = k; s < m; s += len) {
                float *a = z + 2 * s, *b = a + 2 * h, *c = b + 2 * h, *d = c + 2 * h;
                /* stage 1 pairs (a, b) and (c, d) with W_{2h}^k = w², stage 2 (a, c) with w and (b, d) with −i·w */
                const float t1r = b[0] * w2r - b[1] * w2i, t1i = b[0] * w2i + b[1] * w2r;
                const float t2r = c[0] * w1r - c[1] * w1i, t2i = c[0] * w1i + c[1] * w1r;
                const float t3r = d[0] * w3r - d[1] * w3i, t3i = d[0] * w3i + d[1] * w3r;
                const float ar = a[0] + t1r, ai = a[1] + t1i, br = a[0] - t1r, bi = a[1] - t1i;
                const float cr = t2r + t3r, ci = t2i + t3i, dr = t2r - t3r, di = t2i - t3i;
                a[0] = ar + cr; a[1] = ai + ci;
                c[0] = ar - cr; c[1] = ai - ci;
                b[0] = br + di; b[1] = bi - dr;
                d[0] = br - di; d[1] = bi + dr;
            }
        }
    }
}

/* Bins k and m − k (0 < k <= m/2) of the real FFT of 2m samples from the complex FFT z of their m (even, odd)
 * pairs: with E, D the even and odd parts of z[k] and conj(z[m − k]) and t = W·D, W = e^{−2πik/(2m)},
 * X[k] = E − i·t and X[m − k] = conj(E) − i·conj(t): one twiddle for both. */
SER_HELPER void real_pair(const float *z, int m, int k, float *x) {
    const float ar = z[2 * k], ai = z[2 * k + 1], br = z[2 * (m - k)], bi = -z[2 * (m - k) + 1];
    const float er = 0.5f * (ar + br), ei = 0.5f * (ai + bi), dr = 0.5f * (ar - br), di = 0.5f * (ai - bi);
    const int w = k * (SER_TWIDDLE_N / (2 * m)); /* <= T/4: the first quadrant */
    const float wr = ser_cos_quarter[w], wi = -ser_cos_quarter[SER_TWIDDLE_N / 4 - w];
    const float tr = dr * wr - di * wi, ti = dr * wi + di * wr;
    x[0] = er + ti; x[1] = ei - tr;  /* X[k] */
    x[2] = er - ti; x[3] = -ei - tr; /* X[m − k] */
}

/* x = mantissa · 2^exponent, mantissa in [1, 2): returns the mantissa and adds the exponent (x positive, normal). */
SER_ALWAYS_INLINE float split_exponent(float x, long *exponent) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    *exponent += (long)((bits >> 23) & 0xFFu) - 127;
    bits = (bits & 0x007FFFFFu) | 0x3F800000u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* log2 of a positive normal float: exponent + log2 of the mantissa m (in [√½, √2)) by the series
 * 2/ln 2·(t + t³/3 + … + t⁹/9), t = (m − 1)/(m + 1), |t| < 0.172 (next term < 1e-9): libm's logf and log10f
 * cost five times as much and the dB conversions are 143 per frame. */
SER_HELPER float log2_positive(float x) {
    uint32_t bits;
    int e;
    float m, t, t2;
    memcpy(&bits, &x, sizeof bits);
    e = (int)((bits >> 23) & 0xFFu) - 127;
    bits = (bits & 0x007FFFFFu) | 0x3F800000u;
    memcpy(&m, &bits, sizeof m);
    if (m > 1.41421356f) { m *= 0.5f; ++e; }
    t = (m - 1.0f) / (m + 1.0f);
    t2 = t * t;
    return (float)e + t * (2.88539008f + t2 * (0.961796694f + t2 * (0.577078016f + t2 * (0.412198583f + t2 * 0.320598898f))));
}

/* The frame's FFT z (SER_M points) → the power (and magnitude) of bin k at z[2k] (z[2k + 1]), k = 0..SER_M,
 * in place: bins k and SER_M − k come from the same two complex points and one twiddle. With spectral parts,
 * the sums over the bins they need on the way: Σp, Σmax(p, 1e-10), Σm, Σm·k, Σm·k², and Π max(p, 1e-10)
 * (flatness: a mantissa and an exponent; p >= 1e-10 and p < 2^64, so two of them and a mantissa stay normal). */
SER_NOINLINE void power_spectrum(float *z) {
    const float dc = z[0] + z[1], nyquist = z[0] - z[1];
    const float *cosine = ser_cos_quarter + SER_COS_STRIDE, *sine = ser_cos_quarter + SER_TWIDDLE_N / 4 - SER_COS_STRIDE;
    float *lo = z + 2, *hi = z + 2 * (SER_M - 1);
#if SER_HAS_SPECTRAL
    const float p0 = dc * dc > SER_AMIN ? dc * dc : SER_AMIN, pm = nyquist * nyquist > SER_AMIN ? nyquist * nyquist : SER_AMIN;
    float power = dc * dc + nyquist * nyquist, floored = p0 + pm, magnitude = fabsf(dc) + fabsf(nyquist);
    float moment = fabsf(nyquist) * (float)SER_M, second = moment * (float)SER_M, product, bin = 1.0f, nib = (float)(SER_M - 1);
    long exponent = 0;
    product = split_exponent(p0 * pm, &exponent);
#endif
    for (; lo <= hi; lo += 2, hi -= 2, cosine += SER_COS_STRIDE, sine -= SER_COS_STRIDE) {
        /* E, D: the even and odd parts of z[k] and conj(z[m − k]); t = W·D, W = e^{−2πik/n};
         * X[k] = E − i·t, X[m − k] = conj(E) − i·conj(t) (k = m/2: lo == hi, the same bin twice) */
        const float er = 0.5f * (lo[0] + hi[0]), ei = 0.5f * (lo[1] - hi[1]), dr = 0.5f * (lo[0] - hi[0]), di = 0.5f * (lo[1] + hi[1]);
        const float wr = *cosine, wi = -*sine, tr = dr * wr - di * wi, ti = dr * wi + di * wr;
        const float xr = er + ti, xi = ei - tr, yr = er - ti, yi = ei + tr;
        const float p = xr * xr + xi * xi, q = yr * yr + yi * yi;
#if SER_MAGNITUDES
        const float mp = sqrtf(p), mq = sqrtf(q);
        lo[1] = mp;
        hi[1] = mq;
#endif
        lo[0] = p;
        hi[0] = q;
#if SER_HAS_SPECTRAL
        if (lo < hi) {
            const float fp = p > SER_AMIN ? p : SER_AMIN, fq = q > SER_AMIN ? q : SER_AMIN;
            const float a = mp * bin, b = mq * nib;
            power += p + q;
            floored += fp + fq;
            magnitude += mp + mq;
            moment += a + b;
            second += a * bin + b * nib;
            product = split_exponent(product * (fp * fq), &exponent);
        } else { /* bin m/2 */
            power += p;
            floored += p > SER_AMIN ? p : SER_AMIN;
            magnitude += mp;
            moment += mp * bin;
            second += mp * bin * bin;
            product = split_exponent(product * (p > SER_AMIN ? p : SER_AMIN), &exponent);
        }
        bin += 1.0f;
        nib -= 1.0f;
#endif
    }
    z[0] = dc * dc;
    z[2 * SER_M] = nyquist * nyquist;
#if SER_MAGNITUDES
    z[1] = fabsf(dc);
    z[2 * SER_M + 1] = fabsf(nyquist);
#endif
#if SER_HAS_SPECTRAL
    scratch.sums.power = power;
    scratch.sums.floored = floored;
    scratch.sums.magnitude = magnitude;
    scratch.sums.moment = moment;
    scratch.sums.second = second;
    scratch.sums.product = product;
    scratch.sums.exponent = exponent;
#endif
}

#define POWER(k) (scratch.u.fft[2 * (k)])
#define MAGNITUDE(k) (scratch.u.fft[2 * (k) + 1])

#if SER_HAS_PITCH
/* Bins k and K − k of the packed spectrum (conjugated) whose inverse, a complex FFT of K points, is the
 * autocorrelation of a real signal of 2K samples from its power spectrum pk = P(k), pkk = P(K − k):
 * Z(k) = S − sin θ·D + i cos θ·D, S, D = P(k) ± P(K − k), θ = 2πk/(2K); Z(K − k) has −cos θ and −D. */
static void inverse_bins(float pk, float pkk, int k, int K, float *zk, float *zkk) {
    const int w = k * (SER_TWIDDLE_N / (2 * K)); /* k <= K/2: θ <= π/2 */
    const float c = ser_cos_quarter[w], sn = ser_cos_quarter[SER_TWIDDLE_N / 4 - w], s = pk + pkk, d = pk - pkk;
    zk[0] = s - sn * d;
    zk[1] = -c * d;
    zkk[0] = s + sn * d;
    zkk[1] = -c * d;
}

/* The autocorrelation at lags 0..SER_YIN_HI (in steps of SER_YIN_STEP samples) from the conjugated inverse
 * FFT y of K points: lag 2j is Re y[j], lag 2j + 1 is −Im y[j], over 2K as irfft normalises it (exact YIN
 * subtracts the frame's energy from it). */
static void autocorrelation_lags(float *y, int K) {
    const float scale = 0.5f / (float)K;
    int l;
    for (l = 0; l <= SER_YIN_HI; ++l) y[l] *= l % 2 ? -scale : scale;
}
#endif

/* -- frames ------------------------------------------------------------------------------------------------- */

static float source_sample(const source_t *s, int64_t pos) {
    return s->clip != NULL ? s->clip[pos] : (float)s->ring[pos & (SER_N_FFT - 1)] * (1.0f / 32768.0f);
}

/* `pairs` pairs of samples, each times the window w = a − b·q[0], a − b·q[step] (and the scale: for int16,
 * 1/32768), into bit-reversed points from r on (returned: the next one). Small functions: few live registers. */
SER_NOINLINE int load_ring_pairs(float *z, int m, int r, const int16_t *ring, unsigned at, int pairs, const float *q,
                                 int step, float a, float b) {
    for (; pairs > 0; --pairs, q += 2 * step) {
        const float x0 = (float)ring[at], x1 = (float)ring[(at + 1) & (SER_N_FFT - 1)];
        float *out = z + 2 * r;
        at = (at + 2) & (SER_N_FFT - 1);
        out[0] = x0 * (a - b * q[0]);
        out[1] = x1 * (a - b * q[step]);
        r = bit_reverse_next(r, m);
    }
    return r;
}

SER_NOINLINE int load_clip_pairs(float *z, int m, int r, const float *x, int pairs, const float *q, int step, float a,
                                 float b) {
    for (; pairs > 0; --pairs, q += 2 * step, x += 2) {
        float *out = z + 2 * r;
        out[0] = x[0] * (a - b * q[0]);
        out[1] = x[1] * (a - b * q[step]);
        r = bit_reverse_next(r, m);
    }
    return r;
}

/* The frame's SER_N_FFT samples (windowed or not) as the m complex points (x[2j], x[2j + 1]) of an FFT in
 * bit-reversed order (points j >= SER_N_FFT/2 zeros: the frame padded to 2m samples); for a clip, its
 * zero-crossing rate (share of neighbouring samples whose signs differ, |y| <= 1e-10 counting as +0) into
 * scratch.zcr.
 * Pairs wholly inside the audio take loops without bounds checks, one per quarter of the window (whose
 * cosine runs up or down the quarter-wave table, with one sign or the other); the rest, sample by sample. */
SER_NOINLINE void load_frame(const source_t *s, float *z, int m, int windowed) {
    const int64_t from = s->lo - s->first, to = s->hi - s->first;
    const int i0 = from < 0 ? 0 : from > SER_N_FFT ? SER_N_FFT : (int)from;
    const int i1 = to < i0 ? i0 : to > SER_N_FFT ? SER_N_FFT : (int)to;
    const int full0 = (i0 + 1) & ~1, full1 = i1 & ~1; /* pairs [full0, full1) hold audio only */
    const int16_t *ring = s->ring;
    const unsigned base = (unsigned)(s->first & (SER_N_FFT - 1));
    const float scale = ring != NULL ? 1.0f / 32768.0f : 1.0f;
    int i = 0, r = 0, count = 0, previous = i0 == 0 && i1 > 0 && source_sample(s, s->first) < -1e-10f; /* sample 0's sign */
    for (; i < 2 * m; i += 2) {
        if (i == full0 && full0 < full1) {
            int quarter;
            for (quarter = i / (SER_N_FFT / 4); quarter < 4 && i < full1; ++quarter) {
                /* cos(2πi/n) = ±Q[±i + offset]: up the table in quarters 0 and 2, down in 1 and 3; negative in 1, 2 */
                const int up = quarter % 2 == 0, end = (quarter + 1) * (SER_N_FFT / 4) < full1 ? (quarter + 1) * (SER_N_FFT / 4) : full1;
                const int offset = quarter == 0 ? 0 : quarter == 1 ? SER_N_FFT / 2 : quarter == 2 ? -SER_N_FFT / 2 : SER_N_FFT;
                const float *q = ser_cos_quarter + (up ? i + offset : offset - i) * SER_COS_STRIDE;
                const int step = up ? SER_COS_STRIDE : -SER_COS_STRIDE;
                const float a = windowed ? 0.5f * scale : scale, b = windowed ? (quarter == 1 || quarter == 2 ? -0.5f : 0.5f) * scale : 0.0f;
                if (ring != NULL) {
                    r = load_ring_pairs(z, m, r, ring, (base + (unsigned)i) & (SER_N_FFT - 1), (end - i) / 2, q, step, a, b);
                } else {
                    const float *x = s->clip + (s->first + i);
                    int k;
                    for (k = 0; k < end - i; k += 2) { /* the sign changes, then the samples */
                        const int n0 = x[k] < -1e-10f, n1 = x[k + 1] < -1e-10f;
                        count += (n0 ^ previous) + (n1 ^ n0);
                        previous = n1;
                    }
                    r = load_clip_pairs(z, m, r, x, (end - i) / 2, q, step, a, b);
                }
                i = end;
            }
            if (i >= 2 * m) break;
        }
        {
            float x0 = 0.0f, x1 = 0.0f;
            if (i >= i0 && i < i1) x0 = source_sample(s, s->first + i);
            if (i + 1 >= i0 && i + 1 < i1) x1 = source_sample(s, s->first + i + 1);
            if (i < SER_N_FFT) {
                const int n0 = x0 < -1e-10f, n1 = x1 < -1e-10f;
                count += (n0 != previous) + (n1 != n0);
                previous = n1;
                if (windowed) {
                    x0 *= window_at(i);
                    x1 *= window_at(i + 1);
                }
            }
            z[2 * r] = x0;
            z[2 * r + 1] = x1;
            if (i + 2 < 2 * m) r = bit_reverse_next(r, m);
        }
    }
    if (s->clip != NULL) scratch.zcr = (float)count / (float)SER_N_FFT; /* the stream counts its own (stream_zcr) */
}

/* Power (and magnitude) spectrum of the frame into scratch.u.fft. */
#if SER_FUSED_LOAD
/* A frame that is all audio, from the ring at `base`, windowed and scaled straight into the output of the
 * FFT's first radix-4 stage (whose twiddles are all 1): points 4s..4s+3 hold pairs j0, j0 + m/2, j0 + m/4,
 * j0 + 3m/4 of the frame (j0 the bit reversal of s over log2(m/4) bits), i.e. samples 2·j0 and 2·j0 + 1 of
 * each quarter of it, whose four windows come from one cosine and one sine. Half the instructions of
 * loading pairs one by one and running that stage after. */
SER_NOINLINE void load_ring_first_stage(float *z, const int16_t *ring, unsigned base) {
    enum { QUARTER = SER_N_FFT / 4 };
    const float a = 0.5f / 32768.0f; /* the window's 0.5, and int16 to [-1, 1) */
    const float *cosine = ser_cos_quarter, *sine = ser_cos_quarter + QUARTER * SER_COS_STRIDE;
    int j0, s = 0;
    for (j0 = 0; j0 < SER_M / 4; ++j0, cosine += 2 * SER_COS_STRIDE, sine -= 2 * SER_COS_STRIDE) {
        const unsigned at = base + 2u * (unsigned)j0;
        const float c0 = a * cosine[0], c1 = a * cosine[SER_COS_STRIDE], s0 = a * sine[0], s1 = a * sine[-SER_COS_STRIDE];
#define RING_AT(offset) ((float)ring[(at + (unsigned)(offset)) & (SER_N_FFT - 1)])
        const float p0r = RING_AT(0) * (a - c0), p0i = RING_AT(1) * (a - c1);                     /* w = ½ − ½cos θ */
        const float p1r = RING_AT(QUARTER) * (a + s0), p1i = RING_AT(QUARTER + 1) * (a + s1);     /* ½ + ½sin θ */
        const float p2r = RING_AT(2 * QUARTER) * (a + c0), p2i = RING_AT(2 * QUARTER + 1) * (a + c1); /* ½ + ½cos θ */
        const float p3r = RING_AT(3 * QUARTER) * (a - s0), p3i = RING_AT(3 * QUARTER + 1) * (a - s1); /* ½ − ½sin θ */
#undef RING_AT
        const float ar = p0r + p2r, ai = p0i + p2i, br = p0r - p2r, bi = p0i - p2i;
        const float cr = p1r + p3r, ci = p1i + p3i, dr = p1r - p3r, di = p1i - p3i;
        float *o = z + 8 * s;
        o[0] = ar + cr; o[1] = ai + ci;
        o[2] = br + di; o[3] = bi - dr;
        o[4] = ar - cr; o[5] = ai - ci;
        o[6] = br - di; o[7] = bi + dr;
        s = bit_reverse_next(s, SER_M / 4);
    }
}
#endif

static void frame_spectrum(const source_t *s) {
#if SER_FUSED_LOAD
    if (s->ring != NULL && s->lo <= s->first && s->hi >= s->first + SER_N_FFT) { /* all audio: most frames */
        load_ring_first_stage(scratch.u.fft, s->ring, (unsigned)(s->first & (SER_N_FFT - 1)));
        fft(scratch.u.fft, SER_M, SER_M, 4);
        power_spectrum(scratch.u.fft);
        return;
    }
#endif
    load_frame(s, scratch.u.fft, SER_M, 1);
    fft(scratch.u.fft, SER_M, SER_M, 1);
    power_spectrum(scratch.u.fft);
}

/* Σ input(k)·w over a filter's span of bins; input is the power or magnitude column (stride 2). */
SER_HELPER float span_sum(const float *input, const float *w, int length) {
    float acc = 0.0f;
    for (; length >= 4; length -= 4, input += 8, w += 4) acc += input[0] * w[0] + input[2] * w[1] + input[4] * w[2] + input[6] * w[3];
    for (; length > 0; --length, input += 2, ++w) acc += input[0] * w[0];
    return acc;
}

#if SER_NEEDS_MEL
/* The same with 16-bit weights (the filter's scale applied after). */
static float span_sum16(const float *input, const uint16_t *w, int length) {
    float acc = 0.0f;
    for (; length >= 4; length -= 4, input += 8, w += 4)
        acc += input[0] * (float)w[0] + input[2] * (float)w[1] + input[4] * (float)w[2] + input[6] * (float)w[3];
    for (; length > 0; --length, input += 2, ++w) acc += input[0] * (float)w[0];
    return acc;
}

static void mel_power(void) {
    const uint16_t *w = ser_mel_weights;
    int b;
    for (b = 0; b < SER_N_MELS; ++b) {
        scratch.mel[b] = span_sum16(&POWER(ser_mel_start[b]), w, ser_mel_length[b]) * ser_mel_scale[b];
        w += ser_mel_length[b];
    }
}
#endif

/* librosa's power_to_db: 10·log10(max(p, 1e-10)). */
SER_HELPER float power_to_db(float p) { return 3.01029996f * log2_positive(p > SER_AMIN ? p : SER_AMIN); }

SER_HELPER float floored_db(float p, float floor) {
    const float db = power_to_db(p);
    return db > floor ? db : floor;
}

#if SER_HAS_SPECTRAL
/* Mean square of the windowed frame from its power spectrum (Parseval). */
static float mean_square(void) {
    return (2.0f * scratch.sums.power - POWER(0) - POWER(SER_BINS - 1)) / ((float)SER_N_FFT * (float)SER_N_FFT);
}

/* Means of the smallest and of the largest ser_contrast_count[b] magnitudes of sub-band b (an
 * insertion-sorted window of each: a partial sort, count is small; most bins pass both thresholds). The
 * magnitudes are compared as the integers their bits are: the same order for floats >= 0, and cheaper. */
SER_NOINLINE void contrast_band(int b, float *peak, float *valley) {
    const int count = ser_contrast_count[b], start = ser_contrast_start[b], stop = ser_contrast_stop[b];
    uint32_t *low = scratch.low, *high = scratch.high, low_top, high_bottom;
    float sum_low = 0.0f, sum_high = 0.0f;
    int k, i;
    for (k = start; k < start + count; ++k) { /* the first count bins start both windows */
        uint32_t m;
        memcpy(&m, &MAGNITUDE(k), sizeof m);
        for (i = k - start; i > 0 && low[i - 1] > m; --i) low[i] = low[i - 1];
        low[i] = m;
        for (i = k - start; i > 0 && high[i - 1] < m; --i) high[i] = high[i - 1];
        high[i] = m;
    }
    low_top = low[count - 1];
    high_bottom = high[count - 1];
    for (; k < stop; ++k) {
        uint32_t m;
        memcpy(&m, &MAGNITUDE(k), sizeof m);
        if (m < low_top) { /* low: ascending */
            for (i = count - 1; i > 0 && low[i - 1] > m; --i) low[i] = low[i - 1];
            low[i] = m;
            low_top = low[count - 1];
        }
        if (m > high_bottom) { /* high: descending */
            for (i = count - 1; i > 0 && high[i - 1] < m; --i) high[i] = high[i - 1];
            high[i] = m;
            high_bottom = high[count - 1];
        }
    }
    for (i = 0; i < count; ++i) {
        float l, h;
        memcpy(&l, &low[i], sizeof l);
        memcpy(&h, &high[i], sizeof h);
        sum_low += l;
        sum_high += h;
    }
    *valley = sum_low / (float)count;
    *peak = sum_high / (float)count;
}

/* Loudness, zero-crossing rate, centroid, bandwidth, roll-off, flatness, contrast per sub-band into out, from
 * the sums power_spectrum gathered: bandwidth² = Σm·f²/Σm − centroid²; the roll-off bin is where the running
 * Σm first reaches its share; Σ log p = log(mantissa) + exponent·log 2. */
static void spectral(const floors_t *floors, float *out) {
    const float hz = (float)SER_SAMPLE_RATE / (float)SER_N_FFT, total = scratch.sums.magnitude;
    const float weight = total > FLT_MIN ? 1.0f / total : 1.0f, centroid = scratch.sums.moment * weight; /* in bins */
    const float spread = scratch.sums.second * weight - centroid * centroid, target = SER_ROLL_PERCENT * total;
    long exponent = scratch.sums.exponent;
    const float mantissa = split_exponent(scratch.sums.product, &exponent);
    const float mean_log2 = ((float)exponent + log2_positive(mantissa)) / (float)SER_BINS; /* of the floored power */
    float cumulative = 0.0f;
    int k, at = 0;
    for (k = 0; k < SER_BINS - 1; ++k) { /* roll-off: the bins whose running sum is below the share */
        cumulative += MAGNITUDE(k);
        if (!(cumulative < target)) break;
    }
    out[at++] = floored_db(mean_square(), floors->loudness);
    out[at++] = scratch.zcr;
    out[at++] = centroid * hz;
    out[at++] = sqrtf(spread > 0.0f ? spread : 0.0f) * hz;
    out[at++] = (float)k * hz;
    out[at++] = expf(mean_log2 * 0.693147181f) / (scratch.sums.floored / (float)SER_BINS);
    for (k = 0; k < SER_CONTRAST_BANDS; ++k) {
        float peak, valley;
        contrast_band(k, &peak, &valley);
        out[at++] = floored_db(peak, floors->peak) - floored_db(valley, floors->peak);
    }
}
#endif

#if SER_HAS_PITCH
/* YIN (ser.data.descriptors) on the autocorrelation a[0..SER_YIN_HI] (lags in steps of SER_YIN_STEP),
 * overwritten; the unwindowed frame's energy term from the source (exact YIN only). */
static void yin(float *a, const source_t *src) {
    float *q = a + SER_YIN_LO, best, period, shift = 0.0f, periodicity;
    const int len = SER_YIN_HI - SER_YIN_LO + 1;
    float total = 0.0f;
    int k, index = -1, argmin = 0, inner;
#if SER_YIN_EXACT
    float energy = 0.0f;
    const int64_t lo = src->lo - src->first;
#else
    (void)src;
#endif
    if (a[0] > FLT_MIN) {
        const float acf0 = a[0];
        for (k = 1; k <= SER_YIN_HI; ++k) { /* d(k), normalised by its running mean */
            float d = 2.0f * (acf0 - a[k]), mean;
#if SER_YIN_EXACT /* − Σ_{m<k} y[m]² of the unwindowed frame */
            if (k - 1 >= lo && src->first + k - 1 < src->hi) {
                const float y = source_sample(src, src->first + k - 1);
                energy += y * y;
            }
            d -= energy;
#endif
            total += d;
            mean = total / (float)k;
            if (k >= SER_YIN_LO) a[k] = d / (mean + FLT_MIN);
        }
    } else {
        for (k = SER_YIN_LO; k <= SER_YIN_HI; ++k) a[k] = 1.0f; /* silence: no dip */
    }
    best = q[0];
    for (k = 0; k < len; ++k) {
        const int trough = k == 0 ? q[0] < q[1] : k == len - 1 ? q[k] < q[k - 1] : (q[k] < q[k - 1] && q[k] <= q[k + 1]);
        if (index < 0 && trough && q[k] < SER_YIN_THRESHOLD) index = k;
        if (q[k] < best) { best = q[k]; argmin = k; }
    }
    if (index < 0) index = argmin;
    inner = index < 1 ? 1 : index > len - 2 ? len - 2 : index;
    if (inner == index) { /* parabola through the neighbours */
        const float a2 = q[index + 1] + q[index - 1] - 2.0f * q[index], b = 0.5f * (q[index + 1] - q[index - 1]);
        if (fabsf(b) < fabsf(a2)) shift = -b / a2;
    }
    period = (float)SER_YIN_STEP * ((float)(SER_YIN_LO + index) + shift);
    periodicity = 1.0f - best;
    periodicity = periodicity < 0.0f ? 0.0f : periodicity > 1.0f ? 1.0f : periodicity;
    scratch.pitch[0] = logf((float)SER_SAMPLE_RATE / period);
    scratch.pitch[1] = periodicity;
    scratch.pitch[2] = periodicity > SER_VOICED_ABOVE ? 1.0f : 0.0f;
}

#if SER_YIN_STFT
/* Pitch from the power spectrum in scratch.u.fft (bins 0..SER_YIN_K, read before anything above them is
 * written): the inverse FFT of K points behind bin K, then YIN. */
static void pitch(const source_t *src) {
    float *z = scratch.u.fft + 2 * SER_YIN_K + 2;
    int k, r = 0, before = 0; /* r: the bit reversal of k; before: of k − 1 */
    z[0] = POWER(0) + POWER(SER_YIN_K); /* Z(0) */
    z[1] = -(POWER(0) - POWER(SER_YIN_K));
    for (k = 1; 2 * k <= SER_YIN_K; ++k) { /* Z(k), Z(K − k) from one twiddle, into bit-reversed order */
        float zk[2], zkk[2];
        const int far = SER_YIN_K - 1 - before; /* K − k = ~(k − 1): its reversal is ~rev(k − 1) */
        r = bit_reverse_next(before, SER_YIN_K);
        inverse_bins(POWER(k), POWER(SER_YIN_K - k), k, SER_YIN_K, zk, zkk);
        z[2 * r] = zk[0];
        z[2 * r + 1] = zk[1];
        z[2 * far] = zkk[0];
        z[2 * far + 1] = zkk[1];
        before = r;
    }
    fft(z, SER_YIN_K, SER_YIN_HI / 2 + 1, 1);
    autocorrelation_lags(z, SER_YIN_K);
    yin(z, src);
}
#else
/* Exact YIN (librosa): the autocorrelation of the unwindowed frame, irfft(|rfft(frame, 2n)|², 2n), in
 * scratch.u.fft (2·SER_N_FFT floats) before the frame's own spectrum: a real FFT of the zero-padded frame
 * (a complex FFT of n points), the inverse's packed spectrum built pair by pair in place, put in bit-reversed
 * order, and the inverse as a forward FFT that skips the butterflies feeding no lag above SER_YIN_HI. */
static void pitch(const source_t *src) {
    const int m = SER_N_FFT;
    float *z = scratch.u.fft;
    int k, r;
    load_frame(src, z, m, 0);
    fft(z, m, m, 1);
    for (k = 1; 2 * k <= m; ++k) {
        float x[4], zk[2], zkk[2];
        real_pair(z, m, k, x);
        inverse_bins(x[0] * x[0] + x[1] * x[1], x[2] * x[2] + x[3] * x[3], k, m, zk, zkk);
        z[2 * k] = zk[0]; z[2 * k + 1] = zk[1];
        z[2 * (m - k)] = zkk[0]; z[2 * (m - k) + 1] = zkk[1];
    }
    {
        const float p0 = (z[0] + z[1]) * (z[0] + z[1]), pm = (z[0] - z[1]) * (z[0] - z[1]);
        z[0] = p0 + pm;
        z[1] = -(p0 - pm);
    }
    for (k = 0, r = 0; k < m; ++k) { /* into bit-reversed order */
        if (k < r) {
            const float tr = z[2 * k], ti = z[2 * k + 1];
            z[2 * k] = z[2 * r]; z[2 * k + 1] = z[2 * r + 1];
            z[2 * r] = tr; z[2 * r + 1] = ti;
        }
        if (k + 1 < m) r = bit_reverse_next(r, m);
    }
    fft(z, m, SER_YIN_HI / 2 + 1, 1);
    autocorrelation_lags(z, m);
    yin(z, src);
}
#endif
#endif

#if SER_HAS_MFCC
#if SER_DCT_FFT
/* The orthonormal DCT-II of the dB mel bands by Makhoul's FFT: v = (x0, x2, …, x_{N−2}, x_{N−1}, …, x3, x1),
 * V its real FFT (a complex FFT of N/2 points, then the split, in place: V_0 and V_{N/2} share point 0),
 * X_k = Re(e^{−iπk/(2N)}·V_k), V_k = conj(V_{N−k}) past N/2. */
static void mfcc(float *out) {
    enum { N = SER_N_MELS, M = SER_N_MELS / 2 };
    float *z = scratch.half, v0, vm;
    int j, r = 0, k;
    for (j = 0; j < M; ++j) { /* v[2j], v[2j + 1] into bit-reversed order */
        z[2 * r] = 2 * j < M ? scratch.db[4 * j] : scratch.db[2 * N - 1 - 4 * j];
        z[2 * r + 1] = 2 * j + 1 < M ? scratch.db[4 * j + 2] : scratch.db[2 * N - 3 - 4 * j];
        if (j + 1 < M) r = bit_reverse_next(r, M);
    }
    fft(z, M, M, 1);
    v0 = z[0] + z[1];
    vm = z[0] - z[1];
    for (k = 1; 2 * k <= M; ++k) {
        float x[4];
        real_pair(z, M, k, x);
        z[2 * k] = x[0]; z[2 * k + 1] = x[1];
        z[2 * (M - k)] = x[2]; z[2 * (M - k) + 1] = x[3];
    }
    out[0] = v0 * ser_dct0;
    for (k = 1; k < SER_N_MFCC; ++k) {
        const int w = k * (SER_TWIDDLE_N / (4 * N)); /* θ = πk/(2N) < π/2 */
        const float re = k < M ? z[2 * k] : k == M ? vm : z[2 * (N - k)];
        const float im = k < M ? z[2 * k + 1] : k == M ? 0.0f : -z[2 * (N - k) + 1];
        out[k] = (re * ser_cos_quarter[w] + im * ser_cos_quarter[SER_TWIDDLE_N / 4 - w]) * ser_dct_scale;
    }
}
#else
/* The orthonormal DCT-II of the dB mel bands, from their even and odd halves e[i] = db[i] + db[N−1−i],
 * o[i] = db[i] − db[N−1−i] (coefficient k reads e for k even, o for k odd: half the products), the cosines
 * cos(πk(2i+1)/(2N))·√(2/N) read from the table of their 4N distinct values. */
static void mfcc(float *out) {
    enum { N = SER_N_MELS, HALF = (SER_N_MELS + 1) / 2 };
    float *e = scratch.half, *o = scratch.half + HALF, total = 0.0f;
    int i, k;
    for (i = 0; i < N / 2; ++i) {
        e[i] = scratch.db[i] + scratch.db[N - 1 - i];
        o[i] = scratch.db[i] - scratch.db[N - 1 - i];
    }
    if (N % 2) { e[N / 2] = scratch.db[N / 2]; o[N / 2] = 0.0f; }
    for (i = 0; i < HALF; ++i) total += e[i];
    out[0] = total * ser_dct0;
    for (k = 1; k < SER_N_MFCC; ++k) {
        const float *x = k % 2 ? o : e;
        float acc = 0.0f;
        int index = k;
        for (i = 0; i < HALF; ++i) {
            acc += x[i] * ser_dct_table[index];
            index += 2 * k;
            if (index >= 4 * N) index -= 4 * N;
        }
        out[k] = acc;
    }
}
#endif
#endif

#if SER_HAS_CHROMA
/* Chroma: per class, its spans of FFT bins (ser_chroma_class/start/length, weights in span order), from the
 * power (chroma_power 2), the magnitude (1) or power^(chroma_power/2); then scaled to a peak of 1. */
static void chroma(float *out) {
    const float *w = ser_chroma_weights;
    float peak = 0.0f;
    int s, i;
    for (i = 0; i < SER_N_CHROMA; ++i) out[i] = 0.0f;
    for (s = 0; s < SER_CHROMA_SPANS; ++s) {
        const int start = ser_chroma_start[s], length = ser_chroma_length[s];
#if SER_CHROMA_POWER_IS_2
        out[ser_chroma_class[s]] += span_sum(&POWER(start), w, length);
#elif SER_CHROMA_POWER_IS_1
        out[ser_chroma_class[s]] += span_sum(&MAGNITUDE(start), w, length);
#else
        for (i = 0; i < length; ++i) out[ser_chroma_class[s]] += powf(POWER(start + i), SER_CHROMA_POWER / 2.0f) * w[i];
#endif
        w += length;
    }
    for (i = 0; i < SER_N_CHROMA; ++i) peak = out[i] > peak ? out[i] : peak;
    if (peak < FLT_MIN) peak = 1.0f;
    for (i = 0; i < SER_N_CHROMA; ++i) out[i] /= peak;
}
#endif

/* The frame's features in part order into scratch.frame. */
static void frame_features(const source_t *src, const floors_t *floors) {
    int part, i = 0, at = 0;
#if SER_HAS_PITCH
    int pitch_at = 0;
#endif
#if SER_YIN_EXACT
    pitch(src); /* uses the FFT buffer before the frame's spectrum */
#endif
    frame_spectrum(src);
#if SER_NEEDS_MEL
    mel_power();
#endif
#if SER_NEEDS_DB
    for (i = 0; i < SER_N_MELS; ++i) scratch.db[i] = floored_db(scratch.mel[i], floors->mel);
#endif
    for (part = 0; part < SER_N_PARTS; ++part) {
        switch (ser_parts[part]) {
#if SER_HAS_MFCC
        case PART_MFCC:
            mfcc(scratch.frame + at);
            at += SER_N_MFCC;
            break;
#endif
#if SER_HAS_CHROMA
        case PART_CHROMA:
            chroma(scratch.frame + at);
            at += SER_N_CHROMA;
            break;
#endif
#if SER_HAS_MEL
        case PART_MEL:
            for (i = 0; i < SER_N_MELS; ++i) scratch.frame[at++] = SER_MEL_DB ? scratch.db[i] : scratch.mel[i];
            break;
#endif
#if SER_HAS_PITCH
        case PART_PITCH:
            pitch_at = at;
            at += 3;
            break;
#endif
#if SER_HAS_SPECTRAL
        case PART_SPECTRAL:
            spectral(floors, scratch.frame + at);
            at += 6 + SER_CONTRAST_BANDS;
            break;
#endif
        default:
            break;
        }
    }
#if SER_YIN_STFT && SER_HAS_PITCH
    pitch(src); /* last: its inverse FFT overwrites the spectrum above its band */
#endif
#if SER_HAS_PITCH
    for (i = 0; i < 3; ++i) scratch.frame[pitch_at + i] = scratch.pitch[i];
#endif
#if !SER_NEEDS_DB && !SER_HAS_SPECTRAL
    (void)floors;
#endif
    (void)at;
    (void)i;
}

/* -- pooling ------------------------------------------------------------------------------------------------ */

static void pool_reset(pool_t *p) {
    int d;
    p->frames = p->voiced = 0;
    for (d = 0; d < SER_FRAME_DIM; ++d) {
        p->mean[d] = 0.0f;
#if SER_HAS_STD
        p->m2[d] = 0.0f;
#endif
    }
}

/* Adds scratch.frame (Welford: mean and squared deviations, stable in float). */
static void pool_add(pool_t *p) {
    const float inv = 1.0f / (float)++p->frames;
    int d;
    for (d = 0; d < SER_FRAME_DIM; ++d) {
        const float x = scratch.frame[d], delta = x - p->mean[d];
#if SER_HAS_PITCH
        if (d == SER_LOG_F0_CHANNEL) continue;
#endif
        p->mean[d] += delta * inv;
#if SER_HAS_STD
        p->m2[d] += delta * (x - p->mean[d]);
#endif
    }
#if SER_HAS_PITCH
    if (scratch.pitch[2] != 0.0f) { /* log F0: voiced frames only */
        const float x = scratch.frame[SER_LOG_F0_CHANNEL], delta = x - p->mean[SER_LOG_F0_CHANNEL];
        p->mean[SER_LOG_F0_CHANNEL] += delta / (float)++p->voiced;
#if SER_HAS_STD
        p->m2[SER_LOG_F0_CHANNEL] += delta * (x - p->mean[SER_LOG_F0_CHANNEL]);
#endif
    }
#endif
}

/* The pooled vector (statistics in ser_stats order) of the frames in p. */
static void pool_result(const pool_t *p, float *features) {
    int s, d, at = 0;
    for (s = 0; s < SER_N_STATS; ++s) {
        for (d = 0; d < SER_FRAME_DIM; ++d) {
            if (ser_stats[s] == STAT_MEAN) {
                features[at++] = p->mean[d];
            } else {
#if SER_HAS_STD
                int count = p->frames;
#if SER_HAS_PITCH
                if (d == SER_LOG_F0_CHANNEL) count = p->voiced;
#endif
                features[at++] = count > 0 ? sqrtf(p->m2[d] / (float)count) : 0.0f;
#endif
            }
        }
    }
}

/* -- the network -------------------------------------------------------------------------------------------- */

#if SER_FEATURE_STATS16 || SER_POPULATION_STATS16
/* A 16-bit file's statistics (ser/dsp/storage.py): the deviation as bfloat16, the mean as float16 in units of
 * it; their product is exact in float32, as the numpy runtime decodes them. */
static float from_bfloat16(uint16_t bits) {
    const uint32_t b = (uint32_t)bits << 16;
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

static float from_float16(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
    float x;
    if (exponent == 0) { /* zero or subnormal: mantissa · 2^-24 */
        x = (float)mantissa * 5.96046448e-8f;
        return sign ? -x : x;
    } else {
        const uint32_t b = sign | ((exponent + 112u) << 23) | (mantissa << 13);
        memcpy(&x, &b, sizeof x);
        return x;
    }
}

static float stat_mean(const uint16_t *ratio, const uint16_t *std, int d) { return from_float16(ratio[d]) * from_bfloat16(std[d]); }
#endif
#if SER_FEATURE_STATS16
#define FEATURE_MEAN(d) stat_mean(ser_feature_mean, ser_feature_std, d)
#define FEATURE_STD(d) from_bfloat16(ser_feature_std[d])
#else
#define FEATURE_MEAN(d) ser_feature_mean[d]
#define FEATURE_STD(d) ser_feature_std[d]
#endif
#if SER_POPULATION_STATS16
#define POPULATION_MEAN(d) stat_mean(ser_population_mean, ser_population_std, d)
#define POPULATION_STD(d) from_bfloat16(ser_population_std[d])
#else
#define POPULATION_MEAN(d) ser_population_mean[d]
#define POPULATION_STD(d) ser_population_std[d]
#endif

/* Σ code_i·x_i over a row of n codes of B bits (B a constant in each caller), packed LSB first from p: 8 codes
 * (B bytes) at a time, written out so that every code is one shift-and-mask, then the rest. */
SER_ALWAYS_INLINE float dot_codes(const unsigned char *p, const float *x, int n, const int B) {
    const unsigned mask = (1u << B) - 1u;
    float sum = 0.0f;
    int i = 0, k;
    for (; i + 8 <= n; i += 8, p += B, x += 8) {
        if (B == 1) {
            const unsigned v = p[0];
            if (v & 1u) sum += x[0];
            if (v & 2u) sum += x[1];
            if (v & 4u) sum += x[2];
            if (v & 8u) sum += x[3];
            if (v & 16u) sum += x[4];
            if (v & 32u) sum += x[5];
            if (v & 64u) sum += x[6];
            if (v & 128u) sum += x[7];
        } else {
            uint32_t lo = 0, hi = 0; /* codes 0..3 in lo, 4..7 in hi (4·B <= 32 bits each) */
            for (k = 0; k < B; ++k) {
                const uint32_t byte = p[k];
                if (8 * k < 4 * B) lo |= byte << (8 * k);
                else hi |= byte << (8 * k - 4 * B);
                if (8 * k + 8 > 4 * B && 8 * k < 4 * B) hi |= byte >> (4 * B - 8 * k);
            }
            sum += (float)(lo & mask) * x[0] + (float)((lo >> B) & mask) * x[1] + (float)((lo >> (2 * B)) & mask) * x[2] +
                   (float)((lo >> (3 * B)) & mask) * x[3];
            sum += (float)(hi & mask) * x[4] + (float)((hi >> B) & mask) * x[5] + (float)((hi >> (2 * B)) & mask) * x[6] +
                   (float)((hi >> (3 * B)) & mask) * x[7];
        }
    }
    {
        const int tail_bytes = ((n - i) * B + 7) / 8;
        for (k = 0; i < n; ++i, ++x, k += B) { /* the last n % 8 codes, code j from bit k = j·B on */
            const unsigned code = ((unsigned)p[k / 8] | (unsigned)(k / 8 + 1 < tail_bytes ? p[k / 8 + 1] : 0) << 8) >> (k % 8);
            sum += (float)(code & mask) * x[0];
        }
    }
    return sum;
}

/* One specialisation per bit width the model's layers use (SER_BITS_USED: bit b−1 for b bits). */
static float dot(const unsigned char *p, const float *x, int n, int bits) {
    switch (bits) {
#if SER_BITS_USED & 1
    case 1: return dot_codes(p, x, n, 1);
#endif
#if SER_BITS_USED & 2
    case 2: return dot_codes(p, x, n, 2);
#endif
#if SER_BITS_USED & 4
    case 3: return dot_codes(p, x, n, 3);
#endif
#if SER_BITS_USED & 8
    case 4: return dot_codes(p, x, n, 4);
#endif
#if SER_BITS_USED & 16
    case 5: return dot_codes(p, x, n, 5);
#endif
#if SER_BITS_USED & 32
    case 6: return dot_codes(p, x, n, 6);
#endif
#if SER_BITS_USED & 64
    case 7: return dot_codes(p, x, n, 7);
#endif
#if SER_BITS_USED & 128
    case 8: return dot_codes(p, x, n, 8);
#endif
    default: return 0.0f; /* no layer has other widths */
    }
}

/* One layer: out = act(levels(codes) · scale · in + bias); each row's codes start on a byte. With
 * level = a·code + c: Σ level·x = a·Σ code·x + c·Σ x. */
static void dense(const ser_layer_t *layer, const float *in, float *out) {
    const int row_bytes = (layer->in * layer->bits + 7) / 8;
    /* symmetric 1 bit ±1; symmetric b bits code − (2^(b−1) − 1); full code − (2^b − 1)/2 (ser/dsp/grid.py) */
    float a = 1.0f, c, sum_in = 0.0f;
    int o, i;
    if (layer->grid == GRID_FULL) c = -0.5f * (float)((1 << layer->bits) - 1);
    else if (layer->bits == 1) { a = 2.0f; c = -1.0f; }
    else c = -(float)((1 << (layer->bits - 1)) - 1);
    for (i = 0; i < layer->in; ++i) sum_in += in[i];
    for (o = 0; o < layer->out; ++o) {
        const float sum = dot(layer->codes + (size_t)o * row_bytes, in, layer->in, layer->bits);
        float y = (a * sum + c * sum_in) * layer->scales[layer->n_scales == 1 ? 0 : o];
        if (layer->bias != NULL) y += layer->bias[o];
        out[o] = (layer->relu && y < 0.0f) ? 0.0f : y;
    }
}

/* Softmax of the last layer's output x into probabilities; the most probable class. */
static int network(float *x, float *probabilities) {
    float *y = scratch.u.act[x == scratch.u.act[0] ? 1 : 0], peak, total = 0.0f;
    int l, k, best = 0;
    for (l = 0; l < SER_N_LAYERS; ++l) {
        float *t;
        dense(&ser_layers[l], x, y);
        t = x; x = y; y = t;
    }
    peak = x[0];
    for (k = 1; k < SER_N_CLASSES; ++k) peak = x[k] > peak ? x[k] : peak;
    for (k = 0; k < SER_N_CLASSES; ++k) total += (probabilities[k] = expf(x[k] - peak));
    for (k = 0; k < SER_N_CLASSES; ++k) {
        probabilities[k] /= total;
        best = probabilities[k] > probabilities[best] ? k : best;
    }
    return best;
}

int ser_classify(const float *features, const float *speaker_mean, const float *speaker_std, float *probabilities) {
    float *x = scratch.u.act[0];
    int d;
    if (features == NULL || probabilities == NULL || ((speaker_mean == NULL) != (speaker_std == NULL))) return SER_EINVAL;
    for (d = 0; d < SER_FEATURE_DIM; ++d) {
        float v = features[d];
#if SER_SPEAKER
        v = speaker_mean != NULL ? (v - speaker_mean[d]) / speaker_std[d]
                                 : (v - POPULATION_MEAN(d)) / POPULATION_STD(d);
#endif
        x[d] = (v - FEATURE_MEAN(d)) / FEATURE_STD(d);
    }
#if !SER_SPEAKER
    (void)speaker_mean;
    (void)speaker_std;
#endif
    network(x, probabilities);
    return SER_OK;
}

/* -- clips -------------------------------------------------------------------------------------------------- */

static int n_frames(int n) { return n / SER_HOP + 1; }

int ser_features(const float *pcm, int n, float *features) {
    source_t src = {NULL, NULL, 0, 0, 0};
    floors_t floors = {-(float)SER_TOP_DB, -(float)SER_TOP_DB, -(float)SER_TOP_DB};
    int t;
    if ((pcm == NULL && n > 0) || n < 0 || features == NULL) return SER_EINVAL;
    src.clip = pcm;
    src.hi = n;
#if SER_TWO_PASS
    { /* pass 1: the clip's largest mel power (mean square, contrast peak) set the dB floors */
        float mel = 0.0f, loudness = 0.0f, peak = 0.0f;
        int b;
        for (t = 0; t < n_frames(n); ++t) {
            src.first = (int64_t)t * SER_HOP - SER_N_FFT / 2;
            frame_spectrum(&src);
#if SER_NEEDS_DB
            mel_power();
            for (b = 0; b < SER_N_MELS; ++b) mel = scratch.mel[b] > mel ? scratch.mel[b] : mel;
#endif
#if SER_HAS_SPECTRAL
            {
                float ms = mean_square(), pk, vl;
                loudness = ms > loudness ? ms : loudness;
                for (b = 0; b < SER_CONTRAST_BANDS; ++b) {
                    contrast_band(b, &pk, &vl);
                    peak = pk > peak ? pk : peak;
                }
            }
#endif
        }
        floors.mel = power_to_db(mel) - (float)SER_TOP_DB;
        floors.loudness = power_to_db(loudness) - (float)SER_TOP_DB;
        floors.peak = power_to_db(peak) - (float)SER_TOP_DB;
        (void)b;
    }
#endif
    pool_reset(&scratch.clip_pool);
    for (t = 0; t < n_frames(n); ++t) {
        src.first = (int64_t)t * SER_HOP - SER_N_FFT / 2;
        frame_features(&src, &floors);
        pool_add(&scratch.clip_pool);
    }
    pool_result(&scratch.clip_pool, features);
    return SER_OK;
}

int ser_predict_speaker(const float *pcm, int n, const float *speaker_mean, const float *speaker_std,
                        float *probabilities) {
    static float features[SER_FEATURE_DIM];
    int rc = ser_features(pcm, n, features);
    return rc != SER_OK ? rc : ser_classify(features, speaker_mean, speaker_std, probabilities);
}

int ser_predict(const float *pcm, int n, float *probabilities) {
    return ser_predict_speaker(pcm, n, NULL, NULL, probabilities);
}

/* -- streaming ---------------------------------------------------------------------------------------------- */

#if SER_STREAMING
typedef char ser_window_hop_is_whole_frames[(SER_WINDOW_HOP % SER_HOP == 0 && SER_WINDOW_HOP > 0 && SER_WINDOW > 0) ? 1 : -1];

#define SER_MAX_OPEN ((SER_WINDOW + SER_WINDOW_HOP - 1) / SER_WINDOW_HOP)
#define SER_LAST_FRAME (SER_WINDOW / SER_HOP) /* frames 0..SER_LAST_FRAME of a window */
#define SER_LEFT_EDGES ((SER_N_FFT / 2 + SER_HOP - 1) / SER_HOP) /* frames reaching before a window's start */
/* the first frame reaching past a window's end */
#define SER_RIGHT_EDGE (SER_WINDOW >= SER_N_FFT / 2 ? (SER_WINDOW - SER_N_FFT / 2) / SER_HOP + 1 : 0)
#define SER_NEVER INT64_MAX

/* The stream's sign changes up to just before a position: their count, and whether the sample before is negative. */
typedef struct { uint32_t changes; int negative; } changes_t;

typedef struct {
    int64_t start, first_frame; /* its first sample, and its first frame (start / SER_HOP) */
    int edge; /* the next of its frames cut by an edge of the window */
    changes_t before; /* the sign changes before its start */
    pool_t pool;
} window_t;

/* SER_RECORDS (ser_model.h): frame starts passed whose frames may still be computed, SER_N_FFT / SER_HOP + 2 at
 * most, rounded up to a power of two so that a frame's slot is its index's low bits however long the stream runs. */

static struct {
    int live;
    ser_decision_fn on_decision;
    void *user;
    int64_t seen;       /* samples pushed */
    int64_t next_frame; /* the next frame of the stream: centred on next_frame·SER_HOP */
    int64_t next_start, next_start_frame; /* start of the next window, and its first frame */
    int oldest, open;   /* the open windows: window[(oldest + i) % SER_MAX_OPEN], i < open */
    window_t window[SER_MAX_OPEN];
    int decided;
    int16_t ring[SER_N_FFT]; /* the last SER_N_FFT samples: sample p at ring[p % SER_N_FFT] */
    /* Zero crossings without reading frames again: the count of sign changes between neighbouring samples so far
     * (the stream starts after a zero), the last sample, and the count before each frame's first sample. */
    uint32_t changes;
    int last;
    int64_t next_record; /* frame index of the next frame start to record */
    changes_t record[SER_RECORDS];
#if SER_SPEAKER
    const float *fixed_mean, *fixed_std;
    int updates;             /* windows in the running estimate */
    int64_t last_update;     /* start of the last of them */
    float mean[SER_FEATURE_DIM], m2[SER_FEATURE_DIM]; /* Welford over those windows' pooled vectors */
    float peak[SER_N_BLOCKS]; /* largest |value| per feature block: the std floor */
#endif
} stream;

unsigned long ser_state_bytes(void) { return (unsigned long)(sizeof scratch + sizeof stream); }

static window_t *open_window(int i) { return &stream.window[(stream.oldest + i) % SER_MAX_OPEN]; }

/* Window w's frame t cut by one of its edges (zeros outside the window instead of the stream's audio):
 * the first SER_LEFT_EDGES (not in the first window, where the stream starts with zeros too) and those from
 * SER_RIGHT_EDGE on. Moves w->edge to the next such frame; its due position (when its last sample is
 * in), or SER_NEVER when none is left. */
static int64_t edge_due(window_t *w) {
    int64_t centre, due;
    if ((w->start == 0 || w->edge >= SER_LEFT_EDGES) && w->edge < SER_RIGHT_EDGE) w->edge = SER_RIGHT_EDGE;
    if (w->edge > SER_LAST_FRAME) return SER_NEVER;
    centre = w->start + (int64_t)w->edge * SER_HOP;
    due = centre + SER_N_FFT / 2;
    return due < w->start + SER_WINDOW ? due : w->start + SER_WINDOW;
}

/* Sign changes before stream position p: the window's start, or frame j's (recorded when the stream got there). */
static changes_t changes_before(int64_t p, const window_t *w, int64_t j) {
    static const changes_t none = {0, 0};
    if (p <= 0) return none;
    if (w != NULL && p == w->start) return w->before;
    return stream.record[(uint32_t)j & (SER_RECORDS - 1)];
}

/* The zero-crossing rate of the frame from `first` whose audio is [lo, now): the sign changes inside the audio
 * (counted as the samples came), and those against the frame's zeros before and after it. */
static float stream_zcr(int64_t first, int64_t lo, changes_t before) {
    const int64_t now = stream.seen;
    uint32_t count;
    int negative;
    if (lo >= now) return 0.0f;
    negative = stream.ring[lo & (SER_N_FFT - 1)] < 0;
    count = stream.changes - (before.changes + (uint32_t)(negative != before.negative)); /* changes in (lo, now) */
    if (lo > first) count += (uint32_t)negative;
    if (now < first + SER_N_FFT) count += (uint32_t)(stream.last < 0);
    return (float)count / (float)SER_N_FFT;
}

/* The features of frame j (centred on j·SER_HOP) whose audio is [lo, now) of the stream (zeros around it);
 * w: the window whose start lo may be. */
static void stream_frame(int64_t j, int64_t lo, const window_t *w) {
    const int64_t centre = j * SER_HOP;
    static const floors_t floors = {-(float)SER_TOP_DB, -(float)SER_TOP_DB, -(float)SER_TOP_DB};
    source_t src = {NULL, NULL, 0, 0, 0};
    src.ring = stream.ring;
    src.first = centre - SER_N_FFT / 2;
    src.lo = lo > 0 ? lo : 0;
    src.hi = stream.seen;
    scratch.zcr = stream_zcr(src.first, src.lo, changes_before(src.lo, w, j));
    frame_features(&src, &floors);
}

#if SER_SPEAKER
/* The running estimate (ser.dsp.speaker_norm: prior_weight recordings' worth of the population mixed in)
 * at feature d: mean and standard deviation, floored per block. */
static void speaker_estimate(int d, int block, float *mean, float *std) {
    const float w = (float)SER_PRIOR_WEIGHT, n = (float)stream.updates;
    const float mu0 = w > 0.0f ? POPULATION_MEAN(d) : 0.0f, sd0 = w > 0.0f ? POPULATION_STD(d) : 0.0f;
    float m, spread, var, s;
    if (stream.updates == 0 || (w <= 0.0f && stream.updates < 2)) {
        *mean = POPULATION_MEAN(d);
        *std = POPULATION_STD(d);
        return;
    }
    m = (w * mu0 + n * stream.mean[d]) / (w + n);
    spread = stream.m2[d] + n * (stream.mean[d] - m) * (stream.mean[d] - m);
    var = (w * (sd0 * sd0 + (mu0 - m) * (mu0 - m)) + spread) / (w + n);
    s = sqrtf(var > 0.0f ? var : 0.0f);
    if (s < 1e-10f * stream.peak[block]) s = 1e-10f * stream.peak[block];
    *mean = m;
    *std = s == 0.0f ? 1.0f : s;
}

static void speaker_update(const float *features) {
    const float inv = 1.0f / (float)++stream.updates;
    int d, b = 0;
    for (d = 0; d < SER_FEATURE_DIM; ++d) {
        const float x = features[d], delta = x - stream.mean[d];
        if (d == ser_blocks[b + 1]) ++b;
        stream.mean[d] += delta * inv;
        stream.m2[d] += delta * (x - stream.mean[d]);
        if (fabsf(x) > stream.peak[b]) stream.peak[b] = fabsf(x);
    }
}
#endif

/* Pools the last frames of the window, classifies it and calls back. */
static void decide(window_t *w, int64_t end) {
    float *raw = scratch.u.act[1], *x = scratch.u.act[0];
    ser_decision_t decision;
    int d, b = 0;
    pool_result(&w->pool, raw);
#if SER_DECISION_FEATURES
    for (d = 0; d < SER_FEATURE_DIM; ++d) decision.features[d] = raw[d];
#endif
    decision.start = w->start;
    decision.end = end;
    decision.speaker_windows = 0;
#if SER_SPEAKER
    if (stream.fixed_mean == NULL) {
        if (stream.updates == 0 || w->start >= stream.last_update + SER_WINDOW) { /* no audio counts twice */
            speaker_update(raw);
            stream.last_update = w->start;
        }
        decision.speaker_windows = stream.updates;
    }
#endif
    for (d = 0; d < SER_FEATURE_DIM; ++d) {
        float v = raw[d];
#if SER_SPEAKER
        float mean, std;
        if (d == ser_blocks[b + 1]) ++b;
        if (stream.fixed_mean != NULL) {
            mean = stream.fixed_mean[d];
            std = stream.fixed_std[d];
        } else {
            speaker_estimate(d, b, &mean, &std);
        }
        v = (v - mean) / std;
#endif
        x[d] = (v - FEATURE_MEAN(d)) / FEATURE_STD(d);
    }
    (void)b;
    decision.emotion = network(x, decision.probabilities);
    stream.decided = 1;
    stream.on_decision(&decision, stream.user);
}

int ser_init(ser_decision_fn on_decision, void *user) {
    int i;
    if (on_decision == NULL) return SER_EINVAL;
    stream.live = 1;
    stream.on_decision = on_decision;
    stream.user = user;
    stream.seen = stream.next_frame = 0;
    stream.next_start = SER_WINDOW_HOP;
    stream.next_start_frame = SER_WINDOW_HOP / SER_HOP;
    stream.oldest = 0;
    stream.open = 1;
    stream.window[0].start = stream.window[0].first_frame = 0;
    stream.window[0].edge = 0;
    pool_reset(&stream.window[0].pool);
    stream.decided = 0;
    for (i = 0; i < SER_N_FFT; ++i) stream.ring[i] = 0;
    stream.changes = 0;
    stream.last = 0;
    stream.next_record = (SER_N_FFT / 2 + SER_HOP - 1) / SER_HOP; /* the first frame starting at or after 0 */
    stream.window[0].before.changes = 0;
    stream.window[0].before.negative = 0;
#if SER_SPEAKER
    stream.updates = 0;
    stream.last_update = 0;
    for (i = 0; i < SER_FEATURE_DIM; ++i) stream.mean[i] = stream.m2[i] = 0.0f;
    for (i = 0; i < SER_N_BLOCKS; ++i) stream.peak[i] = 0.0f;
#endif
    return SER_OK;
}

int ser_set_speaker(const float *speaker_mean, const float *speaker_std) {
    if ((speaker_mean == NULL) != (speaker_std == NULL)) return SER_EINVAL;
#if SER_SPEAKER
    stream.fixed_mean = speaker_mean;
    stream.fixed_std = speaker_std;
    return SER_OK;
#else
    return speaker_mean == NULL ? SER_OK : SER_EINVAL;
#endif
}

/* The next stream position at which something happens: a frame of the stream is complete, an edge frame
 * of an open window is, a window ends, or the next one starts. */
static int64_t next_event(void) {
    int64_t next = stream.next_frame * SER_HOP + SER_N_FFT / 2;
    const int64_t record = stream.next_record * SER_HOP - SER_N_FFT / 2;
    int i;
    if (stream.next_start < next) next = stream.next_start;
    if (record < next) next = record;
    for (i = 0; i < stream.open; ++i) {
        window_t *w = open_window(i);
        const int64_t due = edge_due(w), end = w->start + SER_WINDOW;
        if (due < next) next = due;
        if (end < next) next = end;
    }
    return next;
}

/* Everything due now (stream.seen): the stream's frame, into every open window it lies inside; the edge
 * frames due; the window that ends (decided); the window that starts. */
static int events(void) {
    const int64_t now = stream.seen;
    int i, made = 0;
    if (stream.next_record * SER_HOP - SER_N_FFT / 2 == now) { /* a frame starts here: the count before it */
        changes_t *r = &stream.record[(uint32_t)stream.next_record & (SER_RECORDS - 1)];
        r->changes = stream.changes;
        r->negative = stream.last < 0;
        ++stream.next_record;
    }
    if (stream.next_frame * SER_HOP + SER_N_FFT / 2 == now) {
        const int64_t centre = stream.next_frame * SER_HOP;
        int computed = 0;
        for (i = 0; i < stream.open; ++i) {
            window_t *w = open_window(i);
            if ((w->start == 0 || centre - SER_N_FFT / 2 >= w->start) && centre >= w->start &&
                centre + SER_N_FFT / 2 <= w->start + SER_WINDOW) {
                if (!computed) stream_frame(stream.next_frame, centre - SER_N_FFT / 2, NULL);
                computed = 1;
                pool_add(&w->pool);
            }
        }
        ++stream.next_frame;
    }
    for (i = 0; i < stream.open; ++i) {
        window_t *w = open_window(i);
        while (edge_due(w) == now) {
            const int64_t centre = w->start + (int64_t)w->edge * SER_HOP, lo = centre - SER_N_FFT / 2;
            stream_frame(w->first_frame + w->edge, lo > w->start ? lo : w->start, w);
            pool_add(&w->pool);
            ++w->edge;
        }
    }
    if (stream.open > 0 && open_window(0)->start + SER_WINDOW == now) {
        decide(open_window(0), now);
        stream.oldest = (stream.oldest + 1) % SER_MAX_OPEN;
        --stream.open;
        ++made;
    }
    if (stream.next_start == now) {
        window_t *w = open_window(stream.open++);
        w->start = now;
        w->first_frame = stream.next_start_frame;
        w->edge = 0;
        w->before.changes = stream.changes;
        w->before.negative = stream.last < 0;
        pool_reset(&w->pool);
        stream.next_start += SER_WINDOW_HOP;
        stream.next_start_frame += SER_WINDOW_HOP / SER_HOP;
    }
    return made;
}

int ser_push(const int16_t *pcm, int n) {
    int made = 0;
    if (!stream.live) return SER_ESTATE;
    if (pcm == NULL || n <= 0) return SER_EINVAL;
    while (n > 0) {
        const int64_t gap = next_event() - stream.seen;
        const int take = gap < n ? (int)gap : n;
        int i, at = (int)(stream.seen & (SER_N_FFT - 1)), last = stream.last;
        uint32_t changes = stream.changes;
        for (i = 0; i < take; ++i) { /* into the ring, counting sign changes */
            const int v = pcm[i];
            stream.ring[at] = (int16_t)v;
            changes += (uint32_t)(v ^ last) >> 31;
            last = v;
            at = (at + 1) & (SER_N_FFT - 1);
        }
        stream.changes = changes;
        stream.last = last;
        pcm += take;
        n -= take;
        stream.seen += take;
        if (take == gap) made += events();
    }
    return made;
}

int ser_flush(void) {
    int made = 0;
    if (!stream.live) return SER_ESTATE;
    if (!stream.decided && stream.seen > 0) { /* a stream shorter than a window: one window of what there is */
        window_t *w = open_window(0);
        int64_t j;
        for (j = 0; j * SER_HOP <= stream.seen; ++j) {
            if (j * SER_HOP + SER_N_FFT / 2 > stream.seen) { /* not yet pooled: cut at the end */
                stream_frame(j, j * SER_HOP - SER_N_FFT / 2, w);
                pool_add(&w->pool);
            }
        }
        decide(w, stream.seen);
        made = 1;
    }
    stream.live = 0;
    return made;
}
#else
unsigned long ser_state_bytes(void) { return (unsigned long)sizeof scratch; }
#endif
