/* ser: the feature front end and the bit-packed MLP of one exported model (C99, libm only).
 *
 * It computes what ser/runtime/features.py and ser/runtime/model.py compute:
 *   frames of SER_N_FFT samples every SER_HOP (centred: the clip is padded with SER_N_FFT/2 zeros
 *   on both sides) → periodic Hann window → real FFT → power spectrum →
 *   mel power (Slaney triangles, each stored as its nonzero span) →
 *   dB (10·log10, floored SER_TOP_DB below the clip's peak) → MFCC (orthonormal DCT-II);
 *   chroma (Ellis filterbank, built at start-up, peak-normalised per frame); mel (power or dB) →
 *   pitch (YIN on the unwindowed frame: autocorrelation over lags 0..SER_YIN_HI by a real FFT of the
 *   2·SER_N_FFT zero-padded frame, power spectrum and inverse real FFT; cumulative-mean-normalised difference over SER_YIN_LO..SER_YIN_HI, first trough below the threshold else the
 *   deepest, parabolic refinement → log F0, periodicity, voiced); spectral shape (loudness in dB,
 *   zero-crossing rate, centroid, bandwidth, roll-off, flatness, octave-band contrast in dB) →
 *   mean / standard deviation over all frames (accumulated in double; log F0 over voiced frames only) →
 *   [speaker z-score →] standardisation → layers of integer codes on each layer's grid → softmax.
 * The dB floors need the clip's peaks before any frame's features, so the clip is read twice: the
 * first pass finds the largest mel power (and, with the spectral part, the largest mean square and
 * the largest contrast peak, which also floors the valleys), the second computes the features.
 */
#include "ser.h"

#include <float.h>
#include <math.h>
#include <stddef.h>

#define SER_PI 3.14159265358979323846
#define SER_BINS (SER_N_FFT / 2 + 1)
#define SER_AMIN 1e-10f
/* The longest real FFT: SER_N_FFT for the spectrum, 2·SER_N_FFT for YIN's autocorrelation. The cosine
 * table holds cos(2πk/SER_TWIDDLE_N) for 0 <= k <= SER_TWIDDLE_N/4 (ser_model.h sets SER_TWIDDLE_N). */
#define SER_FFT_FLOATS SER_TWIDDLE_N

enum { PART_MFCC = 0, PART_CHROMA = 1, PART_MEL = 2, PART_PITCH = 3, PART_SPECTRAL = 4 };
#define SER_TWO_PASS (SER_NEEDS_DB || SER_HAS_SPECTRAL)
enum { STAT_MEAN = 0, STAT_STD = 1 };
enum { GRID_SYMMETRIC = 0, GRID_FULL = 1 };

/* All working memory: one static block, no heap. */
static struct {
    float fft[SER_FFT_FLOATS];  /* the frame, then windowed, then its half-length complex FFT (with pitch, also
                                   the zero-padded frame's 2·SER_N_FFT real FFT, and the autocorrelation) */
    float power[SER_BINS];      /* power spectrum of the frame */
    float mel[SER_N_MELS];      /* mel power */
    float db[SER_N_MELS];       /* mel power in dB, floored */
    float frame[SER_FRAME_DIM]; /* one frame's features, in the model's part order */
    double sum[SER_FRAME_DIM];  /* pooling accumulators */
    double squares[SER_FRAME_DIM];
    double voiced;              /* voiced frames: log F0's pooling count */
#if SER_HAS_PITCH
    float pitch[3];             /* log F0, periodicity, voiced */
#endif
#if SER_HAS_SPECTRAL
    float low[SER_CONTRAST_MAX_COUNT], high[SER_CONTRAST_MAX_COUNT]; /* a sub-band's smallest / largest magnitudes */
    float zcr;                  /* zero-crossing rate of the unwindowed frame */
#endif
    float act[2][SER_MAX_WIDTH]; /* layer activations (ping-pong) */
#if SER_HAS_CHROMA
    float chroma_weights[SER_CHROMA_NNZ]; /* the chroma filterbank's kept weights, built by ser_init */
#endif
} scratch;

static int initialised = 0;

unsigned long ser_scratch_bytes(void) { return (unsigned long)sizeof scratch; }

const char *ser_class_name(int i) { return (i >= 0 && i < SER_N_CLASSES) ? ser_class_names[i] : NULL; }

