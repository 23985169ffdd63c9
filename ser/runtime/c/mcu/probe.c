/* Size probe: the smallest firmware that runs the library (no stdio, no semihosting), for
 * `arm-none-eabi-size`: flash = text + data, RAM = data + bss (+ the stack `make mcu` measures).
 * A streaming model runs as a device would: a DMA double buffer of 16-bit samples (its RAM counted)
 * pushed half by half; other models take a clip from memory the ADC filled (not counted). */
#include "../ser.h"

extern unsigned long __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack;
void Reset_Handler(void);
static void Default_Handler(void) { for (;;) {} }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&__stack, Reset_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler};

volatile int emotion;
volatile float result[SER_N_CLASSES];

#if SER_STREAMING
#ifndef SER_DMA_SAMPLES
#define SER_DMA_SAMPLES 512 /* two halves of 256 samples (11.6 ms at 22,050 Hz) */
#endif
volatile int16_t dma[SER_DMA_SAMPLES]; /* filled by the microphone's DMA */
volatile int half_ready;               /* set by its half/complete interrupts: 1 or 2 */

static void on_decision(const ser_decision_t *d, void *user) {
    int k;
    (void)user;
    emotion = d->emotion;
    for (k = 0; k < SER_N_CLASSES; ++k) result[k] = d->probabilities[k];
}
#else
volatile const float *clip = (const float *)0x20200000; /* e.g. a buffer filled by the ADC */
volatile int clip_samples = 2 * SER_SAMPLE_RATE;
#endif

void Reset_Handler(void) {
    unsigned long *src = &__etext, *dst;
    for (dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
    *(volatile unsigned long *)0xE000ED88 |= 0xFUL << 20; /* FPU on */
    __asm__ volatile("dsb\n isb");
#if SER_STREAMING
    ser_init(on_decision, 0);
    for (;;) {
        const int half = half_ready;
        if (half) {
            half_ready = 0;
            ser_push((const int16_t *)dma + (half - 1) * (SER_DMA_SAMPLES / 2), SER_DMA_SAMPLES / 2);
        }
    }
#else
    {
        float p[SER_N_CLASSES];
        int k;
        ser_predict((const float *)clip, clip_samples, p);
        for (k = 0; k < SER_N_CLASSES; ++k) result[k] = p[k];
        for (;;) {}
    }
#endif
}
