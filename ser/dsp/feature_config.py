"""Feature settings, kept free of torch so the numpy runtime can read them from a model file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ser.errors import SERError

PARTS = ("mfcc", "chroma", "mel", "pitch", "spectral")
PAPER_PARTS = ("mfcc", "chroma", "mel")
STATS = ("mean", "std")
POOLING = ("stats", "none")
PITCH = ("log_f0", "periodicity", "voiced")  # YIN (ser.data.descriptors.yin); log_f0 pooled over voiced frames only
SPECTRAL = ("rms_db", "zcr", "centroid", "bandwidth", "rolloff", "flatness")  # then one contrast per sub-band
CROPS = ("center", "start")
DB_FLOORS = ("peak", "absolute")  # top_db below the utterance's peak (librosa), or at -top_db dB (one pass: streaming)
YIN_ACF = ("frame", "stft")  # YIN's autocorrelation: the unwindowed frame's (librosa.yin), or the STFT power's
# Options added after models and caches existed, with the value that reproduces them: to_dict() leaves them
# out at that value, so the feature settings of a .serq header, an enrolment file and the cache key stay
# what they were (and an older reader still loads the file).
LATER_DEFAULTS = {"db_floor": "peak", "yin_acf": "frame"}


@dataclass(frozen=True)
class FeatureConfig:
    """Every setting that changes the numbers; the cache key is built from all of them."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mfcc: int = 40
    n_mels: int = 128
    n_chroma: int = 12
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float = 80.0
    db_floor: str = "peak"
    chroma_power: float = 2.0
    tuning: float = 0.0
    mel_db: bool = False
    f0_min: float = 60.0
    f0_max: float = 500.0
    yin_threshold: float = 0.1
    yin_acf: str = "frame"
    voicing_threshold: float = 0.2
    roll_percent: float = 0.85
    contrast_fmin: float = 200.0
    contrast_bands: int = 6
    contrast_quantile: float = 0.02
    parts: tuple[str, ...] = PAPER_PARTS
    stats: tuple[str, ...] = ("mean",)
    deltas: bool = False
    delta_width: int = 9
    pooling: str = "stats"
    frames: int = 188
    crop: str = "center"

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        object.__setattr__(self, "stats", tuple(self.stats))
        for name, values, allowed in (("parts", self.parts, PARTS), ("stats", self.stats, STATS)):
            unknown = [v for v in values if v not in allowed]
            if unknown or not values:
                raise SERError(f"data.features.{name}={list(values)} must be a non-empty subset of {list(allowed)}")
        if self.deltas and "mfcc" not in self.parts:
            raise SERError("data.features.deltas=true needs 'mfcc' in data.features.parts")
        if self.pooling not in POOLING:
            raise SERError(f"data.features.pooling={self.pooling!r} must be one of {', '.join(POOLING)}")
        if self.crop not in CROPS:
            raise SERError(f"data.features.crop={self.crop!r} must be one of {', '.join(CROPS)}")
        if self.db_floor not in DB_FLOORS:
            raise SERError(f"data.features.db_floor={self.db_floor!r} must be one of {', '.join(DB_FLOORS)}")
        if self.yin_acf not in YIN_ACF:
            raise SERError(f"data.features.yin_acf={self.yin_acf!r} must be one of {', '.join(YIN_ACF)}")
        if self.frames < 1:
            raise SERError(f"data.features.frames={self.frames} must be at least 1")
        if "pitch" in self.parts and not 0 < self.f0_min < self.f0_max <= self.sample_rate / 2:
            raise SERError(
                f"data.features.f0_min={self.f0_min} and f0_max={self.f0_max} must satisfy 0 < f0_min < f0_max <= sample_rate / 2"
            )
        if "pitch" in self.parts and self.sample_rate / self.f0_min >= self.n_fft:
            raise SERError(
                f"data.features.f0_min={self.f0_min} Hz has a period longer than the n_fft={self.n_fft} frame; "
                f"raise it above {self.sample_rate / self.n_fft:.1f} Hz"
            )
        if "pitch" in self.parts and self.yin_acf == "stft" and self.sample_rate / self.f0_min > self.n_fft / 2:
            raise SERError(
                f"data.features.yin_acf=stft needs the period of f0_min={self.f0_min} Hz within half the "
                f"n_fft={self.n_fft} frame; raise it to {2 * self.sample_rate / self.n_fft:.1f} Hz or more"
            )
        if "spectral" in self.parts and self.contrast_fmin * 2 ** (self.contrast_bands - 1) >= self.sample_rate / 2:
            raise SERError(
                f"data.features.contrast_bands={self.contrast_bands} octaves from contrast_fmin={self.contrast_fmin} Hz "
                f"pass Nyquist ({self.sample_rate / 2} Hz)"
            )
        if self.deltas and (self.delta_width < 3 or self.delta_width % 2 == 0):
            raise SERError(f"data.features.delta_width={self.delta_width} must be an odd number >= 3")

    def channel(self, part: str, name: str) -> int:
        """Index of one named channel of a part (``PITCH``, ``SPECTRAL``) within a frame."""
        start = 0
        for block, size in self._frame_blocks():
            if block == part:
                return start + {"pitch": PITCH, "spectral": SPECTRAL}[part].index(name)
            start += size
        raise KeyError(f"{part!r} is not in parts={list(self.parts)}")

    def _frame_blocks(self) -> list[tuple[str, int]]:
        sizes = {
            "mfcc": self.n_mfcc,
            "chroma": self.n_chroma,
            "mel": self.n_mels,
            "pitch": len(PITCH),
            "spectral": len(SPECTRAL) + self.contrast_bands + 1,
        }
        return [(p, sizes[p]) for p in self.parts] + ([("delta", self.n_mfcc)] if self.deltas else [])

    @property
    def frame_dim(self) -> int:
        return sum(size for _, size in self._frame_blocks())

    @property
    def pooled(self) -> bool:
        return self.pooling == "stats"

    def blocks(self) -> list[tuple[str, slice]]:
        """Where each block sits along the feature axis: ("mean/mel", slice(52, 180)) in the pooled
        vector, ("mel", slice(52, 180)) in the channels of a frame sequence."""
        out, start = [], 0
        for stat in self.stats if self.pooled else ("",):
            for part, size in self._frame_blocks():
                out.append((f"{stat}/{part}" if stat else part, slice(start, start + size)))
                start += size
        return out

    def block_slices(self) -> list[slice]:
        """Just the slices of ``blocks()``: statistics are floored per block (``speaker_norm``)."""
        return [block for _, block in self.blocks()]

    @property
    def dim(self) -> int:
        """Length of the pooled vector."""
        return self.frame_dim * len(self.stats)

    @property
    def shape(self) -> tuple[int, ...]:
        """One utterance's features: (dim,) pooled, or (frame_dim, frames) with pooling="none"."""
        return (self.dim,) if self.pooled else (self.frame_dim, self.frames)

    def to_dict(self) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]
        }
