"""Utterance-level acoustic features, computed in batches with torch.

The paper's input is a 180-d vector: 40 MFCCs, 12 chroma bins and a 128-band mel
spectrogram, each averaged over time. Every step follows the librosa function of the same
name with the same parameters (``librosa.feature.mfcc``, ``chroma_stft`` with a fixed
``tuning``, ``melspectrogram``), which tests check within a tolerance; running them on a
padded batch with per-utterance frame masks instead of file by file is what makes
extraction fast, and the same code runs on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ser.data import descriptors
from ser.dsp import filters
from ser.dsp.feature_config import FeatureConfig

__all__ = ["FeatureConfig", "FeatureExtractor", "resolve_device"]

# CPU work sizes (measured on EMODB, 2 s clips of 87 frames): frames per window/FFT/power
# block, and mel filters per band-limited matrix product.
BLOCK_FRAMES = 64
MEL_GROUP = 8
# Batches of fewer frames take both whole filterbanks in one product (MKL multiplies such small
# matrices with other kernels, which sum in another order than _band_pieces matches).
SMALL_PRODUCT = 32
# Where a band may be cut, tried in this order (see _band_pieces).
_K_BLOCKS = (192, 128, 256, 64, 96, 160, 224, 320, 384, 512)


def _band_pieces(rows: np.ndarray, probe: torch.Tensor) -> list[slice]:
    """The FFT bins that a group of mel filters ``rows`` (n, F) is multiplied with, as pieces whose
    products, added in order, equal the whole filterbank's product bit for bit; the whole band
    where no cut does.

    A float32 matrix product sums over the bins in blocks of a size the BLAS picks (MKL: 192 of
    1025 bins here, 128 of 257), adding each block's sum to the result. The band cut at the
    same places gives the same numbers as the whole product, so features keep their published
    values to the last bit. The block size is found by trying: products with ``probe`` (a random
    spectrum, bins x frames), the band cut at multiples of each ``_K_BLOCKS`` size.
    """
    used = np.flatnonzero(rows.any(axis=0))
    if not len(used):
        return [slice(0, 1)]
    lo, hi = int(used[0]), int(used[-1]) + 1
    weights = torch.from_numpy(np.ascontiguousarray(rows))
    whole = weights @ probe
    for block in _K_BLOCKS:
        cuts = [lo, *range((lo // block + 1) * block, hi, block), hi]
        pieces = [slice(a, b) for a, b in zip(cuts, cuts[1:])]
        total = weights[:, pieces[0]].contiguous() @ probe[pieces[0]]
        for piece in pieces[1:]:
            total += weights[:, piece].contiguous() @ probe[piece]
        if torch.equal(total, whole):
            return pieces
    return [slice(0, rows.shape[1])]


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
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        self._window = torch.hann_window(c.n_fft, periodic=True, device=self.device)
        mel = filters.mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
        chroma = filters.chroma_filterbank(c.sample_rate, c.n_fft, c.n_chroma, c.tuning)
        self._chroma = as_tensor(chroma)
        self._banks = as_tensor(np.concatenate([mel, chroma]).T)  # (F, n_mels + n_chroma), for small batches
        # Each mel filter spans a few FFT bins: a group of neighbouring filters is multiplied with
        # its own band of bins only (the bins left out have zero weight in every filter of the
        # group), about 15x fewer multiply-adds than the whole filterbank. One group on a GPU.
        size = MEL_GROUP if self.device.type == "cpu" else c.n_mels
        self._mel_groups = []
        if self.device.type == "cpu":  # one random spectrum to find where each band may be cut
            probe = torch.rand(mel.shape[1], 256, generator=torch.Generator().manual_seed(0)).pow(8)
        for start in range(0, c.n_mels, size):
            rows = mel[start : start + size]
            pieces = _band_pieces(rows, probe) if self.device.type == "cpu" else [slice(0, rows.shape[1])]
            self._mel_groups.append((slice(start, start + len(rows)), [(b, as_tensor(rows[:, b])) for b in pieces]))
        self._dct = as_tensor(filters.dct_matrix(c.n_mfcc, c.n_mels))
        self._delta = as_tensor(filters.delta_kernel(c.delta_width))
        self._bands = (
            filters.contrast_bands(c.sample_rate, c.n_fft, c.contrast_fmin, c.contrast_bands, c.contrast_quantile)
            if "spectral" in c.parts
            else []
        )

    def n_frames(self, n_samples: torch.Tensor) -> torch.Tensor:
        """Frames per utterance with centred framing, as librosa counts them."""
        return 1 + torch.div(n_samples, self.config.hop_length, rounding_mode="floor")

    def frames(
        self, audio: torch.Tensor, lengths: torch.Tensor, centred: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-level features (B, frame_dim, T) of zero-padded audio (B, samples), and frames per item.

        Zero padding is exactly what librosa's centred STFT pads with, so every frame that
        belongs to an utterance equals librosa's frame; frames past the end are masked later.
        ``centred``: ``audio`` already has ``n_fft // 2`` zeros before and after every row.
        """
        c = self.config
        if not centred:
            audio = torch.nn.functional.pad(audio, (c.n_fft // 2, c.n_fft // 2))
        mel_power, raw_chroma, power = self.filterbank_powers(audio, centred=True)
        framed = audio.unfold(-1, c.n_fft, c.hop_length)  # a view: pitch and zero crossings use unwindowed frames
        n_frames = self.n_frames(lengths)
        valid = torch.arange(mel_power.shape[-1], device=audio.device)[None, :] < n_frames[:, None]
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
            if c.yin_acf == "stft":
                f0, periodicity = descriptors.yin_stft(
                    power, c.sample_rate, c.n_fft, c.f0_min, c.f0_max, c.yin_threshold
                )
            else:
                f0, periodicity = descriptors.yin(framed, c.sample_rate, c.f0_min, c.f0_max, c.yin_threshold)
            voiced = (periodicity > 1 - c.voicing_threshold).to(periodicity.dtype)
            out["pitch"] = torch.stack([f0.log(), periodicity, voiced], dim=1)
        if "spectral" in c.parts:
            out["spectral"] = self._spectral(framed, power, valid)
        parts = [out[p] for p in c.parts]
        if c.deltas:
            parts.append(self._deltas(out["mfcc"], n_frames))
        return torch.cat(parts, dim=1), n_frames

    def filterbank_powers(
        self, audio: torch.Tensor, centred: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mel power (B, n_mels, T), raw chroma (B, n_chroma, T) and the power spectrum (B, T, bins) of every
        centred frame of ``audio`` (B, samples).

        On CPU the frames go through window, FFT and power a block at a time (``BLOCK_FRAMES``),
        so that each step reads what the previous one left in the cache: the FFT of 64 frames
        (their samples and spectrum fit a core's 1 MB L2) is about twice as fast per frame as
        that of a batch of 8 two-second clips.
        """
        c = self.config
        if not centred:
            audio = torch.nn.functional.pad(audio, (c.n_fft // 2, c.n_fft // 2))
        framed = audio.unfold(-1, c.n_fft, c.hop_length)  # a view
        batch, steps = framed.shape[:2]
        power = torch.empty(batch * steps, c.n_fft // 2 + 1, device=audio.device)
        for clips, frames in self._blocks(batch, steps):
            windowed = (framed[clips, frames] * self._window).reshape(-1, c.n_fft)
            spectrum = torch.fft.rfft(windowed)
            first = clips.start * steps + frames.start
            out = power[first : first + len(windowed)]
            torch.mul(spectrum.real, spectrum.real, out=out).addcmul_(spectrum.imag, spectrum.imag)
        spectra = power.view(batch, steps, -1)
        if batch * steps < SMALL_PRODUCT:  # the BLAS sums small products in another order
            chroma_input = power if c.chroma_power == 2.0 else power.pow(c.chroma_power / 2)
            mel, chroma = (power @ self._banks[:, : c.n_mels]).T, (chroma_input @ self._banks[:, c.n_mels :]).T
            return (
                mel.reshape(c.n_mels, batch, steps).permute(1, 0, 2),
                chroma.reshape(c.n_chroma, batch, steps).permute(1, 0, 2),
                spectra,
            )
        # Filterbank outputs as (channel, frame) matrices: one product per group of filters.
        power = power.T
        mel = torch.empty(c.n_mels, batch * steps, device=audio.device)
        for rows, pieces in self._mel_groups:
            (bins, weights), *rest = pieces
            torch.mm(weights, power[bins], out=mel[rows])
            for bins, weights in rest:
                mel[rows] += weights @ power[bins]
        chroma = self._chroma @ (power if c.chroma_power == 2.0 else power.pow(c.chroma_power / 2))
        return (
            mel.view(c.n_mels, batch, steps).permute(1, 0, 2),
            chroma.view(c.n_chroma, batch, steps).permute(1, 0, 2),
            spectra,
        )

    def _blocks(self, batch: int, steps: int) -> Iterator[tuple[slice, slice]]:
        """(clips, frames) of each block: whole clips, or the frames of one long clip in pieces."""
        if self.device.type != "cpu":
            yield slice(0, batch), slice(0, steps)
        elif steps > BLOCK_FRAMES:  # one clip in pieces of (nearly) equal length
            pieces = -(-steps // BLOCK_FRAMES)
            size = -(-steps // pieces)
            for clip in range(batch):
                for start in range(0, steps, size):
                    yield slice(clip, clip + 1), slice(start, min(start + size, steps))
        else:
            per_block = BLOCK_FRAMES // steps
            for start in range(0, batch, per_block):
                yield slice(start, min(start + per_block, batch)), slice(0, steps)

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

    def __call__(self, signals: Sequence[np.ndarray], progress=None, workers: int = 1) -> np.ndarray:
        """Features (N, *config.shape) of mono signals at ``config.sample_rate``, in input order.

        Signals are sorted by length before batching so that padding wastes little work.
        ``progress`` is called with the number of signals finished after each batch.
        ``workers`` > 1 computes that many batches at once in threads (each batch's torch ops
        release the GIL); give each one torch thread (``torch.set_num_threads(1)``) then: on a
        CPU, whole batches in parallel beat splitting every small operation over the cores.
        """
        order = np.argsort([len(s) for s in signals], kind="stable")
        result = np.empty((len(signals), *self.config.shape), dtype=np.float32)
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

        def run(index: np.ndarray) -> int:
            with torch.inference_mode():  # thread-local: set in each worker
                result[index] = self._batch([signals[i] for i in index]).cpu().numpy()
            return len(index)

        if workers > 1 and len(batches) > 1:
            with ThreadPoolExecutor(min(workers, len(batches))) as pool:
                done = pool.map(run, batches)
                for count in done:
                    if progress is not None:
                        progress(count)
        else:
            for index in batches:
                count = run(index)
                if progress is not None:
                    progress(count)
        return result

    def _batch(self, signals: Sequence[np.ndarray]) -> torch.Tensor:
        """Features of one batch: (B, *config.shape)."""
        c = self.config
        lengths = torch.tensor([len(s) for s in signals], device=self.device)
        # With fixed-length output the buffer must hold at least config.frames frames.
        min_samples = 0 if c.pooled else (c.frames - 1) * c.hop_length
        half = c.n_fft // 2  # the centred framing's zeros, written once here
        audio = torch.zeros(len(signals), half + max(int(lengths.max()), min_samples) + half, device=self.device)
        for row, signal in enumerate(signals):
            audio[row, half : half + len(signal)] = torch.from_numpy(signal)
        frames, n_frames = self.frames(audio, lengths, centred=True)
        return self.pool(frames, n_frames) if c.pooled else self.fixed_length(frames, n_frames)

    def _power_to_db(
        self, power: torch.Tensor, valid: torch.Tensor, reference: torch.Tensor | None = None
    ) -> torch.Tensor:
        """librosa's power_to_db (ref 1, amin 1e-10), floored ``top_db`` below each utterance's peak
        (the peak of ``reference`` where given), or with ``db_floor="absolute"`` at −``top_db`` dB."""
        db = 10.0 * torch.log10(power.clamp_min(1e-10))
        if self.config.db_floor == "absolute":
            return db.clamp_min(-self.config.top_db)
        ref = db if reference is None else 10.0 * torch.log10(reference.clamp_min(1e-10))
        peak = ref.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
        return torch.maximum(db, peak - self.config.top_db)

    def _spectral(self, framed: torch.Tensor, power: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Loudness (dB), zero-crossing rate, centroid, bandwidth, roll-off, flatness, then contrast (dB) per sub-band."""
        c = self.config
        loudness = self._power_to_db(descriptors.mean_square(power, c.n_fft)[:, None], valid)
        magnitude = power.sqrt()  # contrast and spectral shape read magnitudes, flatness the power
        peaks, valleys = descriptors.contrast(magnitude, self._bands)
        # Valleys share the peaks' floor: a band the voice leaves empty holds only rounding noise,
        # whose own peak would set a floor as unstable as the noise.
        contrast = self._power_to_db(peaks, valid) - self._power_to_db(valleys, valid, reference=peaks)
        shape = descriptors.spectral_shape(power, magnitude, c.sample_rate, c.roll_percent)
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
