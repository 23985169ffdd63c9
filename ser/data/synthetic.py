"""The built-in corpus: synthetic emotional speech, generated on first use instead of downloaded.

A source-filter model makes voiced, speech-like utterances: a jittered, shimmering glottal
pulse train that follows a pitch contour, plus breath noise, shaped frame by frame by a
spectral tilt and the formants of a random vowel sequence, with noise bursts for consonants.
Each emotion sets the *distribution* of pitch, pitch range, final rise, tremor, syllable rate,
level, jitter, shimmer, tilt and breathiness; wide within-class spread and speaker variation
(base pitch, vocal-tract length, loudness, voice quality) make neighbouring emotions overlap,
so a classifier can learn the task without solving it, and quantization losses stay visible.

Every random draw comes from a generator seeded by (corpus seed, speaker, emotion, utterance),
so the same spec always yields byte-identical WAV files. Only numpy is used (no scipy): the
time-varying filter is an overlap-add of windowed FFT frames, which is also what keeps the
whole default corpus to a few seconds of CPU time.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf
from filelock import FileLock

from ser.errors import DataError
from ser.io import create_temp_dir

EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")

# Bump whenever the synthesis changes, so cached corpora made by older code get rebuilt.
FORMAT_VERSION = 1
_GENERATOR = "ser.data.synthetic"


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and shape of the corpus; its fields, with the format version, key the on-disk cache."""

    speakers: int = 8
    per_speaker_per_emotion: int = 10
    sample_rate: int = 16000
    seed: int = 0
    min_duration_s: float = 1.0
    max_duration_s: float = 2.0

    def __post_init__(self) -> None:
        if self.speakers < 1 or self.per_speaker_per_emotion < 1:
            raise DataError("synthetic corpus needs speakers >= 1 and per_speaker_per_emotion >= 1")
        if self.sample_rate < 8000:
            raise DataError(f"synthetic sample_rate={self.sample_rate} is too low for formants; use >= 8000")
        if not 0.5 <= self.min_duration_s <= self.max_duration_s:
            raise DataError(
                f"synthetic durations need 0.5 <= min_duration_s ({self.min_duration_s}) "
                f"<= max_duration_s ({self.max_duration_s})"
            )


@dataclass(frozen=True)
class _Voice:
    """Means of one emotion's prosody; each utterance draws around them with ``_SPREAD``."""

    pitch_st: float  # offset from the speaker's base pitch, semitones
    range_st: float  # height of syllable pitch accents, semitones
    final_st: float  # rise (+) or fall (-) over the last third, semitones
    tremor_st: float  # depth of a ~5.5 Hz pitch tremor, semitones
    rate: float  # syllables per second
    level_db: float  # loudness relative to the speaker's neutral level
    jitter: float  # pulse-position spread, fraction of a period
    shimmer: float  # pulse-amplitude spread, fraction
    tilt_db: float  # source spectral slope above ~300 Hz, dB per octave
    breath_db: float  # breath noise relative to the voiced source


_VOICES: dict[str, _Voice] = {
    "anger": _Voice(3.0, 4.5, -2.0, 0.0, 5.4, 7.0, 0.020, 0.08, -2.0, -32.0),
    "disgust": _Voice(-1.0, 3.0, -3.0, 0.0, 3.5, 0.0, 0.025, 0.10, -8.0, -20.0),
    "fear": _Voice(7.0, 2.5, 1.0, 0.6, 5.8, -1.0, 0.030, 0.10, -7.0, -17.0),
    "happiness": _Voice(5.0, 6.0, 1.0, 0.0, 4.8, 3.5, 0.012, 0.05, -5.0, -28.0),
    "neutral": _Voice(0.0, 2.5, -2.0, 0.0, 4.6, 0.0, 0.006, 0.03, -6.0, -32.0),
    "sadness": _Voice(-2.0, 1.5, -3.0, 0.2, 3.2, -6.0, 0.014, 0.06, -11.0, -20.0),
    "surprise": _Voice(8.0, 7.0, 5.0, 0.0, 4.4, 2.0, 0.012, 0.05, -6.0, -24.0),
}

# Within-class standard deviations, in the units of ``_Voice``: wide enough that emotions overlap.
_SPREAD = _Voice(1.4, 1.0, 1.0, 0.15, 0.5, 1.75, 0.004, 0.014, 1.0, 2.8)

