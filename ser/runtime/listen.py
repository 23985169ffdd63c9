"""``ser listen model.serq [-|file.wav]``: live emotion over a sliding window, numpy only.

Reads raw 16-bit little-endian mono PCM from standard input (``-``, the default), e.g.

    arecord -q -f S16_LE -c 1 -r 22050 | ser listen model.serq -

or an audio file, and predicts every ``--hop`` seconds over the last ``--window`` seconds. One
JSON line per window: ``{"start", "end", "emotion", "probabilities", "time_ms"}`` (times in
seconds of audio). The hop is rounded to whole feature frames (``window_samples``): 0.5 s is 22 frames of
512 samples, 0.5108 s, at 22,050 Hz. At the end the real-time factor (seconds spent computing, not waiting for
audio, per second of audio) goes to stderr. Standard input is read at ``--rate`` Hz (default: the model's); at another rate each
window is resampled (soxr) before its features.

A speaker-normalised model (``data.normalize=speaker``) keeps a running estimate of the
speaker's statistics, as ``ser predict --adapt`` does: it is updated with each window that does
not overlap the last window it was updated with (so no audio counts twice), and every window is
predicted with the estimate so far (the training population's statistics until the first
update; a line's ``speaker_windows`` says how many windows the estimate holds). ``--speaker
s.json`` (from ``ser enroll``) uses fixed statistics instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel


def _stdin_chunks(stream: BinaryIO, samples: int) -> Iterator[np.ndarray]:
    """float32 blocks of up to ``samples`` samples (int16 / 32768, as soundfile decodes 16-bit PCM)."""
    pending = b""
    while True:
        data = stream.read(2 * samples - len(pending))
        if not data:
            break
        pending += data
        if len(pending) >= 2 * samples:
            yield np.frombuffer(pending[: 2 * samples], dtype="<i2").astype(np.float32) / 32768.0
            pending = pending[2 * samples :]
    usable = len(pending) - len(pending) % 2
    if usable:
        yield np.frombuffer(pending[:usable], dtype="<i2").astype(np.float32) / 32768.0


def window_samples(config: FeatureConfig, window_s: float, hop_s: float, rate: int | None = None) -> tuple[int, int]:
    """A window of ``window_s`` seconds every ``hop_s`` seconds, in samples at ``rate`` (default the model's).

    The hop is rounded to whole feature frames (``hop_length`` samples at the model's rate), so that
    overlapping windows frame the audio alike: a frame inside several windows is the same frame in each,
    which the streaming C runtime computes once (``ser export --c``)."""
    sr = config.sample_rate
    rate = rate or sr
    hop = max(1, round(hop_s * sr / config.hop_length)) * config.hop_length
    return max(1, round(window_s * rate)), max(1, round(hop * rate / sr))


def windows(chunks: Iterator[np.ndarray], window: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first sample, samples) of every full window, every ``hop`` samples; a stream shorter than
    one window gives one window of what there is."""
    buffer = np.zeros(0, dtype=np.float32)
    start, emitted = 0, False  # start: stream position of buffer[0]
    for chunk in chunks:
        buffer = np.concatenate([buffer, chunk])
        while len(buffer) >= window:
            yield start, buffer[:window]
            emitted = True
            buffer, start = buffer[hop:], start + hop
    if not emitted and len(buffer):
        yield start, buffer


def listen(
    model: QuantizedModel, chunks: Iterator[np.ndarray], rate: int, window_s: float, hop_s: float, speaker=None
) -> Iterator[dict]:
    """One result per window of the stream ``chunks`` (float32 samples at ``rate`` Hz)."""
    window, hop = window_samples(model.features, window_s, hop_s, rate)
    extractor = Extractor(model.features)
    running = model.running() if model.speaker_normalized and speaker is None else None
    last_update, updates = None, 0
    for first, samples in windows(chunks, window, hop):
        began = time.perf_counter()
        signal = samples
        if rate != model.features.sample_rate:
            import soxr

            signal = soxr.resample(samples, rate, model.features.sample_rate, quality="HQ").astype(np.float32)
        features = extractor(signal)
        stats = speaker
        if running is not None:
            if last_update is None or first >= last_update + window:
                running.update(features)
                last_update, updates = first, updates + 1
            stats = running.current
        probabilities = model.probabilities(features, stats)[0]
        best = int(probabilities.argmax())
        yield {
            "start": round(first / rate, 4),
            "end": round((first + len(samples)) / rate, 4),
            "emotion": model.classes[best],
            "probabilities": {c: round(float(p), 6) for c, p in zip(model.classes, probabilities)},
            "time_ms": round(1000 * (time.perf_counter() - began), 3),
            **({"speaker_windows": updates} if running is not None else {}),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ser listen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a .serq file written by `ser export`")
    parser.add_argument(
        "input",
        nargs="?",
        default="-",
        help="'-' (default): 16-bit little-endian mono PCM on standard input; else an audio file",
    )
    parser.add_argument("--window", type=float, default=2.0, help="seconds of audio per prediction (default 2)")
    parser.add_argument("--hop", type=float, default=0.5, help="seconds between predictions (default 0.5)")
    parser.add_argument("--rate", type=int, help="sample rate of standard input (default: the model's)")
    parser.add_argument(
        "--speaker",
        type=Path,
        metavar="SPEAKER.json",
        help="fixed speaker statistics from `ser enroll` instead of a running estimate",
    )
    args = parser.parse_args(argv)
    if args.window <= 0 or args.hop <= 0:
        parser.error("--window and --hop must be positive")
    try:
        model = QuantizedModel.load(args.model)
        speaker = None
        if args.speaker is not None:
            from ser.runtime import enroll

            model.check_speaker(model.population if model.speaker_normalized else None)
            speaker = enroll.load(args.speaker, model)
        if args.input == "-":
            rate = args.rate or model.features.sample_rate
            chunks = _stdin_chunks(sys.stdin.buffer, max(1, round(args.hop * rate)))
        else:
            from ser.dsp.audio import load_audio

            rate = model.features.sample_rate
            chunks = iter([load_audio(args.input, rate)])
    except SERError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    busy, audio_end, count = 0.0, 0.0, 0  # busy: seconds spent computing (not waiting for audio)
    try:
        for line in listen(model, chunks, rate, args.window, args.hop, speaker):
            print(json.dumps(line), flush=True)
            audio_end, count, busy = max(audio_end, line["end"]), count + 1, busy + line["time_ms"] / 1000
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        return 0
    rtf = busy / audio_end if audio_end else float("nan")
    print(
        f"ser listen: {count} windows over {audio_end:.2f} s of audio, {busy:.3f} s of computing: real-time "
        f"factor {rtf:.4f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
