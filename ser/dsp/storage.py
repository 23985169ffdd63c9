"""How a model file stores the float numbers besides its weights: biases and statistics.

At 1–2 bits the weights of a small MLP take about 26 KB, and float32 biases (3.4 KB for the
paper's MLP) and standardisation statistics (1.4 KB; 6.3 KB for a speaker-normalised
392-feature model) become a tenth to a quarter of the file. Two narrower encodings, shared by
the quantizer (which scores the model with them) and the exporter and runtimes (which store
and decode them), so that what is measured is what ships:

* biases at ``bits`` (2–8) as integer codes on the ``symmetric`` grid (``ser.dsp.grid``) with
  one **power-of-two** scale per layer: every decoded value ``level · 2^e`` is exact in
  float32, and encoding a decoded bias again gives the same codes and scale (so the exporter
  can recover the codes from the float bias and check them, as it does for weights), and a
  fixed-point kernel applies the scale as a shift;
* statistics (a feature mean and standard deviation, and a speaker-normalised model's population
  statistics) in 16 bits each, as a pair: the deviation as bfloat16 (a relative error under
  2^-8 at any magnitude: the deviations span ten decades, down to the 1e-10 floor of
  ``ser.dsp.speaker_norm``), the mean as float16 *in units of the stored deviation* (an error
  under 2^-11 · |mean/std| standard deviations, and under 2^-25 of one below 2^-14, since only
  (x − mean)/std is ever used). A mean beyond 65504 deviations is refused, not stored as infinity.

``32`` means float32, unchanged: the paper's files and every file from before these encodings.
"""

from __future__ import annotations

import numpy as np

from ser.dsp import grid as grids

FLOAT_BITS = 32
BIAS_BITS = (2, 3, 4, 5, 6, 7, 8, FLOAT_BITS)
STATS_BITS = (16, FLOAT_BITS)
# The statistics stored at ``stats_bits`` ({mean: std}): the standardisation a model applies in its forward
# pass. A speaker-normalised model's population statistics stay float32: they shrink a new speaker's estimate
# outside the model, as the datamodule did (in float32) for every scored split.
NARROW_STATISTICS = {"feature_mean": "feature_std"}


def check_bias_bits(bits: int) -> None:
    if bits not in BIAS_BITS:
        raise ValueError(f"bias bits must be 2..8 (integer codes) or 32 (float32), got {bits}")


def check_stats_bits(bits: int) -> None:
    if bits not in STATS_BITS:
        raise ValueError(f"statistics bits must be 16 (float16) or 32 (float32), got {bits}")


def layer_bits(weights: int, bits: int, scales: int, bias: int | None = None, bias_bits: int = FLOAT_BITS) -> int:
    """Bits one quantized layer stores, the one size rule of the quantizer's budgets and the exporter's report:
    ``weights`` codes at ``bits``, ``scales`` at 32, and a bias of ``bias`` values (None: none) at ``bias_bits``,
    plus its 32-bit scale when stored as codes."""
    stored_bias = 0 if bias is None else bias * bias_bits + (FLOAT_BITS if bias_bits < FLOAT_BITS else 0)
    return weights * bits + FLOAT_BITS * scales + stored_bias


def statistics_bits(narrow: int, wide: int, stats_bits: int) -> int:
    """Bits of a model's statistics: ``narrow`` values (the standardisation) at ``stats_bits``, ``wide`` ones
    (a speaker-normalised model's population) at 32."""
    check_stats_bits(stats_bits)
    return narrow * stats_bits + wide * FLOAT_BITS


def bias_scale(bias: np.ndarray, bits: int) -> float:
    """The smallest power of two ``s`` with max|bias| / s within the grid's top level (1.0 for a zero bias)."""
    peak = float(np.max(np.abs(bias))) if np.size(bias) else 0.0
    if peak == 0.0:
        return 1.0
    exponent = int(np.ceil(np.log2(peak / grids.max_level(bits, "symmetric"))))
    return float(np.ldexp(1.0, exponent))


def encode_bias(bias: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """Codes (uint8) and power-of-two scale of ``bias`` at ``bits`` (2–8) bits."""
    check_bias_bits(bits)
    if bits == FLOAT_BITS:
        raise ValueError("32-bit biases are stored as float32, not as codes")
    values = np.asarray(bias, dtype=np.float64).reshape(1, -1)
    scale = bias_scale(values, bits)
    return grids.quantize_codes(values, np.array([scale]), bits, "symmetric").reshape(np.shape(bias)), scale


def decode_bias(codes: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """The float32 bias the codes stand for."""
    codes = np.asarray(codes)
    return grids.dequantize(codes.reshape(1, -1), np.array([scale]), bits, "symmetric").reshape(codes.shape)


def round_bias(bias: np.ndarray, bits: int) -> np.ndarray:
    """``bias`` as the file stores it at ``bits`` (float32; unchanged at 32)."""
    check_bias_bits(bits)
    if bits == FLOAT_BITS:
        return np.asarray(bias, dtype=np.float32)
    return decode_bias(*encode_bias(bias, bits), bits)


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """The upper 16 bits of each float32, rounded to nearest even: bfloat16 as uint16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bfloat16(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def encode_statistics(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean / stored std as float16, std as bfloat16 bits): what a 16-bit file stores."""
    std = np.asarray(std, dtype=np.float32)
    if not np.all(np.isfinite(std) & (std > 0)):
        raise ValueError("standard deviations must be positive and finite")
    stored_std = from_bfloat16(bfloat16_bits(std))
    ratio = np.asarray(mean, dtype=np.float64) / stored_std
    if np.max(np.abs(ratio), initial=0.0) > np.finfo(np.float16).max:
        raise ValueError(
            f"a mean of {np.max(np.abs(ratio)):.3g} standard deviations overflows float16; "
            "store the statistics at 32 bits"
        )
    return ratio.astype(np.float16), bfloat16_bits(std)


def in_units(ratio: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A mean stored in units of ``std`` (float16 ratios) as float32."""
    return (np.asarray(ratio, dtype=np.float64) * np.asarray(std, dtype=np.float32)).astype(np.float32)


def decode_statistics(ratio: np.ndarray, std_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 (mean, std) a 16-bit file stores."""
    std = from_bfloat16(std_bits)
    return in_units(ratio, std), std


def round_statistics(mean: np.ndarray, std: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) as the file stores them at ``bits`` (float32; unchanged at 32)."""
    check_stats_bits(bits)
    if bits == FLOAT_BITS:
        return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    return decode_statistics(*encode_statistics(mean, std))