/* cos(2πk/T) and sin(2πk/T) for 0 <= k <= T/2, T = SER_TWIDDLE_N, from the quarter-wave table. */
static float cos_t(int k) { return k <= SER_TWIDDLE_N / 4 ? ser_cos_quarter[k] : -ser_cos_quarter[SER_TWIDDLE_N / 2 - k]; }
static float sin_t(int k) { return k <= SER_TWIDDLE_N / 4 ? ser_cos_quarter[SER_TWIDDLE_N / 4 - k] : ser_cos_quarter[k - SER_TWIDDLE_N / 4]; }
/* cos(2πk/N) for 0 <= k <= N/2, N = SER_N_FFT. */
static float cos_n(int k) { return cos_t(k * (SER_TWIDDLE_N / SER_N_FFT)); }

/* Periodic Hann window: 0.5 − 0.5·cos(2πi/N). */
static float window(int i) { return 0.5f - 0.5f * (i <= SER_N_FFT / 2 ? cos_n(i) : cos_n(SER_N_FFT - i)); }

#if SER_HAS_CHROMA
/* librosa's chroma filterbank (ser.data.filters.chroma_filterbank) in double, keeping the
 * weights whose positions the exporter recorded (each bin's circular run of classes). */
static double chroma_bin(int k) {
    const double a440 = 440.0 * pow(2.0, SER_TUNING / SER_N_CHROMA);
    double hz = (double)k * SER_SAMPLE_RATE / SER_N_FFT;
    if (k == 0) return chroma_bin(1) - 1.5 * SER_N_CHROMA;
    return SER_N_CHROMA * (log(hz / (a440 / 16.0)) / log(2.0));
}

static void build_chroma(void) {
    const double half = floor(SER_N_CHROMA / 2.0 + 0.5);
    int k, c, pos = 0;
    double next = chroma_bin(0);
    for (k = 0; k < SER_BINS; ++k) {
        double bin = next, width, norm = 0.0, octave, w[SER_N_CHROMA];
        next = chroma_bin(k + 1);
        width = (k + 1 < SER_N_FFT) ? next - bin : 1.0;
        if (width < 1.0) width = 1.0;
        for (c = 0; c < SER_N_CHROMA; ++c) {
            double x = bin - c + half + 10.0 * SER_N_CHROMA, d;
            x = fmod(x, (double)SER_N_CHROMA);
            if (x < 0) x += SER_N_CHROMA;
            d = x - half;
            w[c] = exp(-0.5 * (2.0 * d / width) * (2.0 * d / width));
            norm += w[c] * w[c];
        }
        norm = sqrt(norm);
        octave = (bin / SER_N_CHROMA - 5.0) / 2.0;
        octave = exp(-0.5 * octave * octave);
        for (c = 0; c < ser_chroma_count[k]; ++c) {
            /* output class j holds row (j + 3·(n/12)) of the unrolled bank (np.roll by −3) */
            int j = (ser_chroma_first[k] + c) % SER_N_CHROMA;
            int row = (j + 3 * (SER_N_CHROMA / 12)) % SER_N_CHROMA;
            scratch.chroma_weights[pos++] = (float)(w[row] / norm * octave);
        }
    }
}
#endif

void ser_init(void) {
    if (initialised) return;
#if SER_HAS_CHROMA
    build_chroma();
#endif
    initialised = 1;
}

/* In-place radix-2 FFT of m complex numbers (interleaved re, im); m a power of two, 2m <= SER_TWIDDLE_N.
 * Only outputs 0..keep−1 are needed (keep <= m): each stage skips the butterflies that feed none of them. */
