"""The C library for feature settings no trained fixture covers: a model file written directly (random codes,
statistics of the features of a few signals), exported, compiled warning-free, and compared with the numpy
runtime on whole clips (features within 1e-4 of each block's largest value; probabilities of this random,
sharply peaked network within 1e-3) and, where it streams, with `ser listen`: the front end is generic over
FeatureConfig, not tuned to one recipe."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from ser.dsp.feature_config import FeatureConfig
from ser.runtime import c_export
from ser.runtime.features import Extractor
from ser.runtime.listen import listen
from ser.runtime.model import QuantizedModel
from ser.runtime.serq import LayerSpec, SerqHeader, SerqModel
from tests.data.test_features import _speechlike
from tests.runtime.test_c_runtime import CC, CFLAGS, _need

SETTINGS = {
    # mel power alone: no dB, so it streams whatever db_floor says
    "mel-power": FeatureConfig(sample_rate=16000, n_fft=512, hop_length=200, n_mels=32, parts=("mel",)),
    # magnitude chroma, mean and std
    "chroma-magnitude": FeatureConfig(
        sample_rate=16000,
        n_fft=1024,
        hop_length=256,
        parts=("chroma",),
        chroma_power=1.0,
        stats=("mean", "std"),
        db_floor="absolute",
    ),
    # chroma from power^0.75, MFCC over 40 bands (the DCT without an FFT: 40 is not a power of two)
    "odd-bands": FeatureConfig(
        sample_rate=16000,
        n_fft=512,
        hop_length=128,
        n_mels=40,
        n_mfcc=20,
        chroma_power=1.5,
        parts=("mfcc", "chroma"),
        db_floor="absolute",
    ),
    # librosa's YIN and peak floors: whole clips only, two passes
    "exact-pitch": FeatureConfig(
        sample_rate=16000,
        n_fft=512,
        hop_length=160,
        n_mels=40,
        n_mfcc=13,
        f0_min=80.0,
        parts=("mfcc", "pitch", "spectral"),
        stats=("mean", "std"),
    ),
    # 8 kHz: YIN's inverse FFT as long as the frame's (step 1)
    "8k-stft-pitch": FeatureConfig(
        sample_rate=8000,
        n_fft=256,
        hop_length=80,
        n_mels=24,
        n_mfcc=12,
        f0_min=70.0,
        f0_max=400.0,
        contrast_fmin=150.0,
        contrast_bands=4,
        parts=("mfcc", "pitch", "spectral"),
        stats=("mean", "std"),
        db_floor="absolute",
        yin_acf="stft",
        mel_db=True,
    ),
}
LAYERS = ((1, "symmetric"), (5, "full"))  # widths and grids; hidden layer of 37 units (rows not byte multiples)


def _model(config: FeatureConfig, path) -> tuple[QuantizedModel, SerqModel]:
    """A random MLP on ``config``'s features, written to ``path``: the runtime's model of the file, and the
    typed contents the C library is generated from."""
    rng = np.random.default_rng(0)
    signals = [_speechlike(i, 1.0 + 0.3 * i) for i in range(4)]
    features = np.stack([Extractor(config)(s) for s in signals])
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-3 * np.abs(features).max()
    widths, arrays, layers = [config.dim, 37, 5], {"feature_mean": mean, "feature_std": std}, []
    for i, (bits, grid) in enumerate(LAYERS):
        name, shape = f"net.{i}", (widths[i + 1], widths[i])
        layers.append(LayerSpec(name, shape, bits, grid, "relu" if i == 0 else "none"))
        arrays[f"{name}.codes"] = rng.integers(0, 1 << bits, shape).astype(np.uint8)
        arrays[f"{name}.scales"] = np.array([0.5 / np.sqrt(shape[1])], np.float32)
        arrays[f"{name}.bias"] = rng.normal(0, 0.1, shape[0]).astype(np.float32)
    serq = SerqModel(SerqHeader(["a", "b", "c", "d", "e"], config, layers), arrays)
    serq.write(path)
    return QuantizedModel.load(path), serq


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_c_library_computes_what_the_numpy_runtime_does_for_these_settings(name, tmp_path):
    _need(CC)
    config = SETTINGS[name]
    model, serq = _model(config, tmp_path / "model.serq")
    summary = c_export.generate(serq, tmp_path / "c", window_s=0.9, hop_s=0.3)
    proc = subprocess.run(
        [CC, *CFLAGS, "-o", "ser_cli", "main.c", "ser.c", "ser_model.c", "-lm"],
        cwd=tmp_path / "c",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    rng = np.random.default_rng(1)
    signal = np.concatenate([_speechlike(7, 1.3), np.zeros(3000, np.float32), _speechlike(8, 0.8)])
    signal = np.clip(signal + 1e-4 * rng.standard_normal(len(signal)), -1, 1)
    pcm = np.rint(signal * 32767).astype(np.int16)
    wav = tmp_path / "clip.wav"
    sf.write(wav, pcm, config.sample_rate, subtype="PCM_16")
    reference = Extractor(config)(pcm.astype(np.float32) / 32768.0)
    out = subprocess.run(
        [str(tmp_path / "c" / "ser_cli"), "--features", str(wav)], capture_output=True, text=True, check=True
    ).stdout
    features = np.array(json.loads(out)["features"])
    for block_name, block in config.blocks():
        assert np.abs(features[block] - reference[block]).max() <= 1e-4 * np.abs(reference[block]).max(), block_name
    out = subprocess.run([str(tmp_path / "c" / "ser_cli"), str(wav)], capture_output=True, text=True, check=True).stdout
    got = np.array([json.loads(out)["probabilities"][k] for k in model.classes])
    np.testing.assert_allclose(got, model.probabilities(reference)[0], atol=1e-3)
    assert summary["streaming"] == (name != "exact-pitch")
    if summary["streaming"]:
        out = subprocess.run(
            [str(tmp_path / "c" / "ser_cli"), "--stream", "--random-chunks", "5", str(wav)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        c = [json.loads(line) for line in out.splitlines()]
        reference = list(listen(model, iter([pcm.astype(np.float32) / 32768.0]), config.sample_rate, 0.9, 0.3))
        assert [line["samples"][0] / config.sample_rate for line in c] == pytest.approx(
            [r["start"] for r in reference], abs=1e-4
        )
        assert len(c) == len(reference) > 2
        for line, ref in zip(c, reference):
            np.testing.assert_allclose(
                [line["probabilities"][k] for k in model.classes],
                [ref["probabilities"][k] for k in model.classes],
                atol=1e-3,
            )
