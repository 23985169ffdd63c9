/* What the streaming app (main.c) needs from a board: the only part to rewrite for another one.
 * board.c implements it for ST's B-L475E-IOT01A (STM32L475VG, Cortex-M4F at 80 MHz): its MP34DT01 MEMS
 * microphone through the DFSDM filter, samples by DMA into a double buffer, lines out on the ST-LINK's
 * virtual serial port. */
#ifndef BOARD_H
#define BOARD_H

#include <stdint.h>

/* Clocks, console and microphone; returns the microphone's sample rate in Hz (as near SER_SAMPLE_RATE as the
 * clock dividers allow). */
long board_init(long sample_rate);

/* Starts the microphone: from here on, halves of the DMA buffer fill one after the other. */
void board_mic_start(void);

/* Waits for the next half-buffer of 16-bit samples and returns it (*count samples); *overrun is set when a half
 * was overwritten before it was taken (the application was too slow). */
const int16_t *board_mic_wait(int *count, int *overrun);

/* Writes a string to the console. */
void board_print(const char *text);

#endif /* BOARD_H */