# Adult-male formant frequencies (Hz) of a few vowels; speakers scale them by vocal-tract length.
_VOWELS = np.array(
    [
        [730.0, 1090.0, 2440.0, 3400.0],
        [270.0, 2290.0, 3010.0, 3700.0],
        [300.0, 870.0, 2240.0, 3300.0],
        [530.0, 1840.0, 2480.0, 3500.0],
        [570.0, 840.0, 2410.0, 3300.0],
        [660.0, 1720.0, 2410.0, 3400.0],
        [500.0, 1500.0, 2500.0, 3500.0],
    ]
)
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])
_REFERENCE_RMS = 10 ** (-26 / 20)
_PEAK = 0.97
_FLOOR = 10 ** (-45 / 20)  # room noise relative to the voiced source


@dataclass(frozen=True)
class _Speaker:
    """What stays fixed across one speaker's utterances, so speaker identity confounds emotion."""

    base_f0: float
    formant_scale: float
    level_db: float
    tilt_db: float
    breath_db: float
    rate_scale: float


def _speaker(seed: int, index: int) -> _Speaker:
    """Alternate low and high voices so every corpus has both, whatever its size."""
    rng = np.random.default_rng([seed, index])
    high = index % 2 == 1
    return _Speaker(
        base_f0=float(rng.normal(205.0, 20.0) if high else rng.normal(115.0, 12.0)),
        formant_scale=float(rng.normal(1.15, 0.05) if high else rng.normal(1.0, 0.04)),
        level_db=float(rng.normal(0.0, 2.5)),
        tilt_db=float(rng.normal(0.0, 1.0)),
        breath_db=float(rng.normal(0.0, 3.0)),
        rate_scale=float(rng.normal(1.0, 0.08)),
    )


def _draw_voice(rng: np.random.Generator, emotion: str) -> _Voice:
    """One utterance's prosody: the emotion's means plus independent Gaussian spread."""
    names = [f.name for f in fields(_Voice)]
    drawn = {key: float(rng.normal(getattr(_VOICES[emotion], key), getattr(_SPREAD, key))) for key in names}
    for key in ("tremor_st", "jitter", "shimmer", "range_st"):
        drawn[key] = max(drawn[key], 0.0)
    drawn["rate"] = max(drawn["rate"], 1.5)
    return _Voice(**drawn)


def _syllables(rng: np.random.Generator, duration: float, rate: float) -> np.ndarray:
    """Rows of (onset, nucleus, end) in seconds: a consonant onset, then a vowel, with some pauses."""
    rows = []
    t = rng.uniform(0.05, 0.15)
    stop = duration - rng.uniform(0.05, 0.15)
    while t < stop - 0.08:
        length = min(rng.lognormal(np.log(1.0 / rate), 0.25), stop - t)
        rows.append((t, t + length * rng.uniform(0.15, 0.35), t + length))
        t += length + (rng.uniform(0.08, 0.25) if rng.random() < 0.15 else 0.0)
    return np.array(rows)


