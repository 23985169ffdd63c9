"""``ser export --c``: the generated C99 library, compiled with the system compiler, predicts what the
numpy runtime predicts (same class on every clip, probabilities within 1e-3); valgrind-clean; and,
where Debian's arm-none-eabi toolchain and qemu are installed, fits a Cortex-M4 and runs on an
emulated MPS2-AN386 board."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.dsp.audio import load_audio
from ser.dsp.feature_config import FeatureConfig
from ser.errors import SERError
from ser.export import main as export_main
from ser.runtime import c_export
from ser.runtime.features import Extractor
from ser.runtime.model import QuantizedModel
from tests.conftest import env_path, run_train
from tests.runtime.conftest import SMALL_FEATURES

CC = os.environ.get("CC", "cc")
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
TOLERANCE = 1e-3


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
            "qemu-system-arm valgrind)"
        )


def _build(c_dir: Path) -> Path:
    _need(CC)
    proc = subprocess.run(
        [CC, *CFLAGS, "-o", "ser_cli", "main.c", "ser.c", "ser_model.c", "-lm"],
        cwd=c_dir,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warnings either
    return c_dir / "ser_cli"


def _clips(files, model: QuantizedModel, out: Path) -> list[tuple[Path, np.ndarray]]:
    """Each file decoded (and resampled) as the numpy runtime does, saved as a float WAV at the model's rate."""
    out.mkdir(parents=True, exist_ok=True)
    sr = model.features.sample_rate
    clips = []
    for i, f in enumerate(files):
        signal = load_audio(f, sr)
        path = out / f"{i:03d}_{Path(f).stem}.wav"
        sf.write(path, signal, sr, subtype="FLOAT")
        clips.append((path, signal))
    return clips


