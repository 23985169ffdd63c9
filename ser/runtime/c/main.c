/* ser_cli: the generated library on WAV files and streams; one JSON line per clip or window.
 *
 *   ./ser_cli [--speaker stats.txt] clip.wav [more.wav ...]      (whole clips: ser_predict)
 *   ./ser_cli --features clip.wav [more.wav ...]                (the pooled feature vectors: {"file", "features"})
 *   ./ser_cli --stream [--chunk N | --random-chunks SEED] [--speaker stats.txt] in.wav|-
 *        (streaming models: 16-bit samples pushed N at a time (default 256), or in chunks of random sizes
 *        1..4096; one line per window, as `ser listen`: {"start", "end", "samples", "emotion",
 *        "probabilities"[, "speaker_windows"][, "features" when built with -DSER_DECISION_FEATURES=1]};
 *        `-` reads raw 16-bit little-endian PCM from stdin)
 *
 * WAV: PCM 16-bit or IEEE float 32-bit (clips only), any number of channels (mixed to mono by their mean),
 * at SER_SAMPLE_RATE (no resampling here). stats.txt (speaker-normalised models): the speaker's
 * SER_FEATURE_DIM means then SER_FEATURE_DIM standard deviations, whitespace-separated; without
 * it such a model uses the training population's statistics (clips) or a running estimate (streams).
 * The CLI (not the library) allocates the file's samples with malloc. Built with -DSER_STACK_PAINT it
 * also reports the stack the library used (painting; for bare-metal targets).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ser.h"

static unsigned long le(const unsigned char *b, int n) {
    unsigned long v = 0;
    int i;
    for (i = n - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
}

/* A WAV file's samples, mono: float (*as_float) or int16 (16-bit PCM only, else NULL with a reason). */
static void *read_wav(const char *path, int want_int16, int *count, long *rate, const char **why) {
    FILE *f = fopen(path, "rb");
    unsigned char head[12], chunk[8], fmt[40];
    unsigned format = 0, channels = 0, bits = 0;
    void *out = NULL;
    *why = "not a RIFF/WAVE file";
    if (f == NULL) { *why = "cannot open"; return NULL; }
    if (fread(head, 1, 12, f) != 12 || memcmp(head, "RIFF", 4) || memcmp(head + 8, "WAVE", 4)) goto done;
    while (fread(chunk, 1, 8, f) == 8) {
        unsigned long size = le(chunk + 4, 4);
        if (!memcmp(chunk, "fmt ", 4)) {
            unsigned long keep = size < sizeof fmt ? size : sizeof fmt;
            if (size < 16 || fread(fmt, 1, keep, f) != keep) goto done;
            if (size > keep && fseek(f, (long)(size - keep), SEEK_CUR)) goto done;
            format = (unsigned)le(fmt, 2);
            channels = (unsigned)le(fmt + 2, 2);
            *rate = (long)le(fmt + 4, 4);
            bits = (unsigned)le(fmt + 14, 2);
            if (format == 0xFFFE && size >= 26) format = (unsigned)le(fmt + 24, 2); /* extensible */
        } else if (!memcmp(chunk, "data", 4)) {
            unsigned width = bits / 8, c;
            long frames, i;
            unsigned char *raw;
            if (channels == 0 || !((format == 1 && bits == 16) || (format == 3 && bits == 32 && !want_int16))) {
                *why = want_int16 ? "unsupported WAV encoding (streams take 16-bit PCM)"
                                  : "unsupported WAV encoding (use 16-bit PCM or 32-bit float)";
                goto done;
            }
            frames = (long)(size / (width * channels));
            raw = malloc((size_t)frames * width * channels + 1);
            out = malloc(((size_t)frames + 1) * (want_int16 ? sizeof(int16_t) : sizeof(float)));
            if (raw == NULL || out == NULL || fread(raw, width * channels, (size_t)frames, f) != (size_t)frames) {
                *why = raw == NULL || out == NULL ? "out of memory" : "truncated data";
                free(raw); free(out); out = NULL;
                goto done;
            }
            for (i = 0; i < frames; ++i) {
                float acc = 0.0f;
                long total = 0;
                for (c = 0; c < channels; ++c) {
                    const unsigned char *s = raw + ((size_t)i * channels + c) * width;
                    if (format == 1) {
                        long v = (long)le(s, 2);
                        v = v >= 32768 ? v - 65536 : v;
                        total += v;
                        acc += (float)v / 32768.0f;
                    } else {
                        float v;
                        memcpy(&v, s, 4); /* little-endian hosts and targets */
                        acc += v;
                    }
                }
                if (want_int16) ((int16_t *)out)[i] = (int16_t)(total / (long)channels);
                else ((float *)out)[i] = channels == 1 ? acc : acc / (float)channels;
            }
            free(raw);
            *count = (int)frames;
            goto done;
        } else if (fseek(f, (long)(size + (size & 1)), SEEK_CUR)) {
            goto done;
        }
    }
done:
    fclose(f);
    return out;
}

