"""Deployment numbers for one run, measured in one process:

    python bench/runtime.py <run dir>

- file size of the LAQ .serq vs its theoretical size vs the fp32 checkpoint;
- per-utterance latency (decode + features + model) of the numpy runtime vs the torch
  path, for a 2-second clip;
- model-only throughput (utterances/s) of both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ser.data.features import FeatureExtractor
from ser.dsp.audio import load_audio
from ser.export import Deployed, ExportSource, theoretical_bytes, write_serq
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel


def best_of(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    source = ExportSource.load(args.run_dir)
    work = Path(tempfile.mkdtemp())
    size = write_serq(source, work / "model.serq")
    fp32 = sum(v.numel() for k, v in source.state.items() if k.startswith("net.")) * 4
    print(
        f"LAQ bits {source.bits}, grids {sorted({layer.grid for layer in source.layers.values()})}, from {source.origin}"
    )
    ckpt = f"{source.checkpoint.stat().st_size / 1000:.1f} KB" if source.checkpoint is not None else "absent"
    print(
        f".serq file {size / 1000:.1f} KB | theoretical {theoretical_bytes(source) / 1000:.1f} KB | "
        f"fp32 weights {fp32 / 1000:.1f} KB | best.ckpt on disk {ckpt}"
    )

    model = QuantizedModel.load(work / "model.serq")
    rate = model.features.sample_rate
    t = np.arange(2 * rate) / rate
    clip = work / "clip.wav"
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), rate)

    numpy_features = Extractor(model.features)
    torch_features = FeatureExtractor(model.features)
    deployed = Deployed(source)
    # A speaker-normalised model is timed with the population's statistics (what it uses
    # before a speaker has enrolled); the arithmetic is the same with anyone's.
    speaker = model.population

    def torch_model(x: np.ndarray):
        if speaker is None:
            return deployed(torch.from_numpy(x))
        rows = lambda a: torch.from_numpy(np.broadcast_to(a, x.shape).copy())  # noqa: E731
        return deployed(torch.from_numpy(x), rows(speaker.mean), rows(speaker.std))

    def runtime_path():
        return model.probabilities(numpy_features(load_audio(clip, rate)), speaker)

    def torch_path():
        with torch.inference_mode():
            return torch_model(torch_features([load_audio(clip, rate)]))

    rt, tt = best_of(runtime_path, args.repeat), best_of(torch_path, args.repeat)
    print(
        f"2-s clip, decode + features + model: numpy runtime {1000 * rt:.2f} ms | torch {1000 * tt:.2f} ms | "
        f"ratio torch/runtime {tt / rt:.2f}"
    )

    batch = (
        np.random.default_rng(0).standard_normal((1000, model.mean.size)).astype(np.float32) * model.std + model.mean
    )
    rm = best_of(lambda: model.probabilities(batch, speaker), 5)
    with torch.inference_mode():
        tm = best_of(lambda: torch_model(batch), 5)
    print(f"model only, batch of 1000: numpy runtime {1000 / rm:,.0f} utt/s | torch {1000 / tm:,.0f} utt/s")
    one = batch[:1]
    r1 = best_of(lambda: model.probabilities(one, speaker), 200)
    with torch.inference_mode():
        t1 = best_of(lambda: torch_model(one), 200)
    print(f"model only, one utterance: numpy runtime {1e6 * r1:.0f} µs | torch {1e6 * t1:.0f} µs")


if __name__ == "__main__":
    main()
