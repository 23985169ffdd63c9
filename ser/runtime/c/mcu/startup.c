/* Minimal start-up for the MPS2-AN386 (Cortex-M4F) under qemu with semihosting (newlib rdimon):
 * vector table, .data copy, .bss zeroing, FPU on, command line from the host, main, exit. */
#include <stdlib.h>
#include <string.h>

extern int main(int argc, char **argv);
extern void initialise_monitor_handles(void);
extern unsigned long __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack;

void Reset_Handler(void);
void _init(void);
void _fini(void);
void _init(void) {}
void _fini(void) {} /* newlib's init/fini hooks: nothing to run (-nostartfiles) */
static void Default_Handler(void) { for (;;) {} }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&__stack, Reset_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler};

static int semihost(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void Reset_Handler(void) {
    static char line[512];
    static char *argv[16];
    struct { char *buffer; int size; } cmd = {line, sizeof line - 1};
    unsigned long *src = &__etext, *dst;
    int argc = 0;
    char *p;
    for (dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
    *(volatile unsigned long *)0xE000ED88 |= 0xFUL << 20; /* CP10, CP11: full access to the FPU */
    __asm__ volatile("dsb\n isb");
    initialise_monitor_handles();
    if (semihost(0x15, &cmd) == 0) { /* SYS_GET_CMDLINE */
        line[cmd.size] = 0;
        for (p = strtok(line, " "); p != NULL && argc < 15; p = strtok(NULL, " ")) argv[argc++] = p;
    }
    argv[argc] = NULL;
    exit(main(argc, argv));
}
