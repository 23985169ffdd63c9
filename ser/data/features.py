"""Utterance-level acoustic features, computed in batches with torch.

The paper's input is a 180-d vector: 40 MFCCs, 12 chroma bins and a 128-band mel
spectrogram, each averaged over time. Every step follows the librosa function of the same
name with the same parameters (``librosa.feature.mfcc``, ``chroma_stft`` with a fixed
``tuning``, ``melspectrogram``), which tests check within a tolerance; running them on a
padded batch with per-utterance frame masks instead of file by file is what makes
extraction fast, and the same code runs on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ser.data import descriptors
from ser.dsp import filters
from ser.dsp.feature_config import FeatureConfig

__all__ = ["FeatureConfig", "FeatureExtractor", "resolve_device"]

def resolve_device(device: str) -> torch.device:
    """``auto`` picks the GPU when there is one; extraction is cheap enough on CPU otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class FeatureExtractor:
    """Turns batches of waveforms into pooled feature vectors or fixed-length frame sequences."""

    config: FeatureConfig = field(default_factory=FeatureConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 8

    def __post_init__(self) -> None:
        c = self.config
        as_tensor = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        self._window = torch.hann_window(c.n_fft, periodic=True, device=self.device)
        mel = filters.mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
        chroma = filters.chroma_filterbank(c.sample_rate, c.n_fft, c.n_chroma, c.tuning)
        self._banks = as_tensor(np.concatenate([mel, chroma]).T.copy())  # (F, n_mels + n_chroma)
        self._dct = as_tensor(filters.dct_matrix(c.n_mfcc, c.n_mels))
        self._delta = as_tensor(filters.delta_kernel(c.delta_width))
        self._bands = filters.contrast_bands(c.sample_rate, c.n_fft, c.contrast_fmin, c.contrast_bands, c.contrast_quantile) if "spectral" in c.parts else []

    def n_frames(self, n_samples: torch.Tensor) -> torch.Tensor:
        """Frames per utterance with centred framing, as librosa counts them."""
        return 1 + torch.div(n_samples, self.config.hop_length, rounding_mode="floor")

    def frames(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-level features (B, frame_dim, T) of zero-padded audio (B, samples), and frames per item.

        Zero padding is exactly what librosa's centred STFT pads with, so every frame that
        belongs to an utterance equals librosa's frame; frames past the end are masked later.
        """
        c = self.config
        half = c.n_fft // 2
        framed = torch.nn.functional.pad(audio, (half, half)).unfold(-1, c.n_fft, c.hop_length)
        spectrum = torch.fft.rfft(framed * self._window)  # (B, T, F): contiguous along F
        power = spectrum.real.square().addcmul_(spectrum.imag, spectrum.imag)
        n_frames = self.n_frames(lengths)
        valid = torch.arange(power.shape[1], device=audio.device)[None, :] < n_frames[:, None]
        # One matmul for both filterbanks when chroma uses the power spectrum (the default).
        if c.chroma_power == 2.0:
            mel_power, raw_chroma = (power @ self._banks).transpose(1, 2).split([c.n_mels, c.n_chroma], dim=1)
        else:
            mel_power = (power @ self._banks[:, : c.n_mels]).transpose(1, 2)
            raw_chroma = (power.pow(c.chroma_power / 2) @ self._banks[:, c.n_mels :]).transpose(1, 2)
        out: dict[str, torch.Tensor] = {}
        if "mfcc" in c.parts or c.mel_db:
            mel_db = self._power_to_db(mel_power, valid)
        if "mfcc" in c.parts:
            out["mfcc"] = self._dct @ mel_db
        if "chroma" in c.parts:
            out["chroma"] = self._normalize_max(raw_chroma)
        if "mel" in c.parts:
            out["mel"] = mel_db if c.mel_db else mel_power
        if "pitch" in c.parts:
            f0, periodicity = descriptors.yin(framed, c.sample_rate, c.f0_min, c.f0_max, c.yin_threshold)
            voiced = (periodicity > 1 - c.voicing_threshold).to(periodicity.dtype)
            out["pitch"] = torch.stack([f0.log(), periodicity, voiced], dim=1)
        if "spectral" in c.parts:
            out["spectral"] = self._spectral(framed, power, valid)
        parts = [out[p] for p in c.parts]
        if c.deltas:
            parts.append(self._deltas(out["mfcc"], n_frames))
        return torch.cat(parts, dim=1), n_frames

    def pool(self, frames: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """Statistics over each utterance's own frames only: (B, dim).

        Pitch exists only where the voice is: ``log_f0`` is pooled over voiced frames (0 when
        there are none), every other channel over all the utterance's frames.
        """
        c = self.config
        mask = (torch.arange(frames.shape[-1], device=frames.device)[None, :] < n_frames[:, None]).to(frames.dtype)
        weights = mask[:, None, :].expand_as(frames)
        if "pitch" in c.parts:
            weights = weights.clone()
            weights[:, c.channel("pitch", "log_f0")] *= frames[:, c.channel("pitch", "voiced")]
        count = weights.sum(dim=-1).clamp_min(1)
        mean = (frames * weights).sum(dim=-1) / count
        pooled = {"mean": mean}
        if "std" in c.stats:
            centred = (frames - mean[..., None]) * weights
            pooled["std"] = (centred.square().sum(dim=-1) / count).sqrt()
        return torch.cat([pooled[s] for s in c.stats], dim=1)

    def fixed_length(self, frames: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """Exactly ``config.frames`` frames per utterance (B, frame_dim, frames).

        Longer utterances are cropped (their centre or their start, ``config.crop``); shorter
        ones continue with the frames of the zero padding after them, i.e. the features of
        silence, which is what extracting from audio padded with zeros to that length gives.
        """
        c = self.config
        excess = (n_frames - c.frames).clamp_min(0)
        offset = excess // 2 if c.crop == "center" else torch.zeros_like(excess)
        index = offset[:, None] + torch.arange(c.frames, device=frames.device)[None, :]
        return frames.gather(2, index[:, None, :].expand(-1, frames.shape[1], -1))

    def __call__(self, signals: Sequence[np.ndarray], progress=None) -> np.ndarray:
        """Features (N, *config.shape) of mono signals at ``config.sample_rate``, in input order.

        Signals are sorted by length before batching so that padding wastes little work.
        ``progress`` is called with the number of signals finished after each batch.
        """
        c = self.config
        order = np.argsort([len(s) for s in signals], kind="stable")
        result = np.empty((len(signals), *c.shape), dtype=np.float32)
        # With fixed-length output the buffer must hold at least config.frames frames.
        min_samples = 0 if c.pooled else (c.frames - 1) * c.hop_length
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                index = order[start : start + self.batch_size]
                lengths = torch.tensor([len(signals[i]) for i in index], device=self.device)
                audio = torch.zeros(len(index), max(int(lengths.max()), min_samples), device=self.device)
                for row, i in enumerate(index):
                    audio[row, : len(signals[i])] = torch.from_numpy(signals[i])
                frames, n_frames = self.frames(audio, lengths)
                out = self.pool(frames, n_frames) if c.pooled else self.fixed_length(frames, n_frames)
                result[index] = out.cpu().numpy()
                if progress is not None:
                    progress(len(index))
        return result

    def _power_to_db(self, power: torch.Tensor, valid: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """librosa's power_to_db (ref 1, amin 1e-10), floored ``top_db`` below each utterance's peak
        (the peak of ``reference`` where given)."""
        db = 10.0 * torch.log10(power.clamp_min(1e-10))
        ref = db if reference is None else 10.0 * torch.log10(reference.clamp_min(1e-10))
        peak = ref.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
        return torch.maximum(db, peak - self.config.top_db)

    def _spectral(self, framed: torch.Tensor, power: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Loudness (dB), zero-crossing rate, centroid, bandwidth, roll-off, flatness, then contrast (dB) per sub-band."""
        c = self.config
        loudness = self._power_to_db(descriptors.mean_square(power, c.n_fft)[:, None], valid)
        peaks, valleys = descriptors.contrast(power, self._bands)
        # Valleys share the peaks' floor: a band the voice leaves empty holds only rounding noise,
        # whose own peak would set a floor as unstable as the noise.
        contrast = self._power_to_db(peaks, valid) - self._power_to_db(valleys, valid, reference=peaks)
        shape = descriptors.spectral_shape(power, c.sample_rate, c.roll_percent)
        return torch.cat([loudness, descriptors.zero_crossing_rate(framed)[:, None], shape, contrast], dim=1)

    @staticmethod
    def _normalize_max(chroma: torch.Tensor) -> torch.Tensor:
        """Scale each frame to a peak of 1, leaving all-zero frames alone (librosa's normalize)."""
        peak = chroma.amax(dim=1, keepdim=True)
        tiny = torch.finfo(chroma.dtype).tiny
        return chroma / torch.where(peak < tiny, torch.ones_like(peak), peak)

    def _deltas(self, x: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """Local slope over ``delta_width`` frames, repeating each utterance's edge frames."""
        half = self.config.delta_width // 2
        t = torch.arange(x.shape[-1], device=x.device)
        offsets = torch.arange(-half, half + 1, device=x.device)
        index = torch.minimum((t[:, None] + offsets[None, :]).clamp_min(0)[None], (n_frames - 1)[:, None, None])
        batch, channels, steps = x.shape
        gathered = x.gather(2, index.reshape(batch, 1, -1).expand(batch, channels, -1))
        return gathered.reshape(batch, channels, steps, -1) @ self._delta
