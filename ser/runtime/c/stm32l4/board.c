/* board.h for ST's B-L475E-IOT01A discovery kit (STM32L475VG: Cortex-M4F, 1 MB flash, 96 + 32 KB SRAM).
 *
 * Registers as RM0351 (STM32L47x/L48x reference manual) lays them out, written here directly so that the
 * project builds with nothing but arm-none-eabi-gcc:
 *  - clock: MSI 4 MHz → PLL (×40 / 2) → 80 MHz system, AHB and APB2 clocks; flash 4 wait states, caches on.
 *  - console: USART1 on PB6 (TX) / PB7 (RX), AF7: the ST-LINK's virtual serial port, 921600 baud 8N1 (a
 *    decision line takes about 2 ms to send, within a half-buffer).
 *  - microphone: MP34DT01 (U13), PDM clock from DFSDM1_CKOUT on PE9, data into DFSDM1_DATIN2 on PE7 (AF6),
 *    channel 2 on the clock's rising edge; filter 0: sinc5, FOSR·clock divider chosen for the sample rate,
 *    continuous fast conversions moved by DMA1 channel 4 (request 0) into a circular double buffer: the
 *    upper 16 bits of each 24-bit result (the data shift DTRBS puts full scale just under 2^23).
 */
#include "board.h"

#include <stddef.h>

#define REG(address) (*(volatile uint32_t *)(address))

/* RCC */
#define RCC_CR REG(0x40021000u)
#define RCC_CFGR REG(0x40021008u)
#define RCC_PLLCFGR REG(0x4002100Cu)
#define RCC_AHB1ENR REG(0x40021048u)
#define RCC_AHB2ENR REG(0x4002104Cu)
#define RCC_APB2ENR REG(0x40021060u)
#define RCC_CCIPR REG(0x40021088u)
#define FLASH_ACR REG(0x40022000u)
/* GPIO B and E */
#define GPIOB 0x48000400u
#define GPIOE 0x48001000u
#define GPIO_MODER(port) REG((port) + 0x00u)
#define GPIO_OSPEEDR(port) REG((port) + 0x08u)
#define GPIO_AFRL(port) REG((port) + 0x20u)
#define GPIO_AFRH(port) REG((port) + 0x24u)
/* USART1 */
#define USART1_CR1 REG(0x40013800u)
#define USART1_BRR REG(0x4001380Cu)
#define USART1_ISR REG(0x4001381Cu)
#define USART1_TDR REG(0x40013828u)
/* DFSDM1: channel y at 0x20·y, filter x at 0x100 + 0x80·x */
#define DFSDM_CHCFGR1(y) REG(0x40016000u + 0x20u * (y))
#define DFSDM_CHCFGR2(y) REG(0x40016004u + 0x20u * (y))
#define DFSDM_FLTCR1(x) REG(0x40016100u + 0x80u * (x))
#define DFSDM_FLTFCR(x) REG(0x40016114u + 0x80u * (x))
#define DFSDM_FLTRDATAR_ADDRESS(x) (0x4001611Cu + 0x80u * (x))
/* DMA1 channel 4 */
#define DMA1_ISR REG(0x40020000u)
#define DMA1_IFCR REG(0x40020004u)
#define DMA1_CCR4 REG(0x40020044u)
#define DMA1_CNDTR4 REG(0x40020048u)
#define DMA1_CPAR4 REG(0x4002004Cu)
#define DMA1_CMAR4 REG(0x40020050u)
#define DMA1_CSELR REG(0x400200A8u)

#define SYSCLK 80000000L
#define MIC_CHANNEL 2
#define SINC_ORDER 5
#define HALF 512 /* samples per half of the DMA buffer (23 ms at 22,050 Hz) */

static int16_t buffer[2 * HALF];

static void set_alternate(uint32_t port, int pin, uint32_t function) {
    GPIO_MODER(port) = (GPIO_MODER(port) & ~(3u << (2 * pin))) | (2u << (2 * pin));
    GPIO_OSPEEDR(port) |= 2u << (2 * pin); /* high speed */
    if (pin < 8) GPIO_AFRL(port) = (GPIO_AFRL(port) & ~(15u << (4 * pin))) | (function << (4 * pin));
    else GPIO_AFRH(port) = (GPIO_AFRH(port) & ~(15u << (4 * (pin - 8)))) | (function << (4 * (pin - 8)));
}

static void clock_80mhz(void) {
    FLASH_ACR = (FLASH_ACR & ~7u) | 4u | (1u << 8) | (1u << 9) | (1u << 10); /* 4 wait states, prefetch, caches */
    while ((FLASH_ACR & 7u) != 4u) {}
    /* PLL from MSI (4 MHz after reset): M = 1, N = 40, R = 2 → 80 MHz */
    RCC_PLLCFGR = 1u | (0u << 4) | (40u << 8) | (1u << 24) | (0u << 25);
    RCC_CR |= 1u << 24; /* PLLON */
    while (!(RCC_CR & (1u << 25))) {}
    RCC_CFGR = (RCC_CFGR & ~3u) | 3u; /* system clock: PLL; AHB, APB1, APB2 undivided */
    while (((RCC_CFGR >> 2) & 3u) != 3u) {}
}