def _envelopes(
    rng: np.random.Generator, syllables: np.ndarray, stress_db: np.ndarray, time: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Voicing (trapezoids over vowels) and frication (triangles over some onsets), per sample."""
    onset, nucleus, end = syllables.T
    length = end - nucleus
    rise, fall = np.minimum(0.02, 0.4 * length), np.minimum(0.04, 0.4 * length)
    level = 10 ** (stress_db / 20)
    zero = np.zeros_like(level)
    voicing = np.interp(
        time,
        np.stack([nucleus, nucleus + rise, end - fall, end], axis=1).ravel(),
        np.stack([zero, level, level, zero], axis=1).ravel(),
    )
    burst = rng.uniform(0.03, 0.2, len(onset)) * (rng.random(len(onset)) < 0.6)
    frication = np.interp(
        time,
        np.stack([onset, (onset + nucleus) / 2, nucleus], axis=1).ravel(),
        np.stack([zero, burst, zero], axis=1).ravel(),
    )
    return voicing, frication


def _pitch(
    rng: np.random.Generator,
    voice: _Voice,
    base_f0: float,
    centres: np.ndarray,
    accents: np.ndarray,
    rate: float,
    time: np.ndarray,
) -> np.ndarray:
    """f0 per sample: declination, syllable accents, final rise or fall, tremor and slow wander.

    The contour is smooth, so it is built on a 2 ms grid and interpolated, which is much cheaper.
    """
    duration = time[-1]
    grid = np.linspace(0.0, duration, int(duration * 500) + 2)
    rel = grid / duration
    semitones = voice.pitch_st - 2.0 * (rel - 0.5)
    semitones += voice.final_st * np.clip((rel - 0.67) / 0.33, 0.0, 1.0) ** 2
    bumps = np.exp(-0.5 * ((grid - centres[:, None]) * rate / 0.35) ** 2)
    semitones += voice.range_st * (accents[:, None] * bumps).sum(axis=0)
    for depth, hz in ((voice.tremor_st, rng.uniform(4.5, 6.5)), (0.4, 0.7), (0.4, 1.9)):
        semitones += depth * np.sin(2 * np.pi * hz * grid + rng.uniform(0, 2 * np.pi))
    return np.interp(time, grid, np.clip(base_f0 * 2 ** (semitones / 12), 50.0, 700.0))


def _pulses(rng: np.random.Generator, f0: np.ndarray, voicing: np.ndarray, voice: _Voice, sr: int) -> np.ndarray:
    """A glottal pulse wherever the cumulative phase wraps, jittered and shimmered.

    Each pulse is split between its two neighbouring samples, so the pitch is not quantised
    to whole-sample periods (which would add jitter of its own at high f0).
    """
    n = len(f0)
    phase = np.cumsum(f0) / sr
    after = np.flatnonzero(np.diff(np.floor(phase))) + 1
    position = after - 1 + (np.floor(phase[after]) - phase[after - 1]) / (phase[after] - phase[after - 1])
    position += rng.normal(0.0, voice.jitter, len(after)) * sr / f0[after]
    amplitude = (1.0 + voice.shimmer * rng.normal(size=len(after))).clip(0.0) * voicing[after]
    low = np.floor(position).astype(np.int64)
    keep = (low >= 0) & (low + 1 < n)
    low, frac, amplitude = low[keep], (position - low)[keep], amplitude[keep]
    source = np.zeros(n)
    np.add.at(source, low, amplitude * (1 - frac))
    np.add.at(source, low + 1, amplitude * frac)
    return source


def _synthesise(rng: np.random.Generator, speaker: _Speaker, emotion: str, n: int, sr: int) -> np.ndarray:
    """One utterance of ``n`` samples as floats in [-1, 1]."""
    voice = _draw_voice(rng, emotion)
    time = np.arange(n) / sr
    rate = voice.rate * speaker.rate_scale
    syllables = _syllables(rng, n / sr, rate)
    centres = syllables[:, 1:].mean(axis=1)
    accents = rng.uniform(0.0, 1.0, len(syllables))
    stress_db = 3.0 * accents + rng.normal(0.0, 1.5, len(syllables))
    voicing, frication = _envelopes(rng, syllables, stress_db, time)
    f0 = _pitch(rng, voice, speaker.base_f0, centres, accents, rate, time)
    source = _pulses(rng, f0, voicing, voice, sr)

    # One noise draw serves as breath (gated by voicing), a constant floor, and consonant hiss.
    active = voicing > 0.1
    noise = rng.standard_normal(n + 2)
    breath = 10 ** ((voice.breath_db + speaker.breath_db) / 20) * voicing + _FLOOR
    excitation = source + noise[:n] * breath * _rms(source, active) / _rms(noise[:n] * voicing, active)
    vowels = _VOWELS[rng.integers(len(_VOWELS), size=len(syllables))]
    vowels = vowels * speaker.formant_scale * rng.normal(1.0, 0.03)
    voiced = _vocal_tract(excitation, centres * sr, vowels, voice.tilt_db + speaker.tilt_db, sr)
    hiss = np.diff(noise, 2)  # a second difference tilts white noise toward the highs, like frication
    signal = voiced / _rms(voiced, active) + frication * hiss / np.sqrt(6.0)  # unit variance again

    signal *= _REFERENCE_RMS * 10 ** ((voice.level_db + speaker.level_db) / 20)
    peak = np.abs(signal).max()
    return signal * min(1.0, _PEAK / peak)


def _rms(x: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x[mask] ** 2) + 1e-12))


def _vocal_tract(excitation: np.ndarray, knots: np.ndarray, vowels: np.ndarray, tilt_db: float, sr: int) -> np.ndarray:
    """Filter with moving formants: shape 50 %-overlapping Hann frames in the FFT domain, overlap-add.

    Each frame's response crossfades between the vowel spectra at the neighbouring ``knots``
    (sample positions), which costs a small matrix product instead of a response per frame.
    Hann windows at half-frame hops sum to one, so the output keeps the excitation's level;
    resonances decay within a few milliseconds, far shorter than a frame, so the circular
    convolution inside each frame is harmless.
    """
    size = 1 << int(np.ceil(np.log2(0.032 * sr)))
    hop = size // 2
    n = len(excitation)
    frames_count = -(-n // hop) + 1
    padded = np.zeros((frames_count + 1) * hop)
    padded[hop : hop + n] = excitation
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / size)
    frames = np.lib.stride_tricks.sliding_window_view(padded, size)[::hop][:frames_count] * window

    freq = np.fft.rfftfreq(size, 1 / sr)
    peaks = np.minimum(vowels, 0.45 * sr)[:, :, None] ** 2
    squared = (peaks - freq**2) ** 2 + _BANDWIDTHS[:, None] ** 2 * freq**2
    tilt = (1 + (freq / 300.0) ** 2) ** (tilt_db / 12.04)  # tilt_db per octave well above 300 Hz
    spectra = peaks.prod(axis=1) / np.sqrt(squared.prod(axis=1)) * tilt
    centres = np.arange(frames_count) * hop
    crossfade = np.stack([np.interp(centres, knots, row) for row in np.eye(len(knots))], axis=1)
    response = crossfade @ spectra
    shaped = np.fft.irfft(np.fft.rfft(frames, axis=1) * response, size, axis=1)

    out = np.zeros((frames_count + 1, hop))
    out[:-1] += shaped[:, :hop]
    out[1:] += shaped[:, hop:]
    return out.ravel()[hop : hop + n]


def _utterances(spec: SyntheticSpec) -> Iterator[tuple[str, str, np.ndarray]]:
    """(relative path, emotion, int16 samples) for every utterance, in sorted path order.

    Zero-padded numbers wide enough for the corpus size keep numeric and path order the same.
    """
    speaker_width = max(2, len(str(spec.speakers)))
    utterance_width = max(2, len(str(spec.per_speaker_per_emotion)))
    low = int(np.ceil(spec.min_duration_s * spec.sample_rate))
    high = int(np.floor(spec.max_duration_s * spec.sample_rate))
    for s in range(spec.speakers):
        speaker_id = f"s{s + 1:0{speaker_width}d}"
        speaker = _speaker(spec.seed, s)
        for e, emotion in enumerate(EMOTIONS):
            for u in range(spec.per_speaker_per_emotion):
                rng = np.random.default_rng([spec.seed, s, e, u])
                n = int(rng.integers(low, high + 1))
                signal = _synthesise(rng, speaker, emotion, n, spec.sample_rate)
                pcm = np.round(np.clip(signal, -1.0, 1.0) * 32767).astype(np.int16)
                name = f"{speaker_id}_{emotion}_{u + 1:0{utterance_width}d}.wav"
                yield f"{speaker_id}/{emotion}/{name}", emotion, pcm


def _source_digest() -> str:
    """Hash of this module's code: a corpus made by an older generator is rebuilt, not reused."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _stamp(spec: SyntheticSpec) -> dict:
    return {"generator": _GENERATOR, "format": FORMAT_VERSION, "code": _source_digest(), "spec": asdict(spec)}


def _read_stamp(root: Path) -> dict | None:
    """The stamp of a corpus this module wrote, or None if ``root`` holds anything else."""
    try:
        stamp = json.loads((root / "spec.json").read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("generator") == _GENERATOR else None


def _is_ready(root: Path, spec: SyntheticSpec) -> bool:
    return (root / "manifest.csv").is_file() and _read_stamp(root) == _stamp(spec)


def _write_corpus(target: Path, spec: SyntheticSpec) -> None:
    """Write audio, then the manifest, then the stamp: the stamp is what marks it complete."""
    rows = []
    for path, emotion, pcm in _utterances(spec):
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(target / path), pcm, spec.sample_rate, subtype="PCM_16", format="WAV")
        rows.append((path, emotion, path.split("/", 1)[0]))
    with open(target / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "label", "speaker"))
        writer.writerows(sorted(rows))
    (target / "spec.json").write_text(json.dumps(_stamp(spec), indent=2, sort_keys=True) + "\n")