static void complex_fft(float *z, int m, int keep) {
    int i, j, len;
    for (i = 1, j = 0; i < m; ++i) { /* bit reversal */
        int bit = m >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) {
            float tr = z[2 * i], ti = z[2 * i + 1];
            z[2 * i] = z[2 * j]; z[2 * i + 1] = z[2 * j + 1];
            z[2 * j] = tr; z[2 * j + 1] = ti;
        }
    }
    for (i = 0; i < m; i += 2) { /* length 2: the twiddle is 1 */
        float *a = z + 2 * i, *b = a + 2, tr = b[0], ti = b[1];
        b[0] = a[0] - tr; b[1] = a[1] - ti;
        a[0] += tr; a[1] += ti;
    }
    for (len = 4; len <= m; len <<= 1) {
        const int half = len / 2, step = SER_TWIDDLE_N / len; /* e^{-2πi k/len} = e^{-2πi (k·step)/T} */
        int k;
        for (k = 0; k < half && k < keep; ++k) { /* one twiddle, every block */
            const float wr = cos_t(k * step), wi = -sin_t(k * step);
            for (i = k; i < m; i += len) {
                float *a = z + 2 * i, *b = a + 2 * half;
                float tr = b[0] * wr - b[1] * wi, ti = b[0] * wi + b[1] * wr;
                b[0] = a[0] - tr; b[1] = a[1] - ti;
                a[0] += tr; a[1] += ti;
            }
        }
    }
}

/* Bin k (1 <= k < m) of the real FFT of 2m samples, from the complex FFT z of their m (even, odd) pairs:
 * X[k] = E + (−i)·W·D, E and D the even and odd parts of z[k] and conj(z[m − k]), W = e^{−2πik/(2m)}. */
static void real_fft_bin(const float *z, int m, int k, float *xr, float *xi) {
    float ar = z[2 * k], ai = z[2 * k + 1], br = z[2 * (m - k)], bi = -z[2 * (m - k) + 1];
    float er = 0.5f * (ar + br), ei = 0.5f * (ai + bi);
    float dr = 0.5f * (ar - br), di = 0.5f * (ai - bi);
    int w = k * (SER_TWIDDLE_N / (2 * m));
    float wr = cos_t(w), wi = -sin_t(w);
    float tr = dr * wr - di * wi, ti = dr * wi + di * wr;
    *xr = er + ti;
    *xi = ei - tr;
}

/* Frame t of the centred (zero-padded) clip, unwindowed, into scratch.fft. */
static void load_frame(const float *pcm, int n, int t) {
    const int start = t * SER_HOP - SER_N_FFT / 2;
    int i;
    for (i = 0; i < SER_N_FFT; ++i) {
        int at = start + i;
        scratch.fft[i] = (at >= 0 && at < n) ? pcm[at] : 0.0f;
    }
}

/* Power spectrum of the frame in scratch.fft (windowed in place, then transformed) into scratch.power. */
static void frame_power(void) {
    const int m = SER_N_FFT / 2;
    int i, k;
    float *z = scratch.fft;
    for (i = 0; i < SER_N_FFT; ++i) z[i] *= window(i);
    complex_fft(z, m, m); /* even samples as real parts, odd as imaginary */
    scratch.power[0] = (z[0] + z[1]) * (z[0] + z[1]);
    scratch.power[m] = (z[0] - z[1]) * (z[0] - z[1]);
    for (k = 1; k < m; ++k) {
        float xr, xi;
        real_fft_bin(z, m, k, &xr, &xi);
        scratch.power[k] = xr * xr + xi * xi;
    }
}

#if SER_NEEDS_MEL
static void mel_power(void) {
    int b, i;
    for (b = 0; b < SER_N_MELS; ++b) {
        const float *w = ser_mel_weights + ser_mel_offset[b];
        const float *p = scratch.power + ser_mel_start[b];
        float acc = 0.0f;
        for (i = 0; i < ser_mel_length[b]; ++i) acc += p[i] * w[i];
        scratch.mel[b] = acc;
    }
}
#endif

#if SER_HAS_PITCH
/* Autocorrelation of the unwindowed frame in scratch.fft over lags 0..SER_YIN_HI into
 * scratch.fft[SER_N_FFT ..] (the frame itself is overwritten: load it again), as
 * ser.data.descriptors.yin computes it: irfft(|rfft(frame, 2n)|², 2n), exact for lags < n.
 * Real FFT of the zero-padded frame (a complex FFT of n pairs), power spectrum, and the inverse real
 * FFT of that (real) spectrum as the conjugate of a forward complex FFT, built pair by pair in place. */
