"""Generate a self-contained C99 library from a ``.serq`` model (``ser export RUN --c DIR``); numpy only.

The library is the numpy runtime (``features.py`` + ``model.py``) in C: the packed weight codes
as ``const`` arrays at each layer's own width with the layer's grid, the standardisation (and
population) statistics, each mel filter's nonzero span, a quarter-wave cosine table (FFT
twiddles and the Hann window), the DCT as a table of its 4·n_mels distinct values, and the
positions of the chroma filterbank's non-negligible weights (their values are computed at
start-up into static RAM), and for the pitch and spectral parts YIN's lag range and the contrast
sub-bands' bin ranges and quantile counts. No heap, libm only. See ser/runtime/c/ser.h for the API.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ser.dsp import filters
from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.runtime import model_file, packing

TEMPLATES = ("ser.h", "ser.c", "main.c", "Makefile")
MCU_TEMPLATES = ("startup.c", "probe.c", "mps2_an386.ld")
CHROMA_KEEP = 1e-7  # chroma weights below this fraction of their bin's largest are left out (they add < 1e-6)
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
    """Each mel filter's first bin, length and offset into one weight array (its nonzero span only)."""
    bank = filters.mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
    starts, lengths, offsets, weights = [], [], [], []
    for row in bank:
        nz = np.flatnonzero(row)
        first, length = (int(nz[0]), int(nz[-1] - nz[0] + 1)) if nz.size else (0, 0)
        starts.append(first), lengths.append(length), offsets.append(sum(len(w) for w in weights))
        weights.append(row[first : first + length])
    return np.array(starts), np.array(lengths), np.array(offsets), np.concatenate(weights).astype(np.float32)


