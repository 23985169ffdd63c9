"""Decoding and resampling, with the checks that turn broken audio into one-line errors.

soundfile decodes by content (libsndfile reads the header, not the extension), so AIFF or
FLAC data behind a ``.wav`` name still loads. soxr's high-quality mode is what librosa uses
by default, so resampled audio matches the reference pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ser.errors import DataError


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
        raise DataError(f"{path}: is {native_rate} Hz, the model expects {sample_rate} Hz; resampling needs `pip install soxr`") from exc
    return soxr.resample(samples, native_rate, sample_rate, quality="HQ")


def load_audio(path: str | Path, sample_rate: int, checks: AudioChecks = AudioChecks()) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate``; raises ``DataError`` on bad input."""
    path = Path(path)
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
