/* Instructions per second of streamed audio on the emulated MPS2-AN386 (Cortex-M4), model included:
 *
 *   make bench.elf && qemu-system-arm -M mps2-an386 -nographic -icount shift=0,sleep=off \
 *       -semihosting-config enable=on,target=native,arg=bench,arg=audio.raw -kernel bench.elf
 *
 * audio.raw: 16-bit little-endian mono PCM at SER_SAMPLE_RATE (read through semihosting, which costs the
 * guest one instruction per call). It is pushed SER_BENCH_CHUNK samples at a time (a DMA half-buffer) and
 * the CMSDK timer 0 (the board's 25 MHz clock) is read around every ser_push. With -icount shift=0 qemu's
 * virtual clock advances 1 ns per instruction, so a timer tick is 40 instructions; a calibration loop of
 * known length checks that ratio. Prints one JSON line: samples and ticks from the first window's end on
 * (the steady state, when every window is open), in total, and ticks per instruction of the calibration.
 */
#include <stdio.h>

#include "../ser.h"

#ifndef SER_BENCH_CHUNK
#define SER_BENCH_CHUNK 256
#endif

#define TIMER0 ((volatile unsigned long *)0x40000000UL) /* CTRL, VALUE, RELOAD */

static unsigned long now(void) { return TIMER0[1]; } /* counts down */

static int decisions;
static void on_decision(const ser_decision_t *d, void *user) {
    (void)d;
    (void)user;
    ++decisions;
}

/* 4·n instructions: subs, bne and two nops per iteration. */
static void calibrate(unsigned long n) {
    __asm__ volatile("1: nop\n nop\n subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc");
}

int main(int argc, char **argv) {
    static int16_t chunk[SER_BENCH_CHUNK];
    unsigned long t0, calibration, steady = 0, total = 0;
    long samples = 0, steady_samples = 0;
    size_t got;
    FILE *f;
    if (argc < 2 || (f = fopen(argv[1], "rb")) == NULL) {
        printf("{\"error\": \"usage: bench audio.raw (16-bit PCM at %d Hz)\"}\n", SER_SAMPLE_RATE);
        return 2;
    }
    TIMER0[2] = 0xFFFFFFFFUL;
    TIMER0[1] = 0xFFFFFFFFUL;
    TIMER0[0] = 1;
    t0 = now();
    calibrate(1000000UL);
    calibration = t0 - now();
    if (ser_init(on_decision, NULL) != SER_OK) return 2;
    while ((got = fread(chunk, sizeof chunk[0], SER_BENCH_CHUNK, f)) > 0) {
        unsigned long ticks;
        t0 = now();
        if (ser_push(chunk, (int)got) < 0) return 1;
        ticks = t0 - now();
        total += ticks;
        if (samples >= SER_WINDOW) { /* every window open from here on */
            steady += ticks;
            steady_samples += (long)got;
        }
        samples += (long)got;
    }
    fclose(f);
    printf("{\"sample_rate\": %d, \"window\": %d, \"hop\": %d, \"chunk\": %d, \"samples\": %ld, \"ticks\": %lu, "
           "\"steady_samples\": %ld, \"steady_ticks\": %lu, \"decisions\": %d, \"calibration_instructions\": 4000000, "
           "\"calibration_ticks\": %lu, \"state_bytes\": %lu}\n",
           SER_SAMPLE_RATE, SER_WINDOW, SER_WINDOW_HOP, SER_BENCH_CHUNK, samples, total, steady_samples, steady, decisions,
           calibration, ser_state_bytes());
    return 0;
}