static int read_speaker(const char *path, float *mean, float *std) {
    FILE *f = fopen(path, "r");
    int i, ok = f != NULL;
    for (i = 0; ok && i < 2 * SER_FEATURE_DIM; ++i) ok = fscanf(f, "%f", i < SER_FEATURE_DIM ? &mean[i] : &std[i - SER_FEATURE_DIM]) == 1;
    if (f != NULL) fclose(f);
    return ok;
}

static void print_probabilities(const float *p) {
    int k;
    printf("\"probabilities\": {");
    for (k = 0; k < SER_N_CLASSES; ++k) printf("%s\"%s\": %.9g", k ? ", " : "", ser_class_name(k), (double)p[k]);
    printf("}");
}

#ifdef SER_STACK_PAINT
/* The stack below the calling function's frame (whose locals are a few words) is painted, then the deepest
 * byte the library changed is found. */
#define PAINT_BYTES 16384
#define PAINT() paint((volatile unsigned char *)__builtin_frame_address(0) - 64)
static volatile unsigned char *paint_top;
static void paint(volatile unsigned char *top) {
    volatile unsigned char *q;
    paint_top = top;
    for (q = top - PAINT_BYTES; q < top; ++q) *q = 0xA5;
}
static unsigned long painted(void) {
    volatile unsigned char *q;
    for (q = paint_top - PAINT_BYTES; q < paint_top && *q == 0xA5; ++q) {}
    return (unsigned long)(paint_top - q);
}
#endif

#if SER_STREAMING
static void print_decision(const ser_decision_t *d) {
    printf("{\"start\": %.4f, \"end\": %.4f, \"samples\": [%ld, %ld], \"emotion\": \"%s\", ", (double)d->start / SER_SAMPLE_RATE,
           (double)d->end / SER_SAMPLE_RATE, (long)d->start, (long)d->end, ser_class_name(d->emotion));
    print_probabilities(d->probabilities);
    if (SER_SPEAKER && d->speaker_windows > 0) printf(", \"speaker_windows\": %d", d->speaker_windows);
#if SER_DECISION_FEATURES
    {
        int k;
        printf(", \"features\": [");
        for (k = 0; k < SER_FEATURE_DIM; ++k) printf("%s%.9g", k ? ", " : "", (double)d->features[k]);
        printf("]");
    }
#endif
    printf("}\n");
}

/* Decisions are printed after ser_push returns (printf's stack is then not counted as the library's). */
static ser_decision_t pending[64];
static int n_pending;
static void on_decision(const ser_decision_t *d, void *user) {
    (void)user;
    if (n_pending == (int)(sizeof pending / sizeof pending[0])) print_decision(d);
    else pending[n_pending++] = *d;
}
static void print_pending(void) {
    int i;
    for (i = 0; i < n_pending; ++i) print_decision(&pending[i]);
    n_pending = 0;
}

/* Chunk sizes: fixed, or random in 1..4096 (a linear congruential generator seeded by the user). */
static unsigned long chunk_state;
static int next_chunk(int fixed) {
    if (fixed > 0) return fixed;
    chunk_state = chunk_state * 1103515245UL + 12345UL;
    return (int)((chunk_state >> 8) % 4096UL) + 1;
}

static int stream(const char *path, int chunk, const float *sm, const float *ss) {
    int n = 0, at = 0, rc = SER_OK;
    long rate = 0;
    const char *why = NULL;
    int16_t *pcm = NULL;
    static int16_t buffer[4096];
    if (ser_init(on_decision, NULL) != SER_OK || ser_set_speaker(sm, ss) != SER_OK) {
        fprintf(stderr, "error: ser_init / ser_set_speaker refused\n");
        return 2;
    }
#ifdef SER_STACK_PAINT
    PAINT();
#endif
    if (!strcmp(path, "-")) {
        size_t got;
        while (rc >= 0 && (got = fread(buffer, sizeof buffer[0], (size_t)(chunk > 0 && chunk < 4096 ? chunk : 4096), stdin)) > 0)
        {
            rc = ser_push(buffer, (int)got); /* little-endian hosts and targets */
            print_pending();
        }
    } else {
        pcm = read_wav(path, 1, &n, &rate, &why);
        if (pcm != NULL && rate != SER_SAMPLE_RATE) { free(pcm); pcm = NULL; why = "sample rate differs from the model's"; }
        if (pcm == NULL) {
            printf("{\"file\": \"%s\", \"error\": \"%s (model: %d Hz)\"}\n", path, why, SER_SAMPLE_RATE);
            return 1;
        }
        while (rc >= 0 && at < n) {
            int take = next_chunk(chunk);
            take = take < n - at ? take : n - at;
            rc = ser_push(pcm + at, take);
            print_pending();
            at += take;
        }
        free(pcm);
    }
    if (rc >= 0) rc = ser_flush();
    print_pending();
#ifdef SER_STACK_PAINT
    fprintf(stderr, "stack used by ser_push: %lu bytes; state: %lu bytes\n", painted(), ser_state_bytes());
#endif
    if (rc < 0) { fprintf(stderr, "error: ser_push returned %d\n", rc); return 1; }
    return 0;
}
#endif

