/* Start-up for the STM32L475VG: vector table (no interrupts used: the app polls the DMA flags), .data copy,
 * .bss zeroing, FPU on, main. */
#include <stdint.h>

extern int main(void);
extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack;

void Reset_Handler(void);
static void Default_Handler(void) { for (;;) {} }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&__stack, Reset_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler};

void Reset_Handler(void) {
    uint32_t *src = &__etext, *dst;
    for (dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CP10, CP11: the FPU */
    __asm__ volatile("dsb\n isb");
    main();
    for (;;) {}
}
