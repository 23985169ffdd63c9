/* ser: the feature front end and the bit-packed MLP of one exported model (C99, libm only).
 *
 * It computes what ser/runtime/features.py and ser/runtime/model.py compute:
 *   frames of SER_N_FFT samples every SER_HOP (centred: the clip is padded with SER_N_FFT/2 zeros
 *   on both sides) → periodic Hann window → real FFT → power spectrum →
 *   mel power (Slaney triangles, each stored as its nonzero span) →
 *   dB (10·log10, floored SER_TOP_DB below the clip's peak) → MFCC (orthonormal DCT-II);
 *   chroma (Ellis filterbank, built at start-up, peak-normalised per frame); mel (power or dB) →
 *   mean / standard deviation over all frames (accumulated in double) →
 *   [speaker z-score →] standardisation → layers of integer codes on each layer's grid → softmax.
 * The dB floor needs the clip's peak before any frame's MFCC, so the clip is read twice: the
 * first pass finds the largest mel power, the second computes the features.
 */
#include "ser.h"

#include <float.h>
#include <math.h>
#include <stddef.h>

#define SER_PI 3.14159265358979323846
#define SER_BINS (SER_N_FFT / 2 + 1)
#define SER_AMIN 1e-10f

enum { PART_MFCC = 0, PART_CHROMA = 1, PART_MEL = 2 };
enum { STAT_MEAN = 0, STAT_STD = 1 };
enum { GRID_SYMMETRIC = 0, GRID_FULL = 1 };

/* All working memory: one static block, no heap. */
static struct {
    float fft[SER_N_FFT];       /* the windowed frame, then its half-length complex FFT */
    float power[SER_BINS];      /* power spectrum of the frame */
    float mel[SER_N_MELS];      /* mel power */
    float db[SER_N_MELS];       /* mel power in dB, floored */
    float frame[SER_FRAME_DIM]; /* one frame's features, in the model's part order */
    double sum[SER_FRAME_DIM];  /* pooling accumulators */
    double squares[SER_FRAME_DIM];
    float act[2][SER_MAX_WIDTH]; /* layer activations (ping-pong) */
#if SER_HAS_CHROMA
    float chroma_weights[SER_CHROMA_NNZ]; /* the chroma filterbank's kept weights, built by ser_init */
#endif
} scratch;

static int initialised = 0;

unsigned long ser_scratch_bytes(void) { return (unsigned long)sizeof scratch; }

const char *ser_class_name(int i) { return (i >= 0 && i < SER_N_CLASSES) ? ser_class_names[i] : NULL; }

/* cos(2πk/N) and sin(2πk/N) for 0 <= k <= N/2, from the quarter-wave table. */
static float cos_n(int k) { return k <= SER_N_FFT / 4 ? ser_cos_quarter[k] : -ser_cos_quarter[SER_N_FFT / 2 - k]; }
static float sin_n(int k) { return k <= SER_N_FFT / 4 ? ser_cos_quarter[SER_N_FFT / 4 - k] : ser_cos_quarter[k - SER_N_FFT / 4]; }

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

/* In-place radix-2 FFT of SER_N_FFT/2 complex numbers (interleaved re, im). */
static void complex_fft(float *z) {
    const int m = SER_N_FFT / 2;
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
    for (len = 2; len <= m; len <<= 1) {
        int step = SER_N_FFT / len; /* e^{-2πi k/len} = e^{-2πi (k·step)/N} */
        for (i = 0; i < m; i += len) {
            int k;
            for (k = 0; k < len / 2; ++k) {
                float wr = cos_n(k * step), wi = -sin_n(k * step);
                float *a = z + 2 * (i + k), *b = z + 2 * (i + k + len / 2);
                float tr = b[0] * wr - b[1] * wi, ti = b[0] * wi + b[1] * wr;
                b[0] = a[0] - tr; b[1] = a[1] - ti;
                a[0] += tr; a[1] += ti;
            }
        }
    }
}

