/* ser_cli: predict the emotion of WAV files with the generated library; one JSON line per file.
 *
 *   ./ser_cli [--speaker stats.txt] clip.wav [more.wav ...]
 *   ./ser_cli --features clip.wav [more.wav ...]   (the pooled feature vectors instead: {"file", "features"})
 *
 * WAV: PCM 16-bit or IEEE float 32-bit, any number of channels (mixed to mono by their mean),
 * at SER_SAMPLE_RATE (no resampling here). stats.txt (speaker-normalised models): the speaker's
 * SER_FEATURE_DIM means then SER_FEATURE_DIM standard deviations, whitespace-separated; without
 * it such a model uses the training population's statistics.
 * The CLI (not the library) allocates the clip with malloc. Built with -DSER_STACK_PAINT it
 * also reports the stack ser_predict used (painting; for bare-metal targets).
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

/* Mono float samples of a WAV file (malloc'ed), or NULL with a message. */
static float *read_wav(const char *path, int *count, long *rate, const char **why) {
    FILE *f = fopen(path, "rb");
    unsigned char head[12], chunk[8], fmt[40];
    unsigned format = 0, channels = 0, bits = 0;
    float *out = NULL;
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
            if (channels == 0 || !((format == 1 && bits == 16) || (format == 3 && bits == 32))) {
                *why = "unsupported WAV encoding (use 16-bit PCM or 32-bit float)";
                goto done;
            }
            frames = (long)(size / (width * channels));
            raw = malloc((size_t)frames * width * channels + 1);
            out = malloc(((size_t)frames + 1) * sizeof *out);
            if (raw == NULL || out == NULL || fread(raw, width * channels, (size_t)frames, f) != (size_t)frames) {
                *why = raw == NULL || out == NULL ? "out of memory" : "truncated data";
                free(raw); free(out); out = NULL;
                goto done;
            }
            for (i = 0; i < frames; ++i) {
                float acc = 0.0f;
                for (c = 0; c < channels; ++c) {
                    const unsigned char *s = raw + ((size_t)i * channels + c) * width;
                    if (format == 1) {
                        long v = (long)le(s, 2);
                        acc += (float)(v >= 32768 ? v - 65536 : v) / 32768.0f;
                    } else {
                        float v;
                        memcpy(&v, s, 4); /* little-endian hosts and targets */
                        acc += v;
                    }
                }
                out[i] = channels == 1 ? acc : acc / (float)channels;
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

#ifdef SER_STACK_PAINT
#define PAINT_BYTES 16384
static unsigned long painted_call(const float *pcm, int n, const float *sm, const float *ss, float *p, int *rc) {
    volatile unsigned char *top = (volatile unsigned char *)__builtin_frame_address(0) - 64;
    volatile unsigned char *bottom = top - PAINT_BYTES;
    volatile unsigned char *q;
    for (q = bottom; q < top; ++q) *q = 0xA5;
    *rc = ser_predict_speaker(pcm, n, sm, ss, p);
    for (q = bottom; q < top && *q == 0xA5; ++q) {}
    return (unsigned long)(top - q);
}
#endif

int main(int argc, char **argv) {
    static float mean[SER_FEATURE_DIM], std[SER_FEATURE_DIM];
    float probabilities[SER_N_CLASSES];
    const float *sm = NULL, *ss = NULL;
    static float features[SER_FEATURE_DIM];
    int i, k, failed = 0, first = 1, only_features = 0;
    if (argc > 1 && !strcmp(argv[1], "--features")) {
        only_features = 1; first = 2;
    } else if (argc > 2 && !strcmp(argv[1], "--speaker")) {
        if (!read_speaker(argv[2], mean, std)) {
            fprintf(stderr, "error: %s: expected %d numbers\n", argv[2], 2 * SER_FEATURE_DIM);
            return 2;
        }
        sm = mean; ss = std; first = 3;
    }
    if (argc <= first) {
        fprintf(stderr, "usage: %s [--speaker stats.txt | --features] clip.wav ...\n", argv[0]);
        return 2;
    }
    ser_init();
    for (i = first; i < argc; ++i) {
        int n = 0, rc, best = 0;
        long rate = 0;
        const char *why = NULL;
        float *pcm = read_wav(argv[i], &n, &rate, &why);
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
        {
            unsigned long used = painted_call(pcm, n, sm, ss, probabilities, &rc);
            fprintf(stderr, "stack used by ser_predict: %lu bytes; scratch: %lu bytes\n", used, ser_scratch_bytes());
        }
#else
        rc = ser_predict_speaker(pcm, n, sm, ss, probabilities);
#endif
        free(pcm);
        if (rc != SER_OK) { printf("{\"file\": \"%s\", \"error\": \"ser_predict failed\"}\n", argv[i]); failed = 1; continue; }
        for (k = 1; k < SER_N_CLASSES; ++k) best = probabilities[k] > probabilities[best] ? k : best;
        printf("{\"file\": \"%s\", \"emotion\": \"%s\", \"probabilities\": {", argv[i], ser_class_name(best));
        for (k = 0; k < SER_N_CLASSES; ++k) printf("%s\"%s\": %.9g", k ? ", " : "", ser_class_name(k), (double)probabilities[k]);
        printf("}}\n");
    }
    return failed;
}
