"""Feature settings, kept free of torch so the numpy runtime can read them from a model file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ser.errors import SERError

PARTS = ("mfcc", "chroma", "mel")
STATS = ("mean", "std")
POOLING = ("stats", "none")
CROPS = ("center", "start")


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
    chroma_power: float = 2.0
    tuning: float = 0.0
    mel_db: bool = False
    parts: tuple[str, ...] = PARTS
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
        if self.frames < 1:
            raise SERError(f"data.features.frames={self.frames} must be at least 1")
        if self.deltas and (self.delta_width < 3 or self.delta_width % 2 == 0):
            raise SERError(f"data.features.delta_width={self.delta_width} must be an odd number >= 3")

    def _frame_blocks(self) -> list[tuple[str, int]]:
        sizes = {"mfcc": self.n_mfcc, "chroma": self.n_chroma, "mel": self.n_mels}
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
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
