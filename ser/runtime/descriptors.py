"""Pitch and spectral-shape descriptors of one utterance with numpy: ``ser.data.descriptors`` on the device.

Same definitions, same order, frames on the first axis: ``frames`` (T, n_fft) unwindowed,
``power`` (T, bins) of the windowed STFT and ``magnitude`` its square root; tests hold both to the torch extractor.
"""

from __future__ import annotations

import numpy as np

from ser.dsp import filters

__all__ = ["contrast", "mean_square", "spectral_shape", "yin", "yin_stft", "zero_crossing_rate"]


def yin(
    frames: np.ndarray, sample_rate: int, f0_min: float, f0_max: float, threshold: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Fundamental frequency (Hz) and periodicity per frame (``ser.data.descriptors.yin``)."""
    n = frames.shape[-1]
    lo, hi = filters.yin_lags(sample_rate, n, f0_min, f0_max)
    spectrum = np.fft.rfft(frames, n=2 * n)
    acf = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n=2 * n)[..., : hi + 1].astype(frames.dtype)
    energy = np.cumsum(frames[..., :hi] ** 2, axis=-1)
    diff = 2 * (acf[..., :1] - acf[..., 1:]) - energy
    period, periodicity = _dip(diff, acf[..., :1], lo, threshold)
    return (sample_rate / period).astype(frames.dtype), periodicity


def yin_stft(
    power: np.ndarray, sample_rate: int, n_fft: int, f0_min: float, f0_max: float, threshold: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """YIN on the STFT's power spectrum (``ser.data.descriptors.yin_stft``)."""
    step, lo, hi = filters.yin_stft_lags(sample_rate, n_fft, f0_min, f0_max)
    half = n_fft // (2 * step)
    acf = np.fft.irfft(power[..., : half + 1], n=2 * half)[..., : hi + 1].astype(power.dtype)
    period, periodicity = _dip(2 * (acf[..., :1] - acf[..., 1:]), acf[..., :1], lo, threshold)
    return (sample_rate / (step * period)).astype(power.dtype), periodicity


def _dip(diff: np.ndarray, acf0: np.ndarray, lo: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    running_mean = np.cumsum(diff, axis=-1) / np.arange(1, diff.shape[-1] + 1, dtype=diff.dtype)
    tiny = np.finfo(diff.dtype).tiny
    cmnd = diff[..., lo - 1 :] / (running_mean[..., lo - 1 :] + tiny)
    cmnd = np.where(acf0 > tiny, cmnd, np.ones_like(cmnd))
    trough = np.zeros(cmnd.shape, dtype=bool)
    trough[..., 1:-1] = (cmnd[..., 1:-1] < cmnd[..., :-2]) & (cmnd[..., 1:-1] <= cmnd[..., 2:])
    trough[..., 0] = cmnd[..., 0] < cmnd[..., 1]
    trough[..., -1] = cmnd[..., -1] < cmnd[..., -2]
    below = trough & (cmnd < threshold)
    index = np.where(below.any(-1), below.argmax(-1), cmnd.argmin(-1))
    period = lo + index + _parabolic_shift(cmnd, index)
    return period, np.clip(1 - cmnd.min(-1), 0, 1)


def _parabolic_shift(curve: np.ndarray, index: np.ndarray) -> np.ndarray:
    inner = np.clip(index, 1, curve.shape[-1] - 2)
    left, mid, right = (np.take_along_axis(curve, (inner + k)[..., None], -1)[..., 0] for k in (-1, 0, 1))
    a, b = right + left - 2 * mid, (right - left) / 2
    shift = np.where(np.abs(b) < np.abs(a), -b / np.where(a == 0, 1, a), 0)
    return np.where(index == inner, shift, 0)


def zero_crossing_rate(frames: np.ndarray, threshold: float = 1e-10) -> np.ndarray:
    negative = frames < -threshold
    return (negative[..., 1:] != negative[..., :-1]).sum(-1).astype(frames.dtype) / frames.shape[-1]


def mean_square(power: np.ndarray, n_fft: int) -> np.ndarray:
    edges = power[..., 0] + (power[..., -1] if n_fft % 2 == 0 else 0)
    return (2 * power.sum(-1) - edges) / np.float32(n_fft**2)


def spectral_shape(
    power: np.ndarray, magnitude: np.ndarray, sample_rate: int, roll_percent: float = 0.85, amin: float = 1e-10
) -> np.ndarray:
    """Centroid, bandwidth, roll-off (Hz) and flatness: (T, 4)."""
    bins = power.shape[-1]
    freqs = np.linspace(0, sample_rate / 2, bins).astype(power.dtype)
    total = magnitude.sum(-1, keepdims=True)
    weights = magnitude / np.where(total > np.finfo(power.dtype).tiny, total, 1)
    centroid = weights @ freqs
    bandwidth = np.sqrt((weights * (freqs - centroid[..., None]) ** 2).sum(-1))
    cumulative = np.cumsum(magnitude, axis=-1)
    below = (cumulative < roll_percent * cumulative[..., -1:]).sum(-1)
    rolloff = freqs[np.minimum(below, bins - 1)]
    floored = np.maximum(power, np.float32(amin))
    flatness = np.exp(np.log(floored).mean(-1)) / floored.mean(-1)
    return np.stack([centroid, bandwidth, rolloff, flatness], axis=-1)


def contrast(magnitude: np.ndarray, bands: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Peak and valley magnitudes of each sub-band: (T, bands) each."""
    peaks, valleys = [], []
    for start, stop, count in bands:
        ordered = np.sort(magnitude[..., start:stop], axis=-1)
        valleys.append(ordered[..., :count].mean(-1))
        peaks.append(ordered[..., -count:].mean(-1))
    return np.stack(peaks, axis=-1), np.stack(valleys, axis=-1)