static void console(void) {
    RCC_AHB2ENR |= 1u << 1;  /* GPIOB */
    RCC_APB2ENR |= 1u << 14; /* USART1 */
    set_alternate(GPIOB, 6, 7);
    set_alternate(GPIOB, 7, 7);
    USART1_BRR = (uint32_t)((SYSCLK + 921600 / 2) / 921600);
    USART1_CR1 = (1u << 3) | 1u; /* TE, UE */
}

void board_print(const char *text) {
    for (; *text; ++text) {
        while (!(USART1_ISR & (1u << 7))) {} /* TXE */
        USART1_TDR = (uint32_t)(unsigned char)*text;
    }
}

/* The PDM clock divider (1–3.25 MHz for the MP34DT01) and sinc oversampling nearest the rate. */
static long choose_dividers(long rate, uint32_t *divider, uint32_t *oversampling) {
    long best = 0;
    uint32_t d, f;
    for (d = 25; d <= 80; ++d) {
        f = (uint32_t)((SYSCLK / d + rate / 2) / rate);
        if (f >= 16 && f <= 1024) {
            const long got = SYSCLK / (long)(d * f), error = got > rate ? got - rate : rate - got;
            if (best == 0 || error < (best > rate ? best - rate : rate - best)) {
                best = got;
                *divider = d;
                *oversampling = f;
            }
        }
    }
    return best;
}

static uint32_t data_shift(uint32_t oversampling) {
    /* full scale of a sinc^N filter: ±FOSR^N; shift it to just under 2^23 */
    unsigned long long full = 1;
    uint32_t bits = 0, k;
    for (k = 0; k < SINC_ORDER; ++k) full *= oversampling;
    while ((1ULL << bits) < full) ++bits;
    return bits > 23 ? bits - 23 : 0;
}

static uint32_t oversampling_chosen, divider_chosen;

long board_init(long sample_rate) {
    long rate;
    clock_80mhz();
    console();
    rate = choose_dividers(sample_rate, &divider_chosen, &oversampling_chosen);
    RCC_AHB1ENR |= 1u;        /* DMA1 */
    RCC_AHB2ENR |= 1u << 4;   /* GPIOE */
    RCC_APB2ENR |= 1u << 24;  /* DFSDM1 */
    RCC_CCIPR &= ~(1u << 31); /* DFSDM kernel clock: APB2 (80 MHz) */
    set_alternate(GPIOE, 9, 6); /* DFSDM1_CKOUT */
    set_alternate(GPIOE, 7, 6); /* DFSDM1_DATIN2 */
    /* CKOUT from the system clock, divided; channel 2: its own pins, SPI with the internal clock, rising edge */
    DFSDM_CHCFGR1(0) = (DFSDM_CHCFGR1(0) & ~(0xFFu << 16)) | ((divider_chosen - 1u) << 16);
    DFSDM_CHCFGR2(MIC_CHANNEL) = data_shift(oversampling_chosen) << 3;
    DFSDM_CHCFGR1(MIC_CHANNEL) = (1u << 2) | (0u << 0) | (1u << 7); /* SPICKSEL = CKOUT, SITP = rising, CHEN */
    DFSDM_FLTFCR(0) = ((uint32_t)SINC_ORDER << 29) | ((oversampling_chosen - 1u) << 16) | 0u; /* IOSR 1 */
    /* regular channel 2, continuous, fast, by DMA */
    DFSDM_FLTCR1(0) = ((uint32_t)MIC_CHANNEL << 24) | (1u << 18) | (1u << 29) | (1u << 21);
    DFSDM_CHCFGR1(0) |= 1u << 31; /* DFSDMEN */
    return rate;
}

void board_mic_start(void) {
    DMA1_CSELR &= ~(15u << 12); /* channel 4: request 0, DFSDM1_FLT0 */
    DMA1_CPAR4 = DFSDM_FLTRDATAR_ADDRESS(0) + 2u; /* the upper half-word: RDATA[23:8] */
    DMA1_CMAR4 = (uint32_t)(size_t)buffer;
    DMA1_CNDTR4 = 2 * HALF;
    /* peripheral → memory, circular, memory increment, 16-bit both sides, high priority */
    DMA1_CCR4 = (1u << 5) | (1u << 7) | (1u << 8) | (1u << 10) | (2u << 12);
    DMA1_CCR4 |= 1u; /* EN */
    DFSDM_FLTCR1(0) |= 1u;       /* DFEN */
    DFSDM_FLTCR1(0) |= 1u << 17; /* RSWSTART */
}

const int16_t *board_mic_wait(int *count, int *overrun) {
    const uint32_t half = 1u << 14, full = 1u << 13; /* HTIF4, TCIF4 */
    uint32_t flags;
    while (!((flags = DMA1_ISR) & (half | full))) {}
    *overrun = (flags & half) && (flags & full);
    *count = HALF;
    if (flags & full) { /* the second half is complete (the first is being written again) */
        DMA1_IFCR = full | (*overrun ? half : 0u);
        return buffer + HALF;
    }
    DMA1_IFCR = half;
    return buffer;
}