def generate(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Make the corpus at ``root`` unless it is already there; return its ``manifest.csv``.

    The corpus is built in a temporary sibling and renamed into place under a lock, so a
    crash never leaves a half corpus that looks complete and concurrent callers build it
    once. A non-empty ``root`` that this module did not write is refused, never overwritten.
    """
    root = Path(root).expanduser().absolute()
    manifest = root / "manifest.csv"
    if _is_ready(root, spec):
        return manifest
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.with_name(root.name + ".lock"))):
        if _is_ready(root, spec):
            return manifest
        if root.exists() and (not root.is_dir() or (any(root.iterdir()) and _read_stamp(root) is None)):
            raise DataError(f"{root}: exists and is not a synthetic corpus; choose an empty or new directory for it")
        for stale in root.parent.glob(f".{glob.escape(root.name)}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted run; we hold the lock
        staging = create_temp_dir(root.parent, prefix=f".{root.name}.", suffix=".tmp")  # umask mode, not 0700
        try:
            _write_corpus(staging, spec)
            if root.exists():
                # An empty directory, or a corpus of another spec or format: swap it out.
                retired = create_temp_dir(root.parent, prefix=f".{root.name}.", suffix=".old")
                os.replace(root, retired / "corpus")
                os.replace(staging, root)
                shutil.rmtree(retired)
            else:
                os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest
