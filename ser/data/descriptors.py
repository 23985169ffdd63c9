"""Prosodic and spectral-shape descriptors per frame, in batches with torch.

The paper's MFCC, chroma and mel describe the spectral envelope; how high and how steady the
voice is, how loud, how noisy and how bright, are what classic SER feature sets (openSMILE's
IS09/eGeMAPS) add, and they are the cheapest accuracy we measured (docs/results.md). Each
follows the librosa function of the same name on the same frames (``librosa.yin``,
``feature.rms``, ``zero_crossing_rate``, ``spectral_centroid``, ``spectral_bandwidth``,
``spectral_rolloff``, ``spectral_flatness``, ``spectral_contrast``), which tests check; the
numpy runtime (``ser.runtime.descriptors``) computes the same numbers on the device.

All functions take frames on the last-but-one axis: ``frames`` (B, T, n_fft) of unwindowed
audio, ``power`` (B, T, bins) of the windowed STFT and ``magnitude`` its square root, and return (B, T) or (B, k, T).
"""

from __future__ import annotations

import torch

from ser.dsp import filters

__all__ = ["contrast", "mean_square", "spectral_shape", "yin", "yin_stft", "zero_crossing_rate"]


def yin(
    frames: torch.Tensor, sample_rate: int, f0_min: float, f0_max: float, threshold: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fundamental frequency (Hz) and periodicity (1 - the deepest dip of the normalised difference) per frame.

    De Cheveigné and Kawahara's YIN as librosa computes it: the cumulative-mean-normalised
    difference function over periods ``sample_rate / f0_max .. sample_rate / f0_min``, the first
    dip below ``threshold`` (else the deepest), refined by parabolic interpolation. A silent
    frame has no dip at all: periodicity 0 (its pitch is then meaningless; pooling with
    periodicity-weighted statistics is the caller's choice).
    """
    n = frames.shape[-1]
    lo, hi = filters.yin_lags(sample_rate, n, f0_min, f0_max)
    spectrum = torch.fft.rfft(frames, n=2 * n)
    acf = torch.fft.irfft(spectrum.real.square() + spectrum.imag.square(), n=2 * n)[..., : hi + 1]
    energy = frames[..., :hi].square().cumsum(-1)  # sum of y[m]^2 for m < k, k = 1..hi
    diff = 2 * (acf[..., :1] - acf[..., 1:]) - energy  # d(k), k = 1..hi
    period, periodicity = _dip(diff, acf[..., :1], lo, threshold)
    return sample_rate / period, periodicity


def yin_stft(
    power: torch.Tensor, sample_rate: int, n_fft: int, f0_min: float, f0_max: float, threshold: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """YIN (``yin``) on the autocorrelation of the STFT's Hann-windowed frame, from its power spectrum ``power``
    (B, T, bins): the inverse FFT of the bins below ``sample_rate / (2·step)`` (``filters.yin_stft_lags``), so
    the periods are searched in steps of ``step`` samples, and the difference is YIN's 2·(r(0) − r(τ)).

    No FFT of its own and a short inverse one: what a microcontroller can afford per frame (one FFT of
    2·n_fft points and a second one pruned to the lags, otherwise).
    """
    step, lo, hi = filters.yin_stft_lags(sample_rate, n_fft, f0_min, f0_max)
    half = n_fft // (2 * step)
    acf = torch.fft.irfft(power[..., : half + 1], n=2 * half)[..., : hi + 1]
    period, periodicity = _dip(2 * (acf[..., :1] - acf[..., 1:]), acf[..., :1], lo, threshold)
    return sample_rate / (step * period), periodicity


def _dip(diff: torch.Tensor, acf0: torch.Tensor, lo: int, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Period (in lags, refined) and periodicity from YIN's difference ``diff`` at lags 1..hi: its cumulative-mean
    normalisation over lags ``lo``..hi, the first trough below ``threshold`` (else the deepest); no dip where the
    frame is silent (``acf0``, its autocorrelation at lag 0, is 0)."""
    lags = torch.arange(1, diff.shape[-1] + 1, device=diff.device, dtype=diff.dtype)
    running_mean = diff.cumsum(-1) / lags
    tiny = torch.finfo(diff.dtype).tiny
    cmnd = diff[..., lo - 1 :] / (running_mean[..., lo - 1 :] + tiny)  # lags lo..hi
    cmnd = torch.where(acf0 > tiny, cmnd, torch.ones_like(cmnd))
    trough = torch.zeros_like(cmnd, dtype=torch.bool)
    trough[..., 1:-1] = (cmnd[..., 1:-1] < cmnd[..., :-2]) & (cmnd[..., 1:-1] <= cmnd[..., 2:])
    trough[..., 0] = cmnd[..., 0] < cmnd[..., 1]
    trough[..., -1] = cmnd[..., -1] < cmnd[..., -2]
    below = trough & (cmnd < threshold)
    index = torch.where(below.any(-1), below.to(torch.uint8).argmax(-1), cmnd.argmin(-1))
    period = lo + index.to(diff.dtype) + _parabolic_shift(cmnd, index)
    return period, (1 - cmnd.amin(-1)).clamp(0, 1)


def _parabolic_shift(curve: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Offset of the parabola through the three points around ``index`` (0 at the ends or if it leaves them)."""
    inner = index.clamp(1, curve.shape[-1] - 2)
    left, mid, right = (curve.gather(-1, (inner + k)[..., None])[..., 0] for k in (-1, 0, 1))
    a, b = right + left - 2 * mid, (right - left) / 2
    shift = torch.where(b.abs() < a.abs(), -b / torch.where(a == 0, torch.ones_like(a), a), torch.zeros_like(a))
    return torch.where((index == inner), shift, torch.zeros_like(shift))


def zero_crossing_rate(frames: torch.Tensor, threshold: float = 1e-10) -> torch.Tensor:
    """Share of neighbouring samples whose signs differ, with |y| <= ``threshold`` counted as positive zero."""
    negative = frames < -threshold
    return (negative[..., 1:] != negative[..., :-1]).sum(-1).to(frames.dtype) / frames.shape[-1]


def mean_square(power: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Mean square of each (windowed) frame from its one-sided power spectrum, by Parseval (librosa's rms, squared)."""
    edges = power[..., 0] + (power[..., -1] if n_fft % 2 == 0 else 0)
    return (2 * power.sum(-1) - edges) / n_fft**2


def spectral_shape(
    power: torch.Tensor, magnitude: torch.Tensor, sample_rate: int, roll_percent: float = 0.85, amin: float = 1e-10
) -> torch.Tensor:
    """Centroid, bandwidth and roll-off (Hz) of the magnitude spectrum, and flatness of the power spectrum: (B, 4, T)."""
    bins = power.shape[-1]
    freqs = torch.linspace(0, sample_rate / 2, bins, device=power.device, dtype=power.dtype)
    total = magnitude.sum(-1, keepdim=True)
    weights = magnitude / torch.where(total > torch.finfo(power.dtype).tiny, total, torch.ones_like(total))
    centroid = weights @ freqs
    bandwidth = (weights * (freqs - centroid[..., None]).square()).sum(-1).sqrt()
    cumulative = magnitude.cumsum(-1)
    below = (cumulative < roll_percent * cumulative[..., -1:]).sum(-1)
    rolloff = freqs[below.clamp_max(bins - 1)]
    floored = power.clamp_min(amin)
    flatness = floored.log().mean(-1).exp() / floored.mean(-1)
    return torch.stack([centroid, bandwidth, rolloff, flatness], dim=1)


def contrast(magnitude: torch.Tensor, bands: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Peak and valley of each sub-band ``(start, stop, count)``: means of its ``count`` largest and smallest
    magnitudes (``ser.dsp.filters.contrast_bands``), (B, bands, T) each.

    Spectral contrast is their difference in dB, which the caller takes with the utterance's dB floor.
    """
    peaks, valleys = [], []
    for start, stop, count in bands:
        ordered = magnitude[..., start:stop].sort(-1).values
        valleys.append(ordered[..., :count].mean(-1))
        peaks.append(ordered[..., -count:].mean(-1))
    return torch.stack(peaks, dim=1), torch.stack(valleys, dim=1)
