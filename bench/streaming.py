"""The streaming C runtime of trained runs on the emulated Cortex-M4 (MPS2-AN386 under qemu):

    python bench/streaming.py RUN_DIR [RUN_DIR ...] [--bits N] [--seconds 10] [--audio a.wav ...]

Each run is exported (`ser export RUN --c DIR`: the LAQ model, or every layer at --bits N) and measured:

- flash (text + data) and static RAM (data + bss, a 512-sample DMA double buffer included) of the size probe,
  and the stack `ser_push` used (painted on the emulated board): total RAM = static + stack;
- instructions per second of streamed audio, model included, with every window open (`qemu -icount`: one
  instruction per virtual nanosecond; the first --seconds of the audio), and the real-time factor at 80 MHz:
  at 1 cycle per instruction (the target's 8 M instructions = 0.1) and at CPI_ASSUMED;
- parity with `ser listen` on the same audio (the host build of the same library): windows deciding the same
  class, and the largest difference of a probability.

Audio: the --audio files back to back, else 30 EMODB utterances ($SER_EMODB_ROOT, every 18th file); resampled
to the model's rate as `ser listen` would be fed. Needs gcc, make, gcc-arm-none-eabi, libnewlib-arm-none-eabi,
qemu-system-arm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ser.dsp.audio import load_audio
from ser.export import main as export_main
from ser.runtime import c_measure
from ser.runtime.listen import listen
from ser.runtime.model import QuantizedModel

CLOCK = 80e6
# Cycles per instruction assumed for the cycle estimate: the front end is single-precision FPU code whose
# loads take 2 cycles unless pipelined, VMLA/VMLS 3, VSQRT/VDIV 14, taken branches 2-4, run from flash through
# the ST ART accelerator's prefetch and cache (docs/deploying.md: the instruction mix behind 1.5).
CPI_ASSUMED = 1.5


def audio(paths: list[Path], rate: int) -> np.ndarray:
    signal = np.concatenate([load_audio(p, rate) for p in paths])
    return np.clip(np.rint(signal * 32768), -32768, 32767).astype(np.int16)


def parity(model: QuantizedModel, c_dir: Path, pcm: np.ndarray, tmp: Path) -> tuple[int, int, float]:
    """(windows, windows with the same class, max |Δp|) of the host library against `ser listen`."""
    subprocess.run(["make", "ser_cli"], cwd=c_dir, capture_output=True, check=True)
    wav = tmp / "stream.wav"
    sf.write(wav, pcm, model.features.sample_rate, subtype="PCM_16")
    out = subprocess.run(
        [str(c_dir / "ser_cli"), "--stream", str(wav)], capture_output=True, text=True, check=True
    ).stdout
    c = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    window_s, hop_s = c_window(c_dir, model)
    reference = list(
        listen(model, iter([pcm.astype(np.float32) / 32768.0]), model.features.sample_rate, window_s, hop_s)
    )
    if len(c) != len(reference):
        raise SystemExit(f"{c_dir}: {len(c)} windows from C, {len(reference)} from ser listen")
    same = sum(a["emotion"] == b["emotion"] for a, b in zip(c, reference))
    worst = max(abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(c, reference) for k in model.classes)
    return len(c), same, worst


def c_window(c_dir: Path, model: QuantizedModel) -> tuple[float, float]:
    """The library's window and hop in seconds (as exported: `ser listen` rounds them back to the same samples)."""
    header = (c_dir / "ser_model.h").read_text()
    value = {name: int(header.split(f"#define {name} ")[1].split()[0]) for name in ("SER_WINDOW", "SER_WINDOW_HOP")}
    rate = model.features.sample_rate
    return value["SER_WINDOW"] / rate, value["SER_WINDOW_HOP"] / rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories written by train.py")
    parser.add_argument("--bits", type=int, help="export every layer at this width instead of the LAQ allocation")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio streamed on the emulated board (default 10)")
    parser.add_argument("--audio", nargs="+", type=Path, help="audio files (default: 30 EMODB utterances)")
    args = parser.parse_args()
    missing = c_measure.missing_tools()
    if missing:
        raise SystemExit(
            f"error: {', '.join(missing)} not installed (apt-get install gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi qemu-system-arm make)"
        )
    files = args.audio
    if files is None:
        root = os.environ.get("SER_EMODB_ROOT")
        if not root:
            raise SystemExit("error: give --audio files, or set SER_EMODB_ROOT to EMODB's directory")
        files = sorted((Path(root) / "wav").glob("*.wav"))[::18]
    print(
        "| run | window / hop | flash | static RAM | stack | RAM | instructions / s of audio | RTF @ 80 MHz "
        f"(CPI 1 / {CPI_ASSUMED}) | same class as `ser listen` | max \\|Δp\\| |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            options = ["--bits", str(args.bits)] if args.bits else []
            if export_main([str(run), *options, "-o", str(tmp / "model.serq"), "--c", str(tmp / "c")]) != 0:
                raise SystemExit(f"error: {run}: export failed")
            model = QuantizedModel.load(tmp / "model.serq")
            if "#define SER_STREAMING 1" not in (tmp / "c" / "ser_model.h").read_text():
                print(
                    f"{run}: trained with dB floors below each clip's peak (data.features.db_floor=peak): "
                    "whole clips only, nothing to stream",
                    file=sys.stderr,
                )
                continue
            pcm = audio(files, model.features.sample_rate)
            size = c_measure.sizes(tmp / "c")
            wav = tmp / "bench.wav"
            head = pcm[: int(args.seconds * model.features.sample_rate)]
            sf.write(wav, head, model.features.sample_rate, subtype="PCM_16")
            stack = c_measure.stack_bytes(tmp / "c", wav)
            count = c_measure.instructions(tmp / "c", head)
            windows, same, worst = parity(model, tmp / "c", pcm, tmp)
            window_s, hop_s = c_window(tmp / "c", model)
            rtf = count.per_second / CLOCK
            print(
                f"| {run} | {window_s:g} s / {hop_s:.4g} s | {size.flash / 1000:.1f} KB | {size.static_ram / 1000:.1f} KB "
                f"| {stack} B | {(size.static_ram + stack) / 1000:.1f} KB | {count.per_second / 1e6:.2f} M "
                f"| {rtf:.3f} / {rtf * CPI_ASSUMED:.3f} | {same}/{windows} | {worst:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