def _c_probabilities(cli: Path, paths, model: QuantizedModel, *options: str, runner=()) -> np.ndarray:
    proc = subprocess.run([*runner, str(cli), *options, *map(str, paths)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [Path(line["file"]).name for line in lines] == [Path(p).name for p in paths]
    return np.array([[line["probabilities"][c] for c in model.classes] for line in lines])


def _assert_parity(c: np.ndarray, reference: np.ndarray) -> None:
    assert c.shape == reference.shape
    np.testing.assert_array_equal(c.argmax(axis=1), reference.argmax(axis=1))
    assert np.abs(c - reference).max() <= TOLERANCE


@pytest.fixture(scope="module")
def c_default(default_run, tmp_path_factory):
    """The default run (paper MLP, LAQ) exported as .serq and C, compiled, with its test clips."""
    run_dir, _ = default_run
    out = tmp_path_factory.mktemp("c_default")
    assert export_main([str(run_dir), "-o", str(out / "model.serq"), "--c", str(out / "c")]) == 0
    model = QuantizedModel.load(out / "model.serq")
    files = [row["path"] for row in csv.DictReader(open(run_dir / "splits" / "test.csv"))]
    return model, _build(out / "c"), _clips(files, model, out / "clips"), out


def _numpy(model: QuantizedModel, clips, speaker=None) -> np.ndarray:
    extractor = Extractor(model.features)
    return np.stack([model.probabilities(extractor(signal), speaker)[0] for _, signal in clips])


def test_c_library_matches_the_numpy_runtime_on_every_test_clip(c_default):
    model, cli, clips, _ = c_default
    assert len(clips) >= 20
    _assert_parity(_c_probabilities(cli, [p for p, _ in clips], model), _numpy(model, clips))


def test_c_library_is_self_contained_const_and_heap_free(c_default):
    _, _, _, out = c_default
    source = (out / "c" / "ser.c").read_text() + (out / "c" / "ser_model.c").read_text()
    assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", source)
    includes = set(re.findall(r"#include [<\"]([^>\"]+)[>\"]", source))
    assert includes <= {"ser.h", "ser_model.h", "math.h", "float.h", "stddef.h", "stdint.h", "string.h"}
    model_c = (out / "c" / "ser_model.c").read_text()
    assert re.search(r"static const unsigned char codes_0\[", model_c)
    # the mel filterbank is stored as spans, far smaller than the dense (n_mels × bins) matrix
    spans = model_c.split("ser_mel_weights[")[1].split("]")[0]
    assert int(spans) < 0.05 * 128 * 1025


def test_a_model_with_peak_db_floors_runs_on_whole_clips_only(c_default):
    """Its dB floors hang on each clip's peak: no streaming API, no board project, and the CLI says why."""
    _, cli, clips, out = c_default
    assert "#define SER_STREAMING 0" in (out / "c" / "ser_model.h").read_text()
    assert not (out / "c" / "stm32l4").exists()
    proc = subprocess.run([str(cli), "--stream", str(clips[0][0])], capture_output=True, text=True)
    assert proc.returncode == 2 and "db_floor=absolute" in proc.stderr


def test_export_c_without_a_serq_file(default_run, tmp_path):
    run_dir, _ = default_run
    assert export_main([str(run_dir), "--c", str(tmp_path / "c")]) == 0
    assert {"ser.h", "ser.c", "ser_model.h", "ser_model.c", "main.c", "Makefile"} <= {
        p.name for p in (tmp_path / "c").iterdir()
    }


def test_c_cli_reads_16_bit_pcm_and_refuses_another_rate(c_default, tmp_path):
    model, cli, clips, _ = c_default
    signal = clips[0][1]
    pcm16 = tmp_path / "pcm16.wav"
    sf.write(pcm16, signal, model.features.sample_rate, subtype="PCM_16")
    decoded = load_audio(pcm16, model.features.sample_rate)
    _assert_parity(_c_probabilities(cli, [pcm16], model), _numpy(model, [(pcm16, decoded)]))
    other = tmp_path / "other.wav"
    sf.write(other, signal, model.features.sample_rate // 2, subtype="PCM_16")
    proc = subprocess.run([str(cli), str(other)], capture_output=True, text=True)
    assert proc.returncode == 1 and "sample rate" in proc.stdout


def test_c_library_is_valgrind_clean(c_default):
    _need("valgrind")
    model, cli, clips, _ = c_default
    proc = subprocess.run(
        ["valgrind", "--error-exitcode=99", "--leak-check=full", "-q", str(cli), *[str(p) for p, _ in clips[:2]]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERROR SUMMARY" not in proc.stderr or "0 errors" in proc.stderr


def test_c_library_of_a_speaker_normalised_model(speaker_laq_run, tmp_path):
    """Population statistics by default; the speaker's own (a text file of means then stds) when given."""
    model = QuantizedModel.load(speaker_laq_run.model)
    assert model.speaker_normalized
    assert export_main([str(speaker_laq_run.run_dir), "--c", str(tmp_path / "c")]) == 0
    cli = _build(tmp_path / "c")
    files = [row["path"] for row in csv.DictReader(open(speaker_laq_run.run_dir / "splits" / "test.csv"))]
    clips = _clips(files, model, tmp_path / "clips")
    paths = [p for p, _ in clips]
    _assert_parity(_c_probabilities(cli, paths, model), _numpy(model, clips, model.population))
    extractor = Extractor(model.features)
    speaker = model.enrol(np.stack([extractor(signal) for _, signal in clips[:4]]))
    stats = tmp_path / "speaker.txt"
    stats.write_text(" ".join(f"{v:.9e}" for v in np.concatenate([speaker.mean, speaker.std])))
    _assert_parity(_c_probabilities(cli, paths, model, "--speaker", str(stats)), _numpy(model, clips, speaker))


def test_c_library_matches_on_emodb_clips(c_default, tmp_path):
    """Real speech (EMODB, 16 kHz, resampled to the model's rate as the numpy runtime does)."""
    root = env_path("SER_EMODB_ROOT")
    model, cli, _, _ = c_default
    files = sorted((root / "wav").glob("*.wav"))[::18]  # 30 clips across speakers and emotions
    clips = _clips(files, model, tmp_path / "emodb")
    _assert_parity(_c_probabilities(cli, [p for p, _ in clips], model), _numpy(model, clips))


# -- Cortex-M4 (Debian's gcc-arm-none-eabi + newlib, qemu-system-arm) --------------------------------------------


def _arm_size(elf: Path) -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True).stdout
    text, data, bss = map(int, out.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def test_paper_mlp_at_2_bits_fits_a_cortex_m4_and_runs_on_qemu(default_run, c_default, tmp_path):
    _need("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm", "make")
    run_dir, _ = default_run
    c_dir = tmp_path / "c2"
    assert export_main([str(run_dir), "--bits", "2", "-o", str(tmp_path / "m2.serq"), "--c", str(c_dir)]) == 0
    proc = subprocess.run(["make", "size", "mcu"], cwd=c_dir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    size = _arm_size(c_dir / "probe.elf")
    assert size["text"] + size["data"] <= 128_000, size  # flash: code, constants and initialised data
    assert size["data"] + size["bss"] + 4096 <= 64_000, size  # RAM: static data plus a generous stack
    model = QuantizedModel.load(tmp_path / "m2.serq")
    _, _, clips, _ = c_default
    paths = [p for p, _ in clips[:3]]
    qemu = [
        "qemu-system-arm",
        "-M",
        "mps2-an386",
        "-nographic",
        "-semihosting-config",
        "enable=on,target=native," + ",".join(f"arg={a}" for a in ["ser_cli", *map(str, paths)]),
        "-kernel",
        str(c_dir / "ser_cli.elf"),
    ]
    proc = subprocess.run(qemu, capture_output=True, text=True, timeout=600)
    lines = [json.loads(m) for m in re.findall(r'\{"file".*?\}\}', proc.stdout)]
    assert len(lines) == len(paths), proc.stdout[-2000:] + proc.stderr[-2000:]
    c = np.array([[line["probabilities"][k] for k in model.classes] for line in lines])
    _assert_parity(c, _numpy(model, clips[:3]))
    used = [int(m) for m in re.findall(r"stack used by ser_predict: (\d+) bytes", proc.stdout + proc.stderr)]
    assert used and max(used) < 4096


# -- pitch and spectral parts (YIN, spectral shape, contrast) -----------------------------------------------------

DESCRIPTOR_PARTS = "data.features.parts=[mfcc,chroma,mel,pitch,spectral]"


@pytest.fixture(scope="module")
def c_descriptors(tiny_manifest, cache_dir, tmp_path_factory):
    """A run whose features include pitch and spectral (mean and std, smaller front end), exported at 4 bits and
    compiled, with its test clips (a -80 dBFS noise floor added) and clips that probe the edge cases."""
    out = tmp_path_factory.mktemp("c_descriptors")
    proc = run_train(
        "data=manifest",
        f"data.manifest={tiny_manifest}",
        DESCRIPTOR_PARTS,
        "data.features.stats=[mean,std]",
        "quant=none",
        "trainer.max_epochs=3",
        *SMALL_FEATURES,
        cache_dir=cache_dir,
        run_dir=out / "run",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export_main([str(out / "run"), "--bits", "4", "-o", str(out / "model.serq"), "--c", str(out / "c")]) == 0
    model = QuantizedModel.load(out / "model.serq")
    sr = model.features.sample_rate
    rng = np.random.default_rng(0)
    files = [row["path"] for row in csv.DictReader(open(out / "run" / "splits" / "test.csv"))]
    # Without a noise floor, the contrast valley of a sub-band a synthetic voice leaves empty, or of a pure tone's
    # spectral null, is FFT rounding noise (torch in float32 and in float64 differ there by dB); recordings have one.
    t = np.arange(sr) / sr
    signals = {Path(f).stem: load_audio(f, sr) for f in files}
    signals |= {
        "tone180": 0.3 * np.sin(2 * np.pi * 180 * t),
        "noise": 0.1 * rng.standard_normal(sr),
        "short": 0.2 * np.sin(2 * np.pi * 300 * t[:200]),
    }
    signals = {name: signal + 1e-4 * rng.standard_normal(len(signal)) for name, signal in signals.items()}
    signals["silence"] = np.zeros(sr)  # digital silence: every frame's spectrum is exactly zero
    clips = []
    (out / "clips").mkdir()
    for i, (name, signal) in enumerate(signals.items()):
        path = out / "clips" / f"{i:03d}_{name}.wav"
        sf.write(path, signal.astype(np.float32), sr, subtype="FLOAT")
        clips.append((path, signal.astype(np.float32)))
    return model, _build(out / "c"), clips


def _c_features(cli: Path, paths) -> np.ndarray:
    proc = subprocess.run([str(cli), "--features", *map(str, paths)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return np.array([json.loads(line)["features"] for line in proc.stdout.splitlines() if line.startswith("{")])


def _torch_features(model: QuantizedModel, clips) -> np.ndarray:
    from ser.data.features import FeatureExtractor

    extractor = FeatureExtractor(model.features)
    return np.stack([extractor([signal])[0] for _, signal in clips])


def test_c_pitch_and_spectral_features_match_the_torch_extractor(c_descriptors):
    model, cli, clips = c_descriptors
    config = model.features
    c, reference = _c_features(cli, [p for p, _ in clips]), _torch_features(model, clips)
    assert c.shape == reference.shape == (len(clips), config.dim)
    for name, block in config.blocks():  # every block within 1e-4 of its largest value
        error = np.abs(c[:, block] - reference[:, block])
        worst = np.unravel_index(error.argmax(), error.shape)
        assert error.max() <= 1e-4 * np.abs(reference[:, block]).max(), (
            name,
            worst,
            error.max(),
            np.abs(reference[:, block]).max(),
        )
    names = [p.stem.split("_", 1)[1] for p, _ in clips]
    log_f0, voiced = config.channel("pitch", "log_f0"), config.channel("pitch", "voiced")
    tone, silence = names.index("tone180"), names.index("silence")
    assert c[tone, log_f0] == pytest.approx(np.log(180.0), abs=0.01) and c[tone, voiced] > 0.9
    assert c[silence, log_f0] == 0.0 and c[silence, voiced] == 0.0  # log F0 pooled over no voiced frame
    std_log_f0 = config.frame_dim + log_f0
    assert c[silence, std_log_f0] == 0.0 and c[tone, std_log_f0] < 0.01


def test_c_library_with_pitch_and_spectral_parts_predicts_what_torch_features_give(c_descriptors):
    model, cli, clips = c_descriptors
    reference = np.stack([model.probabilities(f)[0] for f in _torch_features(model, clips)])
    _assert_parity(_c_probabilities(cli, [p for p, _ in clips], model), reference)


def test_c_export_refuses_a_yin_lag_range_too_short_for_a_trough():
    config = FeatureConfig(parts=("mfcc", "pitch"), f0_min=440.0, f0_max=441.0)
    with pytest.raises(SERError, match="f0_min=440.0, f0_max=441.0"):
        c_export._check(config, [])
    c_export._check(FeatureConfig(parts=("mfcc", "pitch", "spectral")), [])  # the defaults export