def chroma_runs(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per FFT bin, the circular run of chroma classes whose weight is kept: first class and count."""
    bank = filters.chroma_filterbank(config.sample_rate, config.n_fft, config.n_chroma, config.tuning)
    n = config.n_chroma
    firsts, counts = [], []
    for column in bank.T:
        keep = column > CHROMA_KEEP * column.max()
        count = int(keep.sum())
        starts = [c for c in range(n) if keep[c] and not keep[(c - 1) % n]]
        if count == n or len(starts) != 1:  # everything, or not one circular run: keep all
            firsts.append(0), counts.append(n)
        else:
            firsts.append(starts[0]), counts.append(count)
    return np.array(firsts), np.array(counts)


def yin_lags(config: FeatureConfig) -> tuple[int, int]:
    return filters.yin_lags(config.sample_rate, config.n_fft, config.f0_min, config.f0_max)


def contrast_spans(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each contrast sub-band's bins [start, stop) and how many of its smallest / largest magnitudes
    make its valley / peak (``ser.dsp.filters.contrast_bands``), as arrays for the C tables."""
    bands = filters.contrast_bands(config.sample_rate, config.n_fft, config.contrast_fmin, config.contrast_bands,
                                   config.contrast_quantile)
    return tuple(np.array(column) for column in zip(*bands))


def _check(config: FeatureConfig, header: dict) -> None:
    n = config.n_fft
    if n < 8 or n & (n - 1):
        raise SERError(f"the C runtime needs n_fft to be a power of two (>= 8), this model has {n}")
    if not config.pooled or config.deltas:
        raise SERError("the C runtime supports pooled features (pooling=stats) without deltas; this model has "
                       f"pooling={config.pooling}, deltas={config.deltas}")
    if config.hop_length < 1 or n // 2 + 1 > 65535:
        raise SERError("the C runtime needs hop_length >= 1 and n_fft <= 131068")
    if "pitch" in config.parts:
        lo, hi = yin_lags(config)
        if lo < 1 or hi - lo < 2:
            raise SERError(f"the C runtime needs YIN's lag range sample_rate/f0_max .. sample_rate/f0_min to hold 3 lags "
                           f"or more (data.features.f0_min={config.f0_min}, f0_max={config.f0_max}); it is {lo}..{hi}")
    for spec in header["layers"]:
        if len(spec["shape"]) != 2:
            raise SERError(f"the C runtime runs dense layers; layer {spec['name']} has shape {spec['shape']}")


def generate(model_path: str | Path, out_dir: str | Path, mcu: bool = True) -> dict:
    """Write the C library of ``model_path`` into ``out_dir``; returns a summary (sizes in bytes)."""
    header, arrays = model_file.read(model_path)
    config = FeatureConfig(**header["features"])
    _check(config, header)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    speaker = header.get("normalize", {}).get("kind") == "speaker"
    classes = list(header["classes"])
    layers = header["layers"]
    n_fft, n_mels = config.n_fft, config.n_mels
    bins = n_fft // 2 + 1
    parts, stats = list(config.parts), list(config.stats)
    has_mfcc, has_chroma = "mfcc" in parts, "chroma" in parts
    has_pitch, has_spectral = "pitch" in parts, "spectral" in parts
    yin_lo, yin_hi = yin_lags(config) if has_pitch else (1, 3)
    if has_spectral:
        band_starts, band_stops, band_counts = contrast_spans(config)
    else:
        band_starts, band_stops, band_counts = np.zeros(1, int), np.ones(1, int), np.ones(1, int)
    max_count = int(band_counts.max())
    needs_db = has_mfcc or ("mel" in parts and config.mel_db)
    dim = config.dim
    widths = [dim] + [spec["shape"][0] for spec in layers]
    starts, lengths, offsets, mel_weights = mel_spans(config)
    firsts, counts = chroma_runs(config) if has_chroma else (np.zeros(bins), np.zeros(bins))
    chroma_nnz = int(counts.sum())

    twiddle_n = 2 * n_fft if has_pitch else n_fft  # YIN's autocorrelation: a real FFT of 2·n_fft
    scratch = 4 * (twiddle_n + bins + 2 * n_mels + config.frame_dim + 2 * max(widths)) + 16 * config.frame_dim + 4 * chroma_nnz + 8
    scratch += 4 * 3 if has_pitch else 0
    scratch += 4 * (2 * max_count + 1) if has_spectral else 0
    h = [
        "/* Generated by `ser export --c` from a .serq model: settings of that model. Do not edit. */",
        "#ifndef SER_MODEL_H", "#define SER_MODEL_H", "",
        f"#define SER_SAMPLE_RATE {config.sample_rate}", f"#define SER_N_FFT {n_fft}", f"#define SER_TWIDDLE_N {twiddle_n}", f"#define SER_HOP {config.hop_length}",
        f"#define SER_N_MELS {n_mels}", f"#define SER_N_MFCC {config.n_mfcc}", f"#define SER_N_CHROMA {config.n_chroma}",
        f"#define SER_TOP_DB {float(config.top_db)!r}", f"#define SER_TUNING {float(config.tuning)!r}",
        f"#define SER_CHROMA_POWER {float(config.chroma_power)!r}f",
        f"#define SER_CHROMA_POWER_IS_2 {int(config.chroma_power == 2.0)}",
        f"#define SER_HAS_MFCC {int(has_mfcc)}", f"#define SER_HAS_CHROMA {int(has_chroma)}",
        f"#define SER_NEEDS_DB {int(needs_db)}", f"#define SER_NEEDS_MEL {int(has_mfcc or 'mel' in parts)}",
        f"#define SER_HAS_PITCH {int(has_pitch)}", f"#define SER_HAS_SPECTRAL {int(has_spectral)}",
        f"#define SER_YIN_LO {yin_lo}", f"#define SER_YIN_HI {yin_hi}",
        f"#define SER_YIN_THRESHOLD {float(config.yin_threshold)!r}f",
        f"#define SER_VOICED_ABOVE {float(1 - config.voicing_threshold)!r}f",
        f"#define SER_LOG_F0_CHANNEL {config.channel('pitch', 'log_f0') if has_pitch else -1}",
        f"#define SER_ROLL_PERCENT {float(config.roll_percent)!r}f",
        f"#define SER_CONTRAST_BANDS {len(band_counts)}", f"#define SER_CONTRAST_MAX_COUNT {max_count}", f"#define SER_MEL_DB {int(config.mel_db)}", f"#define SER_CHROMA_NNZ {max(chroma_nnz, 1)}",
        f"#define SER_N_PARTS {len(parts)}", f"#define SER_N_STATS {len(stats)}",
        f"#define SER_FRAME_DIM {config.frame_dim}", f"#define SER_FEATURE_DIM {dim}",
        f"#define SER_N_CLASSES {len(classes)}", f"#define SER_N_LAYERS {len(layers)}",
        f"#define SER_MAX_WIDTH {max(widths)}", f"#define SER_SPEAKER {int(speaker)}",
        f"#define SER_SCRATCH_BYTES_ESTIMATE {scratch}", "",
        "typedef struct {",
        "    int in, out, bits;",
        "    int grid;      /* 0: symmetric, 1: full (ser/dsp/grid.py) */",
        "    int n_scales;  /* 1, or one per output row */",
        "    int relu;",
        "    const unsigned char *codes; /* in*out codes of `bits` bits, one continuous LSB-first stream, row-major */",
        "    const float *scales;",
        "    const float *bias;  /* NULL: none */",
        "} ser_layer_t;", "",
        "extern const ser_layer_t ser_layers[SER_N_LAYERS];",
        "extern const char *const ser_class_names[SER_N_CLASSES];",
        "extern const int ser_parts[SER_N_PARTS];", "extern const int ser_stats[SER_N_STATS];",
        "extern const float ser_feature_mean[SER_FEATURE_DIM];", "extern const float ser_feature_std[SER_FEATURE_DIM];",
        "extern const float ser_population_mean[];", "extern const float ser_population_std[];",
        f"extern const float ser_cos_quarter[{twiddle_n // 4 + 1}];",
        f"extern const unsigned short ser_mel_start[{n_mels}];", f"extern const unsigned short ser_mel_length[{n_mels}];",
        f"extern const unsigned short ser_mel_offset[{n_mels}];", "extern const float ser_mel_weights[];",
        f"extern const float ser_dct_table[{4 * n_mels}];", "extern const float ser_dct0;",
        f"extern const unsigned short ser_contrast_start[{len(band_counts)}];",
        f"extern const unsigned short ser_contrast_stop[{len(band_counts)}];",
        f"extern const unsigned short ser_contrast_count[{len(band_counts)}];",
        f"extern const unsigned char ser_chroma_first[{bins}];", f"extern const unsigned char ser_chroma_count[{bins}];",
        "", "#endif /* SER_MODEL_H */", "",
    ]
    (out / "ser_model.h").write_text("\n".join(h))

    c = ["/* Generated by `ser export --c`: the model's constants (flash). Do not edit. */",
         '#include "ser_model.h"', "#include <stddef.h>", ""]
    grids = {"symmetric": 0, "full": 1}
    layer_rows, weight_bytes = [], 0
    for i, spec in enumerate(layers):
        name, bits = spec["name"], int(spec["bits"])
        grid = spec.get("grid", "symmetric")
        codes = arrays[f"{name}.codes"]
        blob = packing.pack(codes.ravel(), bits)
        weight_bytes += len(blob)
        scales = arrays[f"{name}.scales"].ravel()
        c.append(f"/* {name}: {spec['shape'][0]}x{spec['shape'][1]}, {bits} bit(s), {grid} grid */")
        c.append(_array("unsigned char", f"codes_{i}", _ints(np.frombuffer(blob, np.uint8)), len(blob)).replace("const", "static const", 1))
        c.append(_array("float", f"scales_{i}", _f(scales), scales.size).replace("const", "static const", 1))
        bias = arrays.get(f"{name}.bias")
        if bias is not None:
            c.append(_array("float", f"bias_{i}", _f(bias), bias.size).replace("const", "static const", 1))
        layer_rows.append(f"    {{{spec['shape'][1]}, {spec['shape'][0]}, {bits}, {grids[grid]}, {scales.size}, "
                          f"{int(spec['activation'] == 'relu')}, codes_{i}, scales_{i}, {f'bias_{i}' if bias is not None else 'NULL'}}}")
    c.append("const ser_layer_t ser_layers[SER_N_LAYERS] = {\n" + ",\n".join(layer_rows) + "\n};\n")
    names = ", ".join('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"' for name in classes)
    c.append(f"const char *const ser_class_names[SER_N_CLASSES] = {{{names}}};\n")
    c.append(_array("int", "ser_parts", _ints([PART_IDS[p] for p in parts]), len(parts)))
    c.append(_array("int", "ser_stats", _ints([STAT_IDS[s] for s in stats]), len(stats)))
    c.append(_array("float", "ser_feature_mean", _f(arrays["feature_mean"]), dim))
    c.append(_array("float", "ser_feature_std", _f(arrays["feature_std"]), dim))
    if speaker:
        c.append(_array("float", "ser_population_mean", _f(arrays["population_mean"]), dim))
        c.append(_array("float", "ser_population_std", _f(arrays["population_std"]), dim))
    else:
        c.append("const float ser_population_mean[1] = {0.0f};\nconst float ser_population_std[1] = {1.0f};\n")
    k = np.arange(twiddle_n // 4 + 1)
    c.append(_array("float", "ser_cos_quarter", _f(np.cos(2 * np.pi * k / twiddle_n)), k.size))
    c.append(_array("unsigned short", "ser_mel_start", _ints(starts), n_mels))
    c.append(_array("unsigned short", "ser_mel_length", _ints(lengths), n_mels))
    c.append(_array("unsigned short", "ser_mel_offset", _ints(offsets), n_mels))
    c.append(_array("float", "ser_mel_weights", _f(mel_weights), mel_weights.size))
    j = np.arange(4 * n_mels)
    c.append(_array("float", "ser_dct_table", _f(np.cos(np.pi * j / (2 * n_mels)) * np.sqrt(2.0 / n_mels)), j.size))
    c.append(f"const float ser_dct0 = {_f([filters.dct_matrix(1, n_mels)[0, 0]])};\n")
    c.append(_array("unsigned short", "ser_contrast_start", _ints(band_starts), len(band_counts)))
    c.append(_array("unsigned short", "ser_contrast_stop", _ints(band_stops), len(band_counts)))
    c.append(_array("unsigned short", "ser_contrast_count", _ints(band_counts), len(band_counts)))
    c.append(_array("unsigned char", "ser_chroma_first", _ints(firsts), bins))
    c.append(_array("unsigned char", "ser_chroma_count", _ints(counts), bins))
    (out / "ser_model.c").write_text("\n".join(c))

    source = resources.files("ser.runtime") / "c"
    for name in TEMPLATES:
        (out / name).write_text((source / name).read_text())
    if mcu:
        (out / "mcu").mkdir(exist_ok=True)
        for name in MCU_TEMPLATES:
            (out / "mcu" / name).write_text((source / "mcu" / name).read_text())
    return {"weight_bytes": weight_bytes, "mel_weights": int(mel_weights.size), "chroma_weights": chroma_nnz,
            "scratch_bytes": scratch, "feature_dim": dim, "speaker": speaker}

