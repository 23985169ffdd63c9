"""Generate a self-contained C99 library from a ``.serq`` model (``ser export RUN --c DIR``); numpy only.

It works from the model's typed contents (``ser.runtime.serq.SerqModel``): the exporter's, in memory, or a
file's (``SerqModel.read``), so the C constants are exactly the ``.serq`` file's.

The library is the numpy runtime (``features.py`` + ``model.py``) in C: the packed weight codes
as ``const`` arrays at each layer's own width (each row from a byte boundary) with the layer's grid,
the standardisation (and population) statistics (16-bit where the file stores them so), each mel
filter's nonzero span (16-bit weights, a scale per filter), the chroma filterbank's non-negligible
weights as spans of bins per class, a quarter-wave cosine table (FFT twiddles and the Hann window),
the DCT's cosines, and for the pitch and spectral parts YIN's lag range and the contrast sub-bands'
bin ranges and quantile counts; for a model whose features need no whole clip, the streaming windows
(``ser listen``'s) and a firmware for ST's B-L475E-IOT01A (``stm32l4/``). No heap, libm only. See
ser/runtime/c/ser.h for the API and docs/deploying.md for the measurements.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ser.dsp import filters, storage
from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.runtime import packing
from ser.runtime.listen import window_samples
from ser.runtime.serq import LayerSpec, SerqModel

TEMPLATES = ("ser.h", "ser.c", "main.c", "Makefile")
MCU_TEMPLATES = ("startup.c", "probe.c", "bench.c", "mps2_an386.ld")
BOARD_TEMPLATES = (
    "README.md",
    "Makefile",
    "board.h",
    "board.c",
    "main.c",
    "startup.c",
    "stm32l475vg.ld",
)  # streaming models
CHROMA_KEEP = (
    1e-4  # chroma weights below this fraction of their bin's largest are left out (pooled chroma moves < 3e-5)
)
PART_IDS = {"mfcc": 0, "chroma": 1, "mel": 2, "pitch": 3, "spectral": 4}
STAT_IDS = {"mean": 0, "std": 1}


def _f(values) -> str:
    """float32 values as exact C literals (9 significant digits round-trip a float32)."""
    return ", ".join(f"{float(v):.9e}f" for v in np.asarray(values, dtype=np.float32).ravel())


def _ints(values) -> str:
    return ", ".join(str(int(v)) for v in np.asarray(values).ravel())


def _array(ctype: str, name: str, body: str, count: int) -> str:
    return f"const {ctype} {name}[{max(count, 1)}] = {{{body or '0'}}};\n"


def mel_spans(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each mel filter's first bin, length (its nonzero span only) and scale, and its weights one filter after
    another as 16-bit fractions of the filter's largest: mel dB within 2e-4 dB of float32 weights, half the flash."""
    bank = filters.mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
    starts, lengths, scales, weights = [], [], [], []
    for row in bank:
        nz = np.flatnonzero(row)
        first, length = (int(nz[0]), int(nz[-1] - nz[0] + 1)) if nz.size else (0, 0)
        span = row[first : first + length].astype(np.float64)
        scale = span.max() / 65535 if length else 1.0
        starts.append(first), lengths.append(length), scales.append(scale)
        weights.extend(np.rint(span / scale))
    return np.array(starts), np.array(lengths), np.array(scales, dtype=np.float32), np.array(weights, dtype=np.uint16)


