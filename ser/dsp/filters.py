"""Filterbanks and transforms shared by the torch feature extractor and the numpy runtime.

They follow librosa's definitions (Slaney mel scale and area normalisation, the Ellis
chroma bank with its Gaussian octave weighting, orthonormal DCT-II) so that our features can
be checked against the field's reference implementation; numpy only, so a device without
torch or librosa can compute the same features.
"""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3  # Slaney: Hz per mel below the break frequency
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    logarithmic = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    logarithmic = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, logarithmic, linear)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular filters on the Slaney mel scale, each scaled to unit area: (n_mels, 1 + n_fft // 2)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def chroma_filterbank(
    sample_rate: int,
    n_fft: int,
    n_chroma: int = 12,
    tuning: float = 0.0,
    center_octave: float = 5.0,
    octave_width: float = 2.0,
) -> np.ndarray:
    """Map FFT bins onto pitch classes starting at C: (n_chroma, 1 + n_fft // 2).

    Each bin spreads over neighbouring pitch classes with a Gaussian as wide as the bin, is
    L2-normalised across classes, then weighted by a Gaussian over octaves centred on
    ``center_octave`` (counted from A0 = 27.5 Hz) so that very low and very high bins, which
    carry little pitch information, contribute little.
    """
    freqs = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    bins = n_chroma * np.log2(freqs / (a440 / 16))
    # The DC bin gets a made-up pitch 1.5 octaves below bin 1, i.e. spread broadly.
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))
    bin_widths = np.concatenate((np.maximum(np.diff(bins), 1.0), [1.0]))
    half = np.round(n_chroma / 2)
    distance = np.remainder(bins[None, :] - np.arange(n_chroma)[:, None] + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * distance / bin_widths[None, :]) ** 2)
    weights /= np.linalg.norm(weights, axis=0, keepdims=True)
    weights *= np.exp(-0.5 * ((bins / n_chroma - center_octave) / octave_width) ** 2)[None, :]
    weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(weights[:, : 1 + n_fft // 2], dtype=np.float32)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix (n_out, n_in), the transform behind MFCCs."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def delta_kernel(width: int) -> np.ndarray:
    """Least-squares slope over ``width`` frames (odd), as in HTK and librosa's delta."""
    if width < 3 or width % 2 == 0:
        raise ValueError(f"delta width must be an odd number >= 3, got {width}")
    half = width // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    return (offsets / np.sum(offsets**2)).astype(np.float32)


def contrast_bands(
    sample_rate: int, n_fft: int, fmin: float = 200.0, n_bands: int = 6, quantile: float = 0.02
) -> list[tuple[int, int, int]]:
    """Octave sub-bands of spectral contrast (Jiang et al., 2002): FFT bins ``[start, stop)`` and
    how many of the band's sorted magnitudes make its peak and its valley.

    As ``librosa.feature.spectral_contrast`` draws them: band 0 below ``fmin``, then octaves
    from ``fmin``; each band after the first also takes the bin just below its lower edge, each
    band but the last drops its top bin (still counted for the quantile), and the last runs up
    to Nyquist.
    """
    freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    edges = np.concatenate([[0.0], fmin * 2.0 ** np.arange(n_bands + 1)])
    if edges[-2] >= sample_rate / 2:
        raise ValueError(f"spectral contrast: {n_bands} octaves from {fmin} Hz pass Nyquist ({sample_rate / 2} Hz)")
    bands = []
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = np.flatnonzero((freqs >= low) & (freqs <= high))
        start = inside[0] - 1 if k > 0 else inside[0]
        stop = len(freqs) if k == n_bands else inside[-1]  # exclusive: the top bin goes to the next band
        counted = stop - start + (0 if k == n_bands else 1)
        bands.append((int(start), int(stop), max(int(np.rint(quantile * counted)), 1)))
    return bands


def yin_lags(sample_rate: int, n_fft: int, f0_min: float, f0_max: float) -> tuple[int, int]:
    """The periods (in samples, inclusive) YIN searches: ``floor(sr / f0_max) .. ceil(sr / f0_min)``,
    at most ``n_fft - 1``, as ``librosa.yin`` bounds them."""
    return int(sample_rate // f0_max), min(int(-(-sample_rate // f0_min)), n_fft - 1)


def yin_stft_lags(sample_rate: int, n_fft: int, f0_min: float, f0_max: float) -> tuple[int, int, int]:
    """YIN on the STFT's power spectrum (``data.features.yin_acf=stft``): the lag step in samples and the
    periods searched, ``lo .. hi`` in steps.

    The autocorrelation is the inverse FFT of the power of the bins up to ``sample_rate / (2·step)``
    (``n_fft // step`` points): the step is the largest power of two whose band still holds 5 harmonics of
    ``f0_max`` (4 at 22,050 Hz, i.e. 0–2.76 kHz and periods in 0.18 ms steps, as YIN on audio decimated to
    5.5 kHz), so the inverse is a short one. The periods run ``floor(sr / f0_max)`` .. ``ceil(sr / f0_min)``
    samples, as ``yin_lags`` bounds them, in steps, at most half the shortened autocorrelation.
    """
    step = 1
    while sample_rate / (4 * step) >= 5 * f0_max and n_fft // (2 * step) >= 16:
        step *= 2
    lo = int(sample_rate // (f0_max * step))
    hi = min(int(-(-sample_rate // (f0_min * step))), n_fft // (2 * step))
    return step, lo, hi
