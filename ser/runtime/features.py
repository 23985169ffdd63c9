"""The training features of one utterance, recomputed with numpy on the device.

A quantized model only works on the inputs it was trained on, so this must reproduce
``ser.data.features.FeatureExtractor`` number for number (tests hold it to a relative 1e-4).
It shares the filterbanks, DCT and delta kernel in ``ser.dsp.filters`` with the torch
extractor; what differs is only that one utterance needs no padding masks,
so every frame is valid and pooling is plain statistics over all frames.

With ``pooling="none"`` (convolutional models) an utterance becomes exactly ``config.frames``
frames, as ``FeatureExtractor.fixed_length`` makes them: a longer one is cropped (its centre
or its start, ``config.crop``), a shorter one continues with the frames of the zeros after it
(the features of silence, floored at the utterance's own peak like the torch extractor's).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ser.dsp import filters
from ser.dsp.feature_config import FeatureConfig
from ser.runtime import descriptors

__all__ = ["Extractor", "extract"]

_AMIN = 1e-10  # librosa's power_to_db floor, so silence is finite


class Extractor:
    """Pooled features of mono signals for one ``FeatureConfig``; builds its filterbanks once."""

    def __init__(self, config: FeatureConfig) -> None:
        c = self.config = config
        # Periodic Hann, as torch.hann_window(periodic=True) and librosa's STFT use.
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(c.n_fft) / c.n_fft)).astype(np.float32)
        self._mel = filters.mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax).T.copy()
        self._chroma = filters.chroma_filterbank(c.sample_rate, c.n_fft, c.n_chroma, c.tuning).T.copy()
        self._dct = filters.dct_matrix(c.n_mfcc, c.n_mels).T.copy()
        self._delta = filters.delta_kernel(c.delta_width) if c.deltas else None
        self._bands = (
            filters.contrast_bands(c.sample_rate, c.n_fft, c.contrast_fmin, c.contrast_bands, c.contrast_quantile)
            if "spectral" in c.parts
            else []
        )

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        """The model's input ``config.shape`` (float32) of a mono signal at ``config.sample_rate``: the pooled
        vector ``(dim,)``, or with ``pooling="none"`` the sequence ``(frame_dim, frames)``."""
        if self.config.pooled:
            return self.pool(self.frames(signal))
        return self.sequence(signal)

    def frames(self, signal: np.ndarray) -> np.ndarray:
        """Frame-level features ``(frames, config.frame_dim)``, in ``config.parts`` order then deltas."""
        return self._frames(self._mono(signal))

    def sequence(self, signal: np.ndarray) -> np.ndarray:
        """Exactly ``config.frames`` frames ``(frame_dim, frames)``, as the torch extractor's ``fixed_length``.

        The signal is padded with zeros to the length whose centred framing gives ``config.frames``
        frames (the torch extractor's batch buffer); only the utterance's own frames set the dB
        peak and the deltas' edges, and a long utterance is cropped at its centre (or start).
        """
        c = self.config
        signal = self._mono(signal)
        valid = 1 + len(signal) // c.hop_length
        need = (c.frames - 1) * c.hop_length
        if len(signal) < need:
            signal = np.pad(signal, (0, need - len(signal)))
        frames = self._frames(signal, valid)
        excess = max(valid - c.frames, 0)
        offset = excess // 2 if c.crop == "center" else 0
        return np.ascontiguousarray(frames[offset : offset + c.frames].T)

    @staticmethod
    def _mono(signal: np.ndarray) -> np.ndarray:
        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 1:
            raise ValueError(f"expected a mono signal (1-D), got shape {signal.shape}")
        return signal

    def _frames(self, signal: np.ndarray, valid: int | None = None) -> np.ndarray:
        """Frames of ``signal``; the first ``valid`` of them (default all) belong to the utterance."""
        c = self.config
        half = c.n_fft // 2
        padded = np.pad(signal, (half, half))
        framed = np.lib.stride_tricks.sliding_window_view(padded, c.n_fft)[:: c.hop_length]
        spectrum = np.fft.rfft(framed * self._window)  # complex64: numpy keeps float32 input in float32
        power = spectrum.real**2 + spectrum.imag**2
        mel_power = power @ self._mel
        out: dict[str, np.ndarray] = {}
        if "mfcc" in c.parts or c.mel_db:
            mel_db = self._power_to_db(mel_power, valid)
        if "mfcc" in c.parts:
            out["mfcc"] = mel_db @ self._dct
        if "chroma" in c.parts:
            chroma_input = power if c.chroma_power == 2.0 else power ** np.float32(c.chroma_power / 2)
            out["chroma"] = _normalize_max(chroma_input @ self._chroma)
        if "mel" in c.parts:
            out["mel"] = mel_db if c.mel_db else mel_power
        if "pitch" in c.parts:
            if c.yin_acf == "stft":
                f0, periodicity = descriptors.yin_stft(
                    power, c.sample_rate, c.n_fft, c.f0_min, c.f0_max, c.yin_threshold
                )
            else:
                f0, periodicity = descriptors.yin(framed, c.sample_rate, c.f0_min, c.f0_max, c.yin_threshold)
            voiced = (periodicity > 1 - c.voicing_threshold).astype(np.float32)
            out["pitch"] = np.stack([np.log(f0), periodicity, voiced], axis=1)
        if "spectral" in c.parts:
            out["spectral"] = self._spectral(framed, power, valid)
        parts = [out[p] for p in c.parts]
        if self._delta is not None:
            parts.append(self._deltas(out["mfcc"], valid))
        return np.concatenate(parts, axis=1)

    def pool(self, frames: np.ndarray) -> np.ndarray:
        """Statistics over time, accumulated in float64 so long utterances lose no precision;
        ``log_f0`` over voiced frames only (0 when there are none), as the torch extractor pools."""
        c = self.config
        weights = np.ones(frames.shape, dtype=np.float64)
        if "pitch" in c.parts:
            weights[:, c.channel("pitch", "log_f0")] = frames[:, c.channel("pitch", "voiced")]
        count = np.maximum(weights.sum(axis=0), 1)
        mean = (frames * weights).sum(axis=0) / count
        pooled = {"mean": mean}
        if "std" in c.stats:
            pooled["std"] = np.sqrt((((frames - mean) * weights) ** 2).sum(axis=0) / count)
        return np.concatenate([pooled[s] for s in c.stats]).astype(np.float32)

    def _spectral(self, framed: np.ndarray, power: np.ndarray, valid: int | None) -> np.ndarray:
        """Loudness (dB), zero-crossing rate, centroid, bandwidth, roll-off, flatness, then contrast (dB) per sub-band."""
        c = self.config
        loudness = self._power_to_db(descriptors.mean_square(power, c.n_fft)[:, None], valid)
        magnitude = np.sqrt(power)  # contrast and spectral shape read magnitudes, flatness the power
        peaks, valleys = descriptors.contrast(magnitude, self._bands)
        contrast = self._power_to_db(peaks, valid) - self._power_to_db(valleys, valid, reference=peaks)  # one floor
        shape = descriptors.spectral_shape(power, magnitude, c.sample_rate, c.roll_percent)
        return np.concatenate([loudness, descriptors.zero_crossing_rate(framed)[:, None], shape, contrast], axis=1)

    def _power_to_db(
        self, power: np.ndarray, valid: int | None = None, reference: np.ndarray | None = None
    ) -> np.ndarray:
        """librosa's power_to_db (ref 1), floored ``top_db`` below the peak of the utterance's (first ``valid``)
        frames (of ``reference`` where given), or with ``db_floor="absolute"`` at −``top_db`` dB."""
        db = 10.0 * np.log10(np.maximum(power, np.float32(_AMIN)))
        if self.config.db_floor == "absolute":
            return np.maximum(db, np.float32(-self.config.top_db))
        ref = db if reference is None else 10.0 * np.log10(np.maximum(reference, np.float32(_AMIN)))
        return np.maximum(db, ref[:valid].max() - np.float32(self.config.top_db))

    def _deltas(self, x: np.ndarray, valid: int | None = None) -> np.ndarray:
        """Local slope over ``delta_width`` frames, repeating the edge frames of the utterance (its first ``valid``)."""
        half = len(self._delta) // 2
        if valid is None or valid >= len(x):
            padded = np.pad(x, ((half, half), (0, 0)), mode="edge")
            return np.lib.stride_tricks.sliding_window_view(padded, len(self._delta), axis=0) @ self._delta
        # Frames past the utterance (silence padding): the torch extractor clamps every index to its last frame.
        index = np.minimum(np.maximum(np.arange(len(x))[:, None] + np.arange(-half, half + 1)[None, :], 0), valid - 1)
        return x[index].transpose(0, 2, 1) @ self._delta


def _normalize_max(chroma: np.ndarray) -> np.ndarray:
    """Scale each frame to a peak of 1, leaving all-zero frames alone (librosa's normalize)."""
    peak = chroma.max(axis=1, keepdims=True)
    return chroma / np.where(peak < np.finfo(chroma.dtype).tiny, 1, peak).astype(chroma.dtype)


@lru_cache(maxsize=8)
def _extractor(config: FeatureConfig) -> Extractor:
    return Extractor(config)


def extract(signal: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Features ``config.shape`` of one signal (pooled ``(dim,)``, or ``(frame_dim, frames)`` with
    ``pooling="none"``); filterbanks are cached per config."""
    return _extractor(config)(signal)
