/* A microphone on a board, classified as it speaks: each half of the microphone's DMA buffer goes to
 * ser_push, and each window's decision is printed as one line, `ser listen`'s JSON:
 *   {"start": 0.0000, "end": 2.0000, "emotion": "neutral", "probabilities": {...}}
 * Nothing here is board-specific: board.h is (board.c for the B-L475E-IOT01A). */
#include "board.h"
#include "../ser.h"

/* `whole`.`fraction` with `decimals` digits after the point (fraction < 10^decimals), into out (no printf:
 * no stdio, and no double arithmetic, on the board). */
static char *put_decimal(char *out, unsigned long whole, unsigned long fraction, int decimals) {
    char digits[24];
    int n = 0, i;
    do { digits[n++] = (char)('0' + whole % 10); whole /= 10; } while (whole > 0);
    while (n > 0) *out++ = digits[--n];
    *out++ = '.';
    for (i = decimals - 1; i >= 0; --i) { digits[i] = (char)('0' + fraction % 10); fraction /= 10; }
    for (i = 0; i < decimals; ++i) *out++ = digits[i];
    return out;
}

/* Seconds of `samples` at the microphone's rate, to 0.1 ms. */
static char *put_seconds(char *out, int64_t samples, long rate) {
    const unsigned long whole = (unsigned long)(samples / rate), rest = (unsigned long)(samples % rate);
    return put_decimal(out, whole, (unsigned long)(((unsigned long long)rest * 10000u + (unsigned long)rate / 2) / (unsigned long)rate), 4);
}

/* A probability (0..1) to 4 decimals. */
static char *put_probability(char *out, float p) {
    const unsigned long ten_thousandths = (unsigned long)(p * 10000.0f + 0.5f);
    return put_decimal(out, ten_thousandths / 10000u, ten_thousandths % 10000u, 4);
}

static char *put_text(char *out, const char *text) {
    while (*text) *out++ = *text++;
    return out;
}

static long rate;

static void on_decision(const ser_decision_t *d, void *user) {
    static char line[64 + 32 * SER_N_CLASSES];
    char *p = line;
    int k;
    (void)user;
    p = put_text(p, "{\"start\": ");
    p = put_seconds(p, d->start, rate);
    p = put_text(p, ", \"end\": ");
    p = put_seconds(p, d->end, rate);
    p = put_text(p, ", \"emotion\": \"");
    p = put_text(p, ser_class_name(d->emotion));
    p = put_text(p, "\", \"probabilities\": {");
    for (k = 0; k < SER_N_CLASSES; ++k) {
        p = put_text(p, k ? ", \"" : "\"");
        p = put_text(p, ser_class_name(k));
        p = put_text(p, "\": ");
        p = put_probability(p, d->probabilities[k]);
    }
    p = put_text(p, "}}\r\n");
    *p = 0;
    board_print(line);
}

int main(void) {
    rate = board_init(SER_SAMPLE_RATE);
    board_print("ser: listening\r\n");
    ser_init(on_decision, 0);
    board_mic_start();
    for (;;) {
        int count, overrun;
        const int16_t *samples = board_mic_wait(&count, &overrun);
        if (overrun) board_print("ser: audio overrun (a half-buffer was lost)\r\n");
        ser_push(samples, count);
    }
}