int main(int argc, char **argv) {
    static float mean[SER_FEATURE_DIM], std[SER_FEATURE_DIM], features[SER_FEATURE_DIM];
    float probabilities[SER_N_CLASSES];
    const float *sm = NULL, *ss = NULL;
    int i, k, failed = 0, first = 1, only_features = 0, streaming = 0, chunk = 256;
    for (; first < argc; ++first) {
        if (!strcmp(argv[first], "--features")) {
            only_features = 1;
        } else if (!strcmp(argv[first], "--stream")) {
            streaming = 1;
        } else if (first + 1 < argc && !strcmp(argv[first], "--chunk")) {
            chunk = atoi(argv[++first]);
            if (chunk <= 0) { fprintf(stderr, "error: --chunk takes a number of samples >= 1\n"); return 2; }
        } else if (first + 1 < argc && !strcmp(argv[first], "--random-chunks")) {
#if SER_STREAMING
            chunk_state = strtoul(argv[++first], NULL, 10);
#else
            ++first;
#endif
            chunk = 0;
        } else if (first + 1 < argc && !strcmp(argv[first], "--speaker")) {
            if (!read_speaker(argv[++first], mean, std)) {
                fprintf(stderr, "error: %s: expected %d numbers\n", argv[first], 2 * SER_FEATURE_DIM);
                return 2;
            }
            sm = mean; ss = std;
        } else {
            break;
        }
    }
    if (argc <= first) {
        fprintf(stderr, "usage: %s [--speaker stats.txt | --features] clip.wav ...\n"
                        "       %s --stream [--chunk N | --random-chunks SEED] [--speaker stats.txt] in.wav|-\n", argv[0], argv[0]);
        return 2;
    }
    if (streaming) {
#if SER_STREAMING
        return stream(argv[first], chunk, sm, ss);
#else
        fprintf(stderr, "error: this model's dB floors hang on each clip's peak (data.features.db_floor=peak): it "
                        "runs on whole clips only; train with data.features.db_floor=absolute to stream\n");
        return 2;
#endif
    }
    for (i = first; i < argc; ++i) {
        int n = 0, rc, best = 0;
        long rate = 0;
        const char *why = NULL;
        float *pcm = read_wav(argv[i], 0, &n, &rate, &why);
        if (pcm != NULL && rate != SER_SAMPLE_RATE) { free(pcm); pcm = NULL; why = "sample rate differs from the model's"; }
        if (pcm == NULL) {
            printf("{\"file\": \"%s\", \"error\": \"%s (model: %d Hz)\"}\n", argv[i], why, SER_SAMPLE_RATE);
            failed = 1;
            continue;
        }
        if (only_features) {
            rc = ser_features(pcm, n, features);
            free(pcm);
            if (rc != SER_OK) { printf("{\"file\": \"%s\", \"error\": \"ser_features failed\"}\n", argv[i]); failed = 1; continue; }
            printf("{\"file\": \"%s\", \"features\": [", argv[i]);
            for (k = 0; k < SER_FEATURE_DIM; ++k) printf("%s%.9g", k ? ", " : "", (double)features[k]);
            printf("]}\n");
            continue;
        }
#ifdef SER_STACK_PAINT
        PAINT();
#endif
        rc = ser_predict_speaker(pcm, n, sm, ss, probabilities);
#ifdef SER_STACK_PAINT
        fprintf(stderr, "stack used by ser_predict: %lu bytes; state: %lu bytes\n", painted(), ser_state_bytes());
#endif
        free(pcm);
        if (rc != SER_OK) { printf("{\"file\": \"%s\", \"error\": \"ser_predict failed\"}\n", argv[i]); failed = 1; continue; }
        for (k = 1; k < SER_N_CLASSES; ++k) best = probabilities[k] > probabilities[best] ? k : best;
        printf("{\"file\": \"%s\", \"emotion\": \"%s\", ", argv[i], ser_class_name(best));
        print_probabilities(probabilities);
        printf("}\n");
    }
    return failed;
}