static void autocorrelation(void) {
    const int m = SER_N_FFT; /* complex points of the 2n-point real FFT */
    float *z = scratch.fft;
    int i, k;
    for (i = SER_N_FFT; i < 2 * SER_N_FFT; ++i) z[i] = 0.0f;
    complex_fft(z, m, m);
    { /* bins 0 and m: P[0] = (re + im)², P[m] = (re − im)²; inverse: E = (P[0] + P[m])/2, D = (P[0] − P[m])/2 */
        float p0 = (z[0] + z[1]) * (z[0] + z[1]), pm = (z[0] - z[1]) * (z[0] - z[1]);
        z[0] = 0.5f * (p0 + pm);
        z[1] = -0.5f * (p0 - pm);
    }
    for (k = 1; k <= m / 2; ++k) {
        /* P[k], P[m − k]; then the conjugate of the inverse's packed spectrum at k and m − k:
         * E ∓ D·sin θ, −D·cos θ with E, D = (P[k] ± P[m − k])/2 and θ = 2πk/(2m) */
        float xr, xi, yr, yi, pk, pm, e, d, c, sn;
        real_fft_bin(z, m, k, &xr, &xi);
        real_fft_bin(z, m, m - k, &yr, &yi);
        pk = xr * xr + xi * xi;
        pm = yr * yr + yi * yi;
        e = 0.5f * (pk + pm);
        d = 0.5f * (pk - pm);
        c = cos_t(k * (SER_TWIDDLE_N / (2 * m)));
        sn = sin_t(k * (SER_TWIDDLE_N / (2 * m)));
        z[2 * k] = e - d * sn;
        z[2 * k + 1] = -d * c;
        z[2 * (m - k)] = e + d * sn;
        z[2 * (m - k) + 1] = -d * c;
    }
    complex_fft(z, m, SER_YIN_HI / 2 + 1); /* m·conj(packed autocorrelation), lags 0..SER_YIN_HI */
    for (i = 0; i <= SER_YIN_HI; ++i) z[SER_N_FFT + i] = (i % 2 == 0 ? z[i] : -z[i]) * (1.0f / (float)m);
}

/* YIN (ser.data.descriptors.yin) on the unwindowed frame in scratch.fft, with its autocorrelation
 * in scratch.fft[SER_N_FFT ..] (autocorrelation()), into scratch.pitch. */
static void pitch(void) {
    const float *y = scratch.fft;
    float *c = scratch.fft + SER_N_FFT, *q = c + SER_YIN_LO, best, period, shift = 0.0f, periodicity;
    const int len = SER_YIN_HI - SER_YIN_LO + 1;
    double energy = 0.0, total = 0.0; /* running sums in double, as torch's cumsum on the CPU */
    int k, index = -1, argmin = 0, inner;
    if (c[0] > FLT_MIN) {
        const float acf0 = c[0];
        for (k = 1; k <= SER_YIN_HI; ++k) { /* d(k) = 2(acf(0) − acf(k)) − Σ_{m<k} y[m]², normalised by its running mean */
            float d, mean;
            energy += (double)y[k - 1] * y[k - 1];
            d = 2.0f * (acf0 - c[k]) - (float)energy;
            total += d;
            mean = (float)(total / k);
            if (k >= SER_YIN_LO) c[k] = d / (mean + FLT_MIN);
        }
    } else {
        for (k = SER_YIN_LO; k <= SER_YIN_HI; ++k) c[k] = 1.0f; /* silence: no dip */
    }
    best = q[0];
    for (k = 0; k < len; ++k) {
        int trough = k == 0 ? q[0] < q[1] : k == len - 1 ? q[k] < q[k - 1] : (q[k] < q[k - 1] && q[k] <= q[k + 1]);
        if (index < 0 && trough && q[k] < SER_YIN_THRESHOLD) index = k;
        if (q[k] < best) { best = q[k]; argmin = k; }
    }
    if (index < 0) index = argmin;
    inner = index < 1 ? 1 : index > len - 2 ? len - 2 : index;
    if (inner == index) { /* parabola through the neighbours */
        float a = q[index + 1] + q[index - 1] - 2.0f * q[index], b = 0.5f * (q[index + 1] - q[index - 1]);
        if (fabsf(b) < fabsf(a)) shift = -b / a;
    }
    period = (float)(SER_YIN_LO + index) + shift;
    periodicity = 1.0f - best;
    periodicity = periodicity < 0.0f ? 0.0f : periodicity > 1.0f ? 1.0f : periodicity;
    scratch.pitch[0] = logf((float)SER_SAMPLE_RATE / period);
    scratch.pitch[1] = periodicity;
    scratch.pitch[2] = periodicity > SER_VOICED_ABOVE ? 1.0f : 0.0f;
}
#endif

