"""Decoding and resampling, with the checks that turn broken audio into one-line errors.

soundfile decodes by content (libsndfile reads the header, not the extension), so AIFF or
FLAC data behind a ``.wav`` name still loads. libsndfile quietly decodes what is there of a
WAV file cut short (a half-copied file reads as a shorter clip), so the WAV header is checked
first: a file holding fewer frames than its header promises is bad input ("truncated"). soxr's high-quality mode is what librosa uses
by default, so resampled audio matches the reference pipeline.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ser.errors import DataError

# The formats looked for in folders (corpora, `ser predict DIR`); decoding itself goes by content.
AUDIO_SUFFIXES = (".aif", ".aiff", ".flac", ".ogg", ".wav")


@dataclass(frozen=True)
class AudioChecks:
    """Thresholds below which a clip carries no usable speech."""

    min_duration_s: float = 0.1
    silence_peak: float = 1e-4


def _resample(path: Path, samples: np.ndarray, native_rate: int, sample_rate: int) -> np.ndarray:
    # Imported here so that the on-device runtime needs soxr only for audio at another rate.
    try:
        import soxr
    except ImportError as exc:
        raise DataError(
            f"{path}: is {native_rate} Hz, the model expects {sample_rate} Hz; resampling needs `pip install soxr`"
        ) from exc
    return soxr.resample(samples, native_rate, sample_rate, quality="HQ")


_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streamed WAVs whose writer never came back to fill in the size
_FRAMED = (1, 3, 6, 7, 0xFFFE)  # PCM, float, A-law, µ-law, extensible: one block per frame


def wav_shortfall(path: str | Path) -> tuple[int, int, int] | None:
    """``(frames promised, frames present, sample rate)`` of a RIFF/RIFX/RF64 WAV cut short, else None.

    Reads only the chunk headers up to ``data``; anything that is not a well-formed WAV header
    returns None and is left to the decoder to judge.
    """
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        head = fh.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        block_align = rate = 0
        fmt = None
        ds64_data = None
        position = 12
        while position + 8 <= size:
            fh.seek(position)
            chunk_id, chunk_size = struct.unpack(endian + "4sI", fh.read(8))
            if chunk_id == b"ds64" and chunk_size >= 16:
                ds64_data = struct.unpack("<QQ", fh.read(16))[1]
            elif chunk_id == b"fmt " and chunk_size >= 14:
                fmt, _, rate, _, block_align = struct.unpack(endian + "HHIIH", fh.read(14))
            elif chunk_id == b"data":
                if head[:4] == b"RF64" and chunk_size == 0xFFFFFFFF and ds64_data is not None:
                    chunk_size = ds64_data
                elif chunk_size in _UNKNOWN_SIZES:
                    return None
                if fmt not in _FRAMED or block_align <= 0 or rate <= 0:
                    return None  # compressed (ADPCM, …): blocks are not frames; left to the decoder
                promised, present = chunk_size // block_align, (size - position - 8) // block_align
                return (promised, present, rate) if present < promised else None
            position += 8 + chunk_size + (chunk_size & 1)
    return None


def load_audio(path: str | Path, sample_rate: int, checks: AudioChecks = AudioChecks()) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate``; raises ``DataError`` on bad input."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        shortfall = None if path.is_dir() else wav_shortfall(path)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file does not exist") from exc
    except (OSError, struct.error):
        shortfall = None  # unreadable or odd: the decoder below says what is wrong
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not an audio file")
    if shortfall is not None:
        promised, present, rate = shortfall
        raise DataError(
            f"{path}: truncated WAV file: its header promises {promised} frames ({promised / rate:.2f} s) but the "
            f"file holds {present} ({present / rate:.2f} s); copy or export it again"
        )
    try:
        data, native_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot decode audio ({reason}); is it a WAV/FLAC/AIFF/OGG file?") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    samples = data.mean(axis=1)
    duration = len(samples) / native_rate
    if duration < checks.min_duration_s:
        raise DataError(
            f"{path}: clip is {duration:.3f} s long, shorter than the minimum "
            f"{checks.min_duration_s} s (data.min_duration_s)"
        )
    if not np.isfinite(samples).all():
        raise DataError(f"{path}: audio contains NaN or infinite samples")
    if float(np.abs(samples).max()) < checks.silence_peak:
        raise DataError(f"{path}: clip is silent (peak below {checks.silence_peak})")
    if native_rate != sample_rate:
        samples = _resample(path, samples, native_rate, sample_rate)
    return np.ascontiguousarray(samples, dtype=np.float32)