def chroma_spans(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The chroma filterbank's non-negligible weights (above ``CHROMA_KEEP`` of their bin's largest), as runs of
    neighbouring FFT bins per class: each span's class, first bin and length, and the weights span by span.
    A class's weights sit in one run per octave (bins as wide as a class or narrower) or cover the low bins.
    (16-bit weights, one scale per span, would save a third of the flash but move pooled chroma by up to 3e-4
    on real speech: the tails of a span's Gaussians lose their precision.)"""
    bank = filters.chroma_filterbank(config.sample_rate, config.n_fft, config.n_chroma, config.tuning)
    keep = bank > CHROMA_KEEP * bank.max(axis=0, keepdims=True)
    classes, starts, lengths, weights = [], [], [], []
    for c, row in enumerate(keep):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        for first, stop in zip(edges[::2], edges[1::2]):
            classes.append(c), starts.append(int(first)), lengths.append(int(stop - first))
            weights.extend(bank[c, first:stop])
    return np.array(classes), np.array(starts), np.array(lengths), np.array(weights, dtype=np.float32)


def cosine_quarter(period: int) -> np.ndarray:
    """cos(2πk/period) for 0 <= k <= period/4: the FFTs' twiddles (cos(π/2) exactly 0)."""
    values = np.cos(2 * np.pi * np.arange(period // 4 + 1) / period)
    values[-1] = 0.0
    return values


def hann_half(n_fft: int) -> np.ndarray:
    """The first half (samples 0..n_fft/2) of the periodic Hann window, as the numpy runtime computes it."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft // 2 + 1) / n_fft)).astype(np.float32)


def yin_lags(config: FeatureConfig) -> tuple[int, int]:
    return filters.yin_lags(config.sample_rate, config.n_fft, config.f0_min, config.f0_max)


def contrast_spans(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each contrast sub-band's bins [start, stop) and how many of its smallest / largest magnitudes
    make its valley / peak (``ser.dsp.filters.contrast_bands``), as arrays for the C tables."""
    bands = filters.contrast_bands(
        config.sample_rate, config.n_fft, config.contrast_fmin, config.contrast_bands, config.contrast_quantile
    )
    return tuple(np.array(column) for column in zip(*bands))


def _statistics16(arrays: dict, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Statistics ``prefix``_mean/std as a 16-bit file stores them (``ser.dsp.storage``: float16 mean in units of
    the bfloat16 deviation), when the model's decoded values are exactly those (else None: float32)."""
    mean, std = arrays[f"{prefix}_mean"], arrays[f"{prefix}_std"]
    try:
        ratio, std_bits = storage.encode_statistics(mean, std)
    except ValueError:
        return None
    decoded = storage.decode_statistics(ratio, std_bits)
    if not (np.array_equal(decoded[0], mean) and np.array_equal(decoded[1], std)):
        return None
    return ratio.view(np.uint16), std_bits


def _check(config: FeatureConfig, layers: list[LayerSpec]) -> None:
    n = config.n_fft
    if n < 8 or n & (n - 1):
        raise SERError(f"the C runtime needs n_fft to be a power of two (>= 8), this model has {n}")
    if not config.pooled or config.deltas:
        raise SERError(
            "the C runtime supports pooled features (pooling=stats) without deltas; this model has "
            f"pooling={config.pooling}, deltas={config.deltas}"
        )
    if config.hop_length < 1 or n // 2 + 1 > 65535:
        raise SERError("the C runtime needs hop_length >= 1 and n_fft <= 131068")
    if "pitch" in config.parts:
        lo, hi = yin_lags(config)
        if lo < 1 or hi - lo < 2:
            raise SERError(
                f"the C runtime needs YIN's lag range sample_rate/f0_max .. sample_rate/f0_min to hold 3 lags "
                f"or more (data.features.f0_min={config.f0_min}, f0_max={config.f0_max}); it is {lo}..{hi}"
            )
    for spec in layers:
        if len(spec.shape) != 2:
            raise SERError(f"the C runtime runs dense layers; layer {spec.name} has shape {list(spec.shape)}")


def generate(
    model: SerqModel, out_dir: str | Path, mcu: bool = True, window_s: float = 2.0, hop_s: float = 0.5
) -> dict:
    """Write the C library of ``model`` into ``out_dir``; returns a summary (sizes in bytes). ``window_s``
    and ``hop_s``: the streaming API's windows, as ``ser listen --window --hop`` cuts them."""
    header, arrays = model.header, model.arrays
    config = header.features
    _check(config, header.layers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    speaker = header.normalize == "speaker"
    prior_weight = header.prior_weight
    classes = list(header.classes)
    layers = header.layers
    n_fft, n_mels = config.n_fft, config.n_mels
    parts, stats = list(config.parts), list(config.stats)
    has_mfcc, has_chroma = "mfcc" in parts, "chroma" in parts
    has_pitch, has_spectral = "pitch" in parts, "spectral" in parts
    yin_stft = has_pitch and config.yin_acf == "stft"
    if yin_stft:
        yin_step, yin_lo, yin_hi = filters.yin_stft_lags(config.sample_rate, n_fft, config.f0_min, config.f0_max)
    else:
        yin_step, (yin_lo, yin_hi) = 1, (yin_lags(config) if has_pitch else (1, 3))
    if has_spectral:
        band_starts, band_stops, band_counts = contrast_spans(config)
    else:
        band_starts, band_stops, band_counts = np.zeros(1, int), np.ones(1, int), np.ones(1, int)
    max_count = int(band_counts.max())
    needs_db = has_mfcc or ("mel" in parts and config.mel_db)
    # One pass suffices unless a dB floor hangs on the clip's peak: then only whole clips (ser_predict).
    streaming = config.db_floor == "absolute" or not (needs_db or has_spectral)
    dim = config.dim
    widths = [dim] + [spec.shape[0] for spec in layers]
    starts, lengths, mel_scales, mel_weights = mel_spans(config)
    spans = chroma_spans(config) if has_chroma else (np.zeros(1, int),) * 3 + (np.zeros(1),)
    chroma_classes, chroma_starts, chroma_lengths, chroma_weights = spans
    stats16 = {
        prefix: _statistics16(arrays, prefix) for prefix in (("feature", "population") if speaker else ("feature",))
    }
    bits_used = sum(1 << (bits - 1) for bits in {spec.bits for spec in layers})  # one bit per width
    window, hop = window_samples(config, window_s, hop_s)

    stat_type = {
        prefix: "unsigned short" if stats16.get(prefix) is not None else "float" for prefix in ("feature", "population")
    }
    # The FFT buffer: the frame's spectrum, then power and magnitude of bins 0..n/2 (n + 2 floats); YIN's inverse
    # FFT (stft) behind bin K, or exact YIN's FFT of the frame padded to 2n.
    twiddle_n = 2 * n_fft if has_pitch and not yin_stft else n_fft
    yin_k = n_fft // (2 * yin_step)
    fft_floats = 2 * n_fft if has_pitch and not yin_stft else max(n_fft + 2, 4 * yin_k + 2 if yin_stft else 0)
    blocks = [b.start for b in config.block_slices()] + [dim]
    h = [
        "/* Generated by `ser export --c` from a .serq model: settings of that model. Do not edit. */",
        "#ifndef SER_MODEL_H",
        "#define SER_MODEL_H",
        "",
        f"#define SER_SAMPLE_RATE {config.sample_rate}",
        f"#define SER_N_FFT {n_fft}",
        f"#define SER_TWIDDLE_N {twiddle_n}",
        f"#define SER_FFT_FLOATS {fft_floats}",
        f"#define SER_HOP {config.hop_length}",
        f"#define SER_N_MELS {n_mels}",
        f"#define SER_N_MFCC {config.n_mfcc}",
        f"#define SER_N_CHROMA {config.n_chroma}",
        f"#define SER_TOP_DB {float(config.top_db)!r}",
        f"#define SER_DB_ABSOLUTE {int(config.db_floor == 'absolute')}",
        f"#define SER_CHROMA_POWER {float(config.chroma_power)!r}f",
        f"#define SER_CHROMA_POWER_IS_2 {int(config.chroma_power == 2.0)}",
        f"#define SER_CHROMA_POWER_IS_1 {int(config.chroma_power == 1.0)}",
        f"#define SER_HAS_MFCC {int(has_mfcc)}",
        f"#define SER_HAS_CHROMA {int(has_chroma)}",
        f"#define SER_NEEDS_DB {int(needs_db)}",
        f"#define SER_NEEDS_MEL {int(has_mfcc or 'mel' in parts)}",
        f"#define SER_HAS_MEL {int('mel' in parts)}",
        f"#define SER_HAS_PITCH {int(has_pitch)}",
        f"#define SER_HAS_SPECTRAL {int(has_spectral)}",
        f"#define SER_YIN_STFT {int(yin_stft)}",
        f"#define SER_YIN_STEP {yin_step}",
        f"#define SER_YIN_LO {yin_lo}",
        f"#define SER_YIN_HI {yin_hi}",
        f"#define SER_YIN_THRESHOLD {float(config.yin_threshold)!r}f",
        f"#define SER_VOICED_ABOVE {float(1 - config.voicing_threshold)!r}f",
        f"#define SER_LOG_F0_CHANNEL {config.channel('pitch', 'log_f0') if has_pitch else -1}",
        f"#define SER_ROLL_PERCENT {float(config.roll_percent)!r}f",
        f"#define SER_CONTRAST_BANDS {len(band_counts)}",
        f"#define SER_CONTRAST_MAX_COUNT {max_count}",
        f"#define SER_MEL_DB {int(config.mel_db)}",
        f"#define SER_CHROMA_NNZ {chroma_weights.size}",
        f"#define SER_CHROMA_SPANS {len(chroma_classes)}",
        f"#define SER_N_PARTS {len(parts)}",
        f"#define SER_N_STATS {len(stats)}",
        f"#define SER_HAS_STD {int('std' in stats)}",
        f"#define SER_FRAME_DIM {config.frame_dim}",
        f"#define SER_FEATURE_DIM {dim}",
        f"#define SER_N_CLASSES {len(classes)}",
        f"#define SER_N_LAYERS {len(layers)}",
        f"#define SER_MAX_WIDTH {max(widths)}",
        f"#define SER_SPEAKER {int(speaker)}",
        f"#define SER_PRIOR_WEIGHT {prior_weight!r}",
        f"#define SER_N_BLOCKS {len(blocks) - 1}",
        f"#define SER_STREAMING {int(streaming)}",
        f"#define SER_RECORDS {1 << (n_fft // config.hop_length + 1).bit_length()}",
        f"#define SER_FEATURE_STATS16 {int(stats16['feature'] is not None)}",
        f"#define SER_POPULATION_STATS16 {int(stats16.get('population') is not None)}",
        f"#define SER_BITS_USED {bits_used}",
        "",
        f"/* Streaming windows (`ser listen --window {window_s:g} --hop {hop_s:g}`), in samples: the hop is whole frames. */",
        "#ifndef SER_WINDOW",
        f"#define SER_WINDOW {window}",
        "#endif",
        "#ifndef SER_WINDOW_HOP",
        f"#define SER_WINDOW_HOP {hop}",
        "#endif",
        "",
        "typedef struct {",
        "    int in, out, bits;",
        "    int grid;      /* 0: symmetric, 1: full (ser/dsp/grid.py) */",
        "    int n_scales;  /* 1, or one per output row */",
        "    int relu;",
        "    const unsigned char *codes; /* in*out codes of `bits` bits, one continuous LSB-first stream, row-major */",
        "    const float *scales;",
        "    const float *bias;  /* NULL: none */",
        "} ser_layer_t;",
        "",
        "extern const ser_layer_t ser_layers[SER_N_LAYERS];",
        "extern const char *const ser_class_names[SER_N_CLASSES];",
        "extern const int ser_parts[SER_N_PARTS];",
        "extern const int ser_stats[SER_N_STATS];",
        *(
            f"extern const {stat_type[prefix]} ser_{prefix}_{stat}[];"
            for prefix in ("feature", "population")
            for stat in ("mean", "std")
        ),
        f"extern const unsigned short ser_blocks[{len(blocks)}];",
        f"extern const float ser_cos_quarter[{twiddle_n // 4 + 1}];",
        f"extern const float ser_window[{n_fft // 2 + 1}];",
        f"extern const unsigned short ser_mel_start[{n_mels}];",
        f"extern const unsigned short ser_mel_length[{n_mels}];",
        f"extern const float ser_mel_scale[{n_mels}];",
        "extern const unsigned short ser_mel_weights[];",
        f"extern const float ser_dct_table[{4 * n_mels}];",
        "extern const float ser_dct0;",
        "extern const float ser_dct_scale;",
        f"extern const unsigned short ser_contrast_start[{len(band_counts)}];",
        f"extern const unsigned short ser_contrast_stop[{len(band_counts)}];",
        f"extern const unsigned short ser_contrast_count[{len(band_counts)}];",
        "extern const unsigned char ser_chroma_class[SER_CHROMA_SPANS];",
        "extern const unsigned short ser_chroma_start[SER_CHROMA_SPANS];",
        "extern const unsigned short ser_chroma_length[SER_CHROMA_SPANS];",
        "extern const float ser_chroma_weights[SER_CHROMA_NNZ];",
        "",
        "#endif /* SER_MODEL_H */",
        "",
    ]
    (out / "ser_model.h").write_text("\n".join(h))

    c = [
        "/* Generated by `ser export --c`: the model's constants (flash). Do not edit. */",
        '#include "ser_model.h"',
        "#include <stddef.h>",
        "",
    ]
    grids = {"symmetric": 0, "full": 1}
    layer_rows, weight_bytes = [], 0
    for i, spec in enumerate(layers):
        name, bits, grid = spec.name, spec.bits, spec.grid
        codes = arrays[f"{name}.codes"].reshape(spec.shape)
        blob = b"".join(packing.pack(row, bits) for row in codes)  # each row from a byte boundary
        weight_bytes += len(blob)
        scales = arrays[f"{name}.scales"].ravel()
        c.append(f"/* {name}: {spec.shape[0]}x{spec.shape[1]}, {bits} bit(s), {grid} grid */")
        c.append(
            _array("unsigned char", f"codes_{i}", _ints(np.frombuffer(blob, np.uint8)), len(blob)).replace(
                "const", "static const", 1
            )
        )
        c.append(_array("float", f"scales_{i}", _f(scales), scales.size).replace("const", "static const", 1))
        bias = arrays.get(f"{name}.bias")
        if bias is not None:
            c.append(_array("float", f"bias_{i}", _f(bias), bias.size).replace("const", "static const", 1))
        layer_rows.append(
            f"    {{{spec.shape[1]}, {spec.shape[0]}, {bits}, {grids[grid]}, {scales.size}, "
            f"{int(spec.activation == 'relu')}, codes_{i}, scales_{i}, {f'bias_{i}' if bias is not None else 'NULL'}}}"
        )
    c.append("const ser_layer_t ser_layers[SER_N_LAYERS] = {\n" + ",\n".join(layer_rows) + "\n};\n")
    names = ", ".join('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"' for name in classes)
    c.append(f"const char *const ser_class_names[SER_N_CLASSES] = {{{names}}};\n")
    c.append(_array("int", "ser_parts", _ints([PART_IDS[p] for p in parts]), len(parts)))
    c.append(_array("int", "ser_stats", _ints([STAT_IDS[s] for s in stats]), len(stats)))
    for prefix, narrow in stats16.items():
        for stat, values in zip(("mean", "std"), narrow or (arrays[f"{prefix}_mean"], arrays[f"{prefix}_std"])):
            c.append(_array(stat_type[prefix], f"ser_{prefix}_{stat}", _ints(values) if narrow else _f(values), dim))
    if not speaker:
        c.append("const float ser_population_mean[1] = {0.0f};\nconst float ser_population_std[1] = {1.0f};\n")
    c.append(_array("unsigned short", "ser_blocks", _ints(blocks), len(blocks)))
    c.append(_array("float", "ser_cos_quarter", _f(cosine_quarter(twiddle_n)), twiddle_n // 4 + 1))
    c.append(_array("float", "ser_window", _f(hann_half(n_fft)), n_fft // 2 + 1))
    c.append(_array("unsigned short", "ser_mel_start", _ints(starts), n_mels))
    c.append(_array("unsigned short", "ser_mel_length", _ints(lengths), n_mels))
    c.append(_array("float", "ser_mel_scale", _f(mel_scales), n_mels))
    c.append(_array("unsigned short", "ser_mel_weights", _ints(mel_weights), mel_weights.size))
    j = np.arange(4 * n_mels)
    c.append(_array("float", "ser_dct_table", _f(np.cos(np.pi * j / (2 * n_mels)) * np.sqrt(2.0 / n_mels)), j.size))
    c.append(f"const float ser_dct0 = {_f([filters.dct_matrix(1, n_mels)[0, 0]])};\n")
    c.append(f"const float ser_dct_scale = {_f([np.sqrt(2.0 / n_mels)])};\n")
    c.append(_array("unsigned short", "ser_contrast_start", _ints(band_starts), len(band_counts)))
    c.append(_array("unsigned short", "ser_contrast_stop", _ints(band_stops), len(band_counts)))
    c.append(_array("unsigned short", "ser_contrast_count", _ints(band_counts), len(band_counts)))
    c.append(_array("unsigned char", "ser_chroma_class", _ints(chroma_classes), len(chroma_classes)))
    c.append(_array("unsigned short", "ser_chroma_start", _ints(chroma_starts), len(chroma_classes)))
    c.append(_array("unsigned short", "ser_chroma_length", _ints(chroma_lengths), len(chroma_classes)))
    c.append(_array("float", "ser_chroma_weights", _f(chroma_weights), chroma_weights.size))
    (out / "ser_model.c").write_text("\n".join(c))

    source = resources.files("ser.runtime") / "c"
    for name in TEMPLATES:
        (out / name).write_text((source / name).read_text())
    if mcu:
        (out / "mcu").mkdir(exist_ok=True)
        for name in MCU_TEMPLATES:
            (out / "mcu" / name).write_text((source / "mcu" / name).read_text())
        if streaming:
            (out / "stm32l4").mkdir(exist_ok=True)
            for name in BOARD_TEMPLATES:
                (out / "stm32l4" / name).write_text((source / "stm32l4" / name).read_text())
    return {
        "weight_bytes": weight_bytes,
        "mel_weights": int(mel_weights.size),
        "chroma_weights": int(chroma_weights.size),
        "feature_dim": dim,
        "speaker": speaker,
        "streaming": streaming,
        "window": window,
        "hop": hop,
    }