#if SER_HAS_SPECTRAL
/* Share of neighbouring samples of the unwindowed frame whose signs differ (|y| <= 1e-10 counts as +0). */
static float zero_crossing_rate(void) {
    int i, count = 0, previous = scratch.fft[0] < -1e-10f;
    for (i = 1; i < SER_N_FFT; ++i) {
        int negative = scratch.fft[i] < -1e-10f;
        count += negative != previous;
        previous = negative;
    }
    return (float)count / (float)SER_N_FFT;
}

/* Mean square of the windowed frame from its power spectrum (Parseval). */
static float mean_square(void) {
    float total = 0.0f;
    int k;
    for (k = 0; k < SER_BINS; ++k) total += scratch.power[k];
    return (2.0f * total - scratch.power[0] - scratch.power[SER_BINS - 1]) / ((float)SER_N_FFT * (float)SER_N_FFT);
}

/* Means of the smallest and of the largest ser_contrast_count[b] magnitudes of sub-band b (an
 * insertion-sorted window of each: a partial sort, count is small). */
static void contrast_band(int b, float *peak, float *valley) {
    const int count = ser_contrast_count[b];
    float *low = scratch.low, *high = scratch.high, sum_low = 0.0f, sum_high = 0.0f;
    int k, i, n_low = 0, n_high = 0;
    for (k = ser_contrast_start[b]; k < ser_contrast_stop[b]; ++k) {
        float m = sqrtf(scratch.power[k]);
        if (n_low < count || m < low[count - 1]) { /* low: ascending */
            for (i = n_low < count ? n_low++ : count - 1; i > 0 && low[i - 1] > m; --i) low[i] = low[i - 1];
            low[i] = m;
        }
        if (n_high < count || m > high[count - 1]) { /* high: descending */
            for (i = n_high < count ? n_high++ : count - 1; i > 0 && high[i - 1] < m; --i) high[i] = high[i - 1];
            high[i] = m;
        }
    }
    for (i = 0; i < count; ++i) { sum_low += low[i]; sum_high += high[i]; }
    *valley = sum_low / (float)count;
    *peak = sum_high / (float)count;
}
#endif

#if SER_TWO_PASS
static float power_to_db(float p) { return 10.0f * log10f(p > SER_AMIN ? p : SER_AMIN); }

static int n_frames(int n) { return n / SER_HOP + 1; }

/* The dB floors: SER_TOP_DB below the clip's largest mel power, mean square and contrast peak (valleys
 * share the peaks' floor: an empty band holds only rounding noise). */
typedef struct { float mel, loudness, peak; } floors_t;

static float floored_db(float p, float floor) {
    float db = power_to_db(p);
    return db > floor ? db : floor;
}
#endif

/* The frame's features in part order into scratch.frame, from scratch.power and scratch.mel (and
 * scratch.pitch, scratch.zcr, computed from the unwindowed frame before). */
