/* Size probe: the smallest firmware that runs the library (no stdio, no semihosting), for
 * `arm-none-eabi-size`: what a device needs besides its own audio buffer and application. */
#include "../ser.h"

extern unsigned long __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack;
void Reset_Handler(void);
static void Default_Handler(void) { for (;;) {} }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&__stack, Reset_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler};

volatile float result[SER_N_CLASSES];
volatile const float *clip = (const float *)0x20200000; /* e.g. a DMA buffer filled by the ADC */
volatile int clip_samples = 2 * SER_SAMPLE_RATE;

void Reset_Handler(void) {
    unsigned long *src = &__etext, *dst;
    float p[SER_N_CLASSES];
    int k;
    for (dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
    *(volatile unsigned long *)0xE000ED88 |= 0xFUL << 20; /* FPU on */
    __asm__ volatile("dsb\n isb");
    ser_predict((const float *)clip, clip_samples, p);
    for (k = 0; k < SER_N_CLASSES; ++k) result[k] = p[k];
    for (;;) {}
}