/* Power spectrum of frame t of the centred clip into scratch.power. */
static void frame_power(const float *pcm, int n, int t) {
    const int m = SER_N_FFT / 2;
    const int start = t * SER_HOP - SER_N_FFT / 2;
    int i, k;
    float *z = scratch.fft;
    for (i = 0; i < SER_N_FFT; ++i) {
        int at = start + i;
        z[i] = (at >= 0 && at < n) ? pcm[at] * window(i) : 0.0f;
    }
    complex_fft(z); /* even samples as real parts, odd as imaginary */
    scratch.power[0] = (z[0] + z[1]) * (z[0] + z[1]);
    scratch.power[m] = (z[0] - z[1]) * (z[0] - z[1]);
    for (k = 1; k < m; ++k) {
        float ar = z[2 * k], ai = z[2 * k + 1], br = z[2 * (m - k)], bi = -z[2 * (m - k) + 1];
        float er = 0.5f * (ar + br), ei = 0.5f * (ai + bi); /* even part */
        float dr = 0.5f * (ar - br), di = 0.5f * (ai - bi);
        float wr = cos_n(k), wi = -sin_n(k);
        /* X[k] = E + (−i)·W·D */
        float tr = dr * wr - di * wi, ti = dr * wi + di * wr;
        float xr = er + ti, xi = ei - tr;
        scratch.power[k] = xr * xr + xi * xi;
    }
}

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

static float power_to_db(float p) { return 10.0f * log10f(p > SER_AMIN ? p : SER_AMIN); }

static int n_frames(int n) { return n / SER_HOP + 1; }

/* The frame's features in part order into scratch.frame, from scratch.power and scratch.mel. */
static void frame_features(float floor_db) {
    int part, i, k, at = 0;
#if SER_NEEDS_DB
    for (i = 0; i < SER_N_MELS; ++i) {
        float db = power_to_db(scratch.mel[i]);
        scratch.db[i] = db > floor_db ? db : floor_db;
    }
#else
    (void)floor_db;
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
        case PART_MEL:
            for (i = 0; i < SER_N_MELS; ++i) scratch.frame[at++] = SER_MEL_DB ? scratch.db[i] : scratch.mel[i];
            break;
        default:
            break;
        }
    }
}

int ser_features(const float *pcm, int n, float *features) {
    int t, d, s, frames, at = 0;
    float floor_db = 0.0f;
    if ((pcm == NULL && n > 0) || n < 0 || features == NULL) return SER_EINVAL;
    ser_init();
    frames = n_frames(n);
#if SER_NEEDS_DB
    { /* pass 1: the clip's largest mel power sets the dB floor */
        float peak = 0.0f;
        int b;
        for (t = 0; t < frames; ++t) {
            frame_power(pcm, n, t);
            mel_power();
            for (b = 0; b < SER_N_MELS; ++b) peak = scratch.mel[b] > peak ? scratch.mel[b] : peak;
        }
        floor_db = power_to_db(peak) - (float)SER_TOP_DB;
    }
#endif
    for (d = 0; d < SER_FRAME_DIM; ++d) scratch.sum[d] = scratch.squares[d] = 0.0;
    for (t = 0; t < frames; ++t) { /* pass 2: features, pooled */
        frame_power(pcm, n, t);
        mel_power();
        frame_features(floor_db);
        for (d = 0; d < SER_FRAME_DIM; ++d) {
            double x = scratch.frame[d];
            scratch.sum[d] += x;
            scratch.squares[d] += x * x;
        }
    }
    for (s = 0; s < SER_N_STATS; ++s) {
        for (d = 0; d < SER_FRAME_DIM; ++d) {
            double mean = scratch.sum[d] / frames;
            if (ser_stats[s] == STAT_MEAN) {
                features[at++] = (float)mean;
            } else {
                double var = scratch.squares[d] / frames - mean * mean;
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