static void frame_features(const floors_t *floors) {
    int part, i, k, at = 0;
#if SER_NEEDS_DB
    for (i = 0; i < SER_N_MELS; ++i) scratch.db[i] = floored_db(scratch.mel[i], floors->mel);
#else
    (void)floors;
#endif
    for (part = 0; part < SER_N_PARTS; ++part) {
        switch (ser_parts[part]) {
#if SER_HAS_MFCC
        case PART_MFCC:
            for (k = 0; k < SER_N_MFCC; ++k) {
                float acc = 0.0f;
                if (k == 0) {
                    for (i = 0; i < SER_N_MELS; ++i) acc += scratch.db[i] * ser_dct0;
                } else {
                    for (i = 0; i < SER_N_MELS; ++i) acc += scratch.db[i] * ser_dct_table[(k * (2 * i + 1)) % (4 * SER_N_MELS)];
                }
                scratch.frame[at++] = acc;
            }
            break;
#endif
#if SER_HAS_CHROMA
        case PART_CHROMA: {
            float c[SER_N_CHROMA], peak = 0.0f;
            const float *w = scratch.chroma_weights;
            for (i = 0; i < SER_N_CHROMA; ++i) c[i] = 0.0f;
            for (k = 0; k < SER_BINS; ++k) {
                float p = scratch.power[k];
                int j = ser_chroma_first[k];
#if !SER_CHROMA_POWER_IS_2
                p = powf(p, SER_CHROMA_POWER / 2.0f);
#endif
                for (i = 0; i < ser_chroma_count[k]; ++i) {
                    c[j] += p * *w++;
                    if (++j == SER_N_CHROMA) j = 0;
                }
            }
            for (i = 0; i < SER_N_CHROMA; ++i) peak = c[i] > peak ? c[i] : peak;
            if (peak < FLT_MIN) peak = 1.0f;
            for (i = 0; i < SER_N_CHROMA; ++i) scratch.frame[at++] = c[i] / peak;
            break;
        }
#endif
#if SER_NEEDS_MEL
        case PART_MEL:
            for (i = 0; i < SER_N_MELS; ++i) scratch.frame[at++] = SER_MEL_DB ? scratch.db[i] : scratch.mel[i];
            break;
#endif
#if SER_HAS_PITCH
        case PART_PITCH:
            for (i = 0; i < 3; ++i) scratch.frame[at++] = scratch.pitch[i];
            break;
#endif
#if SER_HAS_SPECTRAL
        case PART_SPECTRAL: { /* loudness, zcr, centroid, bandwidth, roll-off, flatness, contrast per sub-band */
            const float hz = (float)SER_SAMPLE_RATE / (float)SER_N_FFT;
            float total = 0.0f, moment = 0.0f, centroid, spread = 0.0f, cumulative = 0.0f, target;
            float logs = 0.0f, linear = 0.0f, weight;
            int below = 0;
            scratch.frame[at++] = floored_db(mean_square(), floors->loudness);
            scratch.frame[at++] = scratch.zcr;
            for (k = 0; k < SER_BINS; ++k) {
                float m = sqrtf(scratch.power[k]), p = scratch.power[k] > SER_AMIN ? scratch.power[k] : SER_AMIN;
                total += m;
                moment += m * ((float)k * hz);
                logs += logf(p);
                linear += p;
            }
            weight = total > FLT_MIN ? 1.0f / total : 1.0f;
            centroid = moment * weight;
            target = SER_ROLL_PERCENT * total;
            for (k = 0; k < SER_BINS; ++k) {
                float m = sqrtf(scratch.power[k]), f = (float)k * hz - centroid;
                spread += m * weight * f * f;
                cumulative += m;
                below += cumulative < target;
            }
            scratch.frame[at++] = centroid;
            scratch.frame[at++] = sqrtf(spread);
            scratch.frame[at++] = (float)(below < SER_BINS ? below : SER_BINS - 1) * hz;
            scratch.frame[at++] = expf(logs / (float)SER_BINS) / (linear / (float)SER_BINS);
            for (k = 0; k < SER_CONTRAST_BANDS; ++k) {
                float peak, valley;
                contrast_band(k, &peak, &valley);
                scratch.frame[at++] = floored_db(peak, floors->peak) - floored_db(valley, floors->peak);
            }
            break;
        }
#endif
        default:
            break;
        }
    }
}

int ser_features(const float *pcm, int n, float *features) {
    int t, d, s, frames, at = 0;
    floors_t floors = {0.0f, 0.0f, 0.0f};
    if ((pcm == NULL && n > 0) || n < 0 || features == NULL) return SER_EINVAL;
    ser_init();
    frames = n_frames(n);
#if SER_TWO_PASS
    { /* pass 1: the clip's largest mel power (mean square, contrast peak) set the dB floors */
        float mel = 0.0f, loudness = 0.0f, peak = 0.0f;
        int b;
        for (t = 0; t < frames; ++t) {
            load_frame(pcm, n, t);
            frame_power();
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
                    (void)vl;
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
    for (d = 0; d < SER_FRAME_DIM; ++d) scratch.sum[d] = scratch.squares[d] = 0.0;
    scratch.voiced = 0.0;
    for (t = 0; t < frames; ++t) { /* pass 2: features, pooled */
        load_frame(pcm, n, t);
#if SER_HAS_PITCH
        autocorrelation();
        load_frame(pcm, n, t);
        pitch();
#endif
#if SER_HAS_SPECTRAL
        scratch.zcr = zero_crossing_rate();
#endif
        frame_power();
#if SER_NEEDS_MEL
        mel_power();
#endif
        frame_features(&floors);
        for (d = 0; d < SER_FRAME_DIM; ++d) {
            double x = scratch.frame[d];
#if SER_HAS_PITCH
            if (d == SER_LOG_F0_CHANNEL && scratch.pitch[2] == 0.0f) continue; /* log F0: voiced frames only */
#endif
            scratch.sum[d] += x;
            scratch.squares[d] += x * x;
        }
#if SER_HAS_PITCH
        scratch.voiced += scratch.pitch[2];
#endif
    }
    for (s = 0; s < SER_N_STATS; ++s) {
        for (d = 0; d < SER_FRAME_DIM; ++d) {
            double count = frames, mean, var;
#if SER_HAS_PITCH
            if (d == SER_LOG_F0_CHANNEL) count = scratch.voiced > 1.0 ? scratch.voiced : 1.0;
#endif
            mean = scratch.sum[d] / count;
            if (ser_stats[s] == STAT_MEAN) {
                features[at++] = (float)mean;
            } else {
                var = scratch.squares[d] / count - mean * mean;
                features[at++] = (float)sqrt(var > 0.0 ? var : 0.0);
            }
        }
    }
    return SER_OK;
}

/* One layer: out = act(levels(codes) · scale · in + bias), codes read from the layer's bit stream. */
static void dense(const ser_layer_t *layer, const float *in, float *out) {
    const unsigned char *p = layer->codes;
    const unsigned mask = (1u << layer->bits) - 1u;
    unsigned long acc = 0;
    int have = 0, o, i;
    /* level(code) = a·code + c: symmetric 1 bit ±1; symmetric b bits code − (2^(b−1) − 1);
     * full code − (2^b − 1)/2 (ser/quant/grid.py) */
    float a = 1.0f, c;
    if (layer->grid == GRID_FULL) c = -0.5f * (float)((1 << layer->bits) - 1);
    else if (layer->bits == 1) { a = 2.0f; c = -1.0f; }
    else c = -(float)((1 << (layer->bits - 1)) - 1);
    for (o = 0; o < layer->out; ++o) {
        float sum = 0.0f, y;
        for (i = 0; i < layer->in; ++i) {
            unsigned code;
            while (have < layer->bits) { acc |= (unsigned long)(*p++) << have; have += 8; }
            code = (unsigned)acc & mask;
            acc >>= layer->bits;
            have -= layer->bits;
            sum += (a * (float)code + c) * in[i];
        }
        y = sum * layer->scales[layer->n_scales == 1 ? 0 : o];
        if (layer->bias != NULL) y += layer->bias[o];
        out[o] = (layer->relu && y < 0.0f) ? 0.0f : y;
    }
}

int ser_classify(const float *features, const float *speaker_mean, const float *speaker_std, float *probabilities) {
    int d, l, k;
    float *x = scratch.act[0], *y = scratch.act[1], peak, total = 0.0f;
    if (features == NULL || probabilities == NULL || ((speaker_mean == NULL) != (speaker_std == NULL))) return SER_EINVAL;
    for (d = 0; d < SER_FEATURE_DIM; ++d) {
        float v = features[d];
#if SER_SPEAKER
        v = speaker_mean != NULL ? (v - speaker_mean[d]) / speaker_std[d]
                                 : (v - ser_population_mean[d]) / ser_population_std[d];
#endif
        x[d] = (v - ser_feature_mean[d]) / ser_feature_std[d];
    }
#if !SER_SPEAKER
    (void)speaker_mean;
    (void)speaker_std;
#endif
    for (l = 0; l < SER_N_LAYERS; ++l) {
        float *t;
        dense(&ser_layers[l], x, y);
        t = x; x = y; y = t;
    }
    peak = x[0];
    for (k = 1; k < SER_N_CLASSES; ++k) peak = x[k] > peak ? x[k] : peak;
    for (k = 0; k < SER_N_CLASSES; ++k) total += (probabilities[k] = expf(x[k] - peak));
    for (k = 0; k < SER_N_CLASSES; ++k) probabilities[k] /= total;
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
