"""Feature extraction speed: batched torch vs a per-file librosa loop, same settings, one run.

    python bench/features.py                    # the built-in corpus
    python bench/features.py --root DIR         # every .wav under DIR (e.g. an EMODB copy)

Both sides get the same decoded, resampled audio, so the ratio measures feature computation;
the decode time is printed separately. Ours is ``ser.data.extraction.extract_signals``: the
chunks and the thread policy of training's feature extraction, timed from the policy's first
look at the load to the last feature (on CPU the policy's threads each compute whole batches
with one torch thread). librosa is left as it comes, multithreaded BLAS included. Two figures
come from one run:

- as found: the machine as it is when the bench starts (idle, if nothing else runs);
- under load: the bench starts one busy-loop process (numpy, one thread) per core it may use,
  lets them run for a second, measures, and stops them.

Timings on shared machines are noisy, so each side is run ``--repeat`` times, interleaved,
and the best of each is compared. The 1-minute load average before each phase is printed,
and the CPU time of each side (all its threads), which other processes disturb far less
than wall time: on a machine that is not idle it bounds what the idle ratio can be.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import librosa
import numpy as np
import torch

from ser.data import synthetic
from ser.data.datamodule import default_cache_dir
from ser.data.extraction import ThreadPolicy, _cpus, extract_signals
from ser.data.features import FeatureConfig, FeatureExtractor
from ser.dsp.audio import load_audio

BUSY = "import numpy as np\nx = np.random.rand(200, 200)\nwhile True:\n    x = np.tanh(x @ x)\n"


def librosa_features(y: np.ndarray, c: FeatureConfig) -> np.ndarray:
    """The paper's vector, the usual way: one file at a time with librosa.feature.*."""
    common = dict(sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length)
    mfcc = librosa.feature.mfcc(y=y, n_mfcc=c.n_mfcc, n_mels=c.n_mels, **common)
    chroma = librosa.feature.chroma_stft(y=y, tuning=c.tuning, n_chroma=c.n_chroma, **common)
    mel = librosa.feature.melspectrogram(y=y, n_mels=c.n_mels, **common)
    return np.concatenate([mfcc.mean(axis=1), chroma.mean(axis=1), mel.mean(axis=1)])


@contextmanager
def background_load(processes: int):
    """``processes`` single-threaded numpy busy loops, stopped (by their own pid) on exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", BUSY], env=env) for _ in range(processes)]
    try:
        time.sleep(1.5)  # started, and visible in /proc/stat
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def measure(name: str, extractor: FeatureExtractor, signals, config: FeatureConfig, repeat: int) -> float:
    load = os.getloadavg()[0]
    policy = ThreadPolicy()
    threads = policy.threads()
    ours_s, librosa_s, ours_cpu, librosa_cpu = [], [], [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        ours = extract_signals(extractor, signals)
        ours_s.append(time.perf_counter() - start)
        ours_cpu.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        ref = np.stack([librosa_features(y, config) for y in signals])
        librosa_s.append(time.perf_counter() - start)
        librosa_cpu.append(time.process_time() - cpu)
    rel = np.abs(ours - ref).max(axis=0) / (np.abs(ref).max(axis=0) + 1e-12)
    ratio = min(librosa_s) / min(ours_s)
    print(f"[{name}] load average before: {load:.2f}; threads the policy picks: {threads}")
    print(f"[{name}] librosa per-file loop: best {min(librosa_s):.3f} s of {[round(t, 3) for t in librosa_s]}")
    print(
        f"[{name}] ser extraction (batch {extractor.batch_size}): best {min(ours_s):.3f} s of {[round(t, 3) for t in ours_s]}"
    )
    print(f"[{name}] speed-up: {ratio:.1f}x   (max relative difference {rel.max():.2e})")
    print(
        f"[{name}] CPU seconds (all threads), best: librosa {min(librosa_cpu):.3f}, ser {min(ours_cpu):.3f}: "
        f"{min(librosa_cpu) / min(ours_cpu):.1f}x less CPU work",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="directory of .wav files (default: the built-in corpus)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--load-processes",
        type=int,
        default=len(_cpus()),
        help="busy-loop processes for the 'under load' figure (default: one per usable core)",
    )
    args = parser.parse_args()
    root = args.root or synthetic.generate(default_cache_dir() / "corpora" / "synthetic").parent
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav")
    config = FeatureConfig()

    start = time.perf_counter()
    signals = [load_audio(f, config.sample_rate) for f in files]
    decode_s = time.perf_counter() - start
    extractor = FeatureExtractor(config, batch_size=args.batch_size)
    extract_signals(extractor, signals[:4])
    librosa_features(signals[0], config)
    seconds = sum(len(s) for s in signals) / config.sample_rate
    print(
        f"files: {len(files)} ({seconds:.0f} s of audio) from {root}; cores: {len(_cpus())}; "
        f"threads at most: {torch.get_num_threads()}"
    )
    print(f"decode + resample (shared by both): {decode_s:.2f} s", flush=True)
    found = measure("as found", extractor, signals, config, args.repeat)
    with background_load(args.load_processes):
        loaded = measure(f"under load: {args.load_processes} busy processes", extractor, signals, config, args.repeat)
    print(f"summary: {found:.1f}x as found, {loaded:.1f}x under load")


if __name__ == "__main__":
    main()
