"""Feature extraction speed: batched torch vs a per-file librosa loop, same settings, one run.

    python bench/features.py                    # the built-in corpus
    python bench/features.py --root DIR         # every .wav under DIR (e.g. an EMODB copy)

Both sides get the same decoded, resampled audio, so the ratio measures feature computation;
the decode time is printed separately. Timings on shared machines are noisy, so each side
is run ``--repeat`` times, interleaved, and the best of each is compared.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import librosa
import numpy as np
import torch

from ser.data import synthetic
from ser.data.audio import load_audio
from ser.data.datamodule import default_cache_dir
from ser.data.features import FeatureConfig, FeatureExtractor


def librosa_features(y: np.ndarray, c: FeatureConfig) -> np.ndarray:
    """The paper's vector, the usual way: one file at a time with librosa.feature.*."""
    common = dict(sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length)
    mfcc = librosa.feature.mfcc(y=y, n_mfcc=c.n_mfcc, n_mels=c.n_mels, **common)
    chroma = librosa.feature.chroma_stft(y=y, tuning=c.tuning, n_chroma=c.n_chroma, **common)
    mel = librosa.feature.melspectrogram(y=y, n_mels=c.n_mels, **common)
    return np.concatenate([mfcc.mean(axis=1), chroma.mean(axis=1), mel.mean(axis=1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="directory of .wav files (default: the built-in corpus)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    root = args.root or synthetic.generate(default_cache_dir() / "corpora" / "synthetic").parent
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav")
    config = FeatureConfig()

    start = time.perf_counter()
    signals = [load_audio(f, config.sample_rate) for f in files]
    decode_s = time.perf_counter() - start
    extractor = FeatureExtractor(config, batch_size=args.batch_size)
    extractor(signals[:4])
    librosa_features(signals[0], config)

    torch_s, librosa_s = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        ours = extractor(signals)
        torch_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = np.stack([librosa_features(y, config) for y in signals])
        librosa_s.append(time.perf_counter() - start)
    rel = np.abs(ours - ref).max(axis=0) / (np.abs(ref).max(axis=0) + 1e-12)
    seconds = sum(len(s) for s in signals) / config.sample_rate
    print(f"files: {len(files)} ({seconds:.0f} s of audio) from {root}; torch threads: {torch.get_num_threads()}")
    print(f"decode + resample (shared by both): {decode_s:.2f} s")
    print(f"librosa per-file loop: best {min(librosa_s):.3f} s of {[round(t, 3) for t in librosa_s]}")
    print(f"torch batched (batch {args.batch_size}): best {min(torch_s):.3f} s of {[round(t, 3) for t in torch_s]}")
    print(f"speed-up: {min(librosa_s) / min(torch_s):.1f}x   (max relative difference {rel.max():.2e})")


if __name__ == "__main__":
    main()
