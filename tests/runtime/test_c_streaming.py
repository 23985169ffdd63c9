"""The streaming C API (``ser_init`` / ``ser_push`` / ``ser_flush``) of a model trained with
``data.features.db_floor=absolute``: every window's decision is `ser listen`'s on the same audio (same class,
probabilities within 1e-4, window features within 1e-4 of each block's largest value), whatever the chunk
sizes; bad input gets error codes; valgrind-clean; on the emulated Cortex-M4 the same decisions, in 32 KB of
RAM, instructions counted by qemu; the board project builds."""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.dsp.audio import load_audio
from ser.export import main as export_main
from ser.runtime import c_measure
from ser.runtime.features import Extractor
from ser.runtime.listen import listen, window_samples
from ser.runtime.model import QuantizedModel
from tests.conftest import env_path, run_train
from tests.runtime.test_c_runtime import CC, CFLAGS, _need

# A hop that does not divide the frame's half (zero crossings counted across frame starts in between), a window
# that is not whole frames; pitch and spectral parts, speaker normalisation with a running estimate.
STREAM_FEATURES = (
    "data.features.sample_rate=16000",
    "data.features.n_fft=512",
    "data.features.hop_length=160",
    "data.features.n_mels=40",
    "data.features.n_mfcc=13",
    "data.features.f0_min=80",
    "data.features.parts=[mfcc,chroma,mel,pitch,spectral]",
    "data.features.stats=[mean,std]",
    "data.features.mel_db=true",
    "data.features.db_floor=absolute",
    "data.features.yin_acf=stft",
)
WINDOW, HOP = 1.005, 0.5
PROBABILITIES = 1e-4  # measured ~1e-6: float32 both sides, other FFTs and summation orders
# Real speech at 16 kHz leaves the top contrast band (6.4-8 kHz) its quantisation noise: its valley is within a
# few times float32 FFT rounding (1e-7 of a frame's peak) of zero, so the two runtimes' FFTs differ there by
# up to 0.1 dB of pooled contrast (5e-5 of the block); measured max |Δp| 2.2e-4 over 177 windows.
PROBABILITIES_REAL = 1e-3
FEATURES = 1e-4  # of each block's largest value


@dataclass
class Stream:
    model: QuantizedModel
    c_dir: Path
    cli: Path
    wav: Path  # 16-bit PCM at the model's rate: test clips back to back
    pcm: np.ndarray


def _compile(c_dir: Path, *defines: str, name: str = "ser_cli") -> Path:
    _need(CC)
    proc = subprocess.run(
        [CC, *CFLAGS, *defines, "-o", name, "main.c", "ser.c", "ser_model.c", "-lm"],
        cwd=c_dir,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return c_dir / name


def _int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal * 32768), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def stream(tiny_manifest, cache_dir, tmp_path_factory) -> Stream:
    out = tmp_path_factory.mktemp("c_stream")
    proc = run_train(
        "data=manifest",
        f"data.manifest={tiny_manifest}",
        "data.normalize=speaker",
        "data.speaker_prior_weight=2",
        "quant=fixed",
        "quant.fixed_bits=[3]",
        "model.net.hidden=[128,64]",
        "trainer.max_epochs=3",
        *STREAM_FEATURES,
        cache_dir=cache_dir,
        run_dir=out / "run",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        export_main(
            [
                str(out / "run"),
                "--bits",
                "3",
                "-o",
                str(out / "model.serq"),
                "--c",
                str(out / "c"),
                "--window",
                str(WINDOW),
                "--hop",
                str(HOP),
            ]
        )
        == 0
    )
    model = QuantizedModel.load(out / "model.serq")
    rate = model.features.sample_rate
    files = [row["path"] for row in csv.DictReader(open(out / "run" / "splits" / "test.csv"))][:8]
    rng = np.random.default_rng(0)
    # A -80 dBFS noise floor: without one, the contrast valley of a band the synthetic voice leaves empty is FFT
    # rounding noise (docs/deploying.md).
    signal = np.concatenate([load_audio(f, rate) for f in files])
    pcm = _int16(signal + 1e-4 * rng.standard_normal(len(signal)))
    sf.write(out / "stream.wav", pcm, rate, subtype="PCM_16")
    return Stream(model, out / "c", _compile(out / "c", "-DSER_DECISION_FEATURES=1"), out / "stream.wav", pcm)


def _c_stream(cli: Path, wav: Path, *options: str, runner=()) -> list[dict]:
    proc = subprocess.run(
        [*runner, str(cli), "--stream", *options, str(wav)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _listen(model: QuantizedModel, pcm: np.ndarray, speaker=None) -> list[dict]:
    return list(
        listen(model, iter([pcm.astype(np.float32) / 32768.0]), model.features.sample_rate, WINDOW, HOP, speaker)
    )


def _assert_same_decisions(c: list[dict], reference: list[dict], model: QuantizedModel, tolerance: float) -> None:
    assert len(c) == len(reference) > 0
    for got, want in zip(c, reference):
        assert (got["start"], got["end"]) == (want["start"], want["end"])
        assert got["emotion"] == want["emotion"]
        assert got.get("speaker_windows") == want.get("speaker_windows")
        p = np.array([got["probabilities"][k] for k in model.classes])
        q = np.array([want["probabilities"][k] for k in model.classes])
        assert np.abs(p - q).max() <= tolerance, (got["start"], np.abs(p - q).max())


def test_streaming_decisions_equal_ser_listen_on_every_window(stream):
    c = _c_stream(stream.cli, stream.wav)
    window, hop = window_samples(stream.model.features, WINDOW, HOP)
    assert [line["samples"] for line in c] == [[s, s + window] for s in range(0, len(stream.pcm) - window + 1, hop)]
    _assert_same_decisions(c, _listen(stream.model, stream.pcm), stream.model, PROBABILITIES)


def test_each_window_pools_the_features_ser_listen_computes_from_its_audio(stream):
    """Frames inside a window are the stream's (computed once for all the windows they lie in); the frames at its
    edges are computed again with zeros outside it: exactly the clip `ser listen` cuts."""
    extractor, config = Extractor(stream.model.features), stream.model.features
    signal = stream.pcm.astype(np.float32) / 32768.0
    for line in _c_stream(stream.cli, stream.wav):
        start, end = line["samples"]
        reference = extractor(signal[start:end])
        for name, block in config.blocks():
            error = np.abs(np.array(line["features"])[block] - reference[block]).max()
            assert error <= FEATURES * np.abs(reference[block]).max(), (start, name, error)


def test_decisions_do_not_depend_on_how_the_samples_are_pushed(stream):
    proc = [
        subprocess.run([str(stream.cli), "--stream", *options, str(stream.wav)], capture_output=True, text=True)
        for options in (
            ["--chunk", "1"],
            ["--chunk", "160"],
            ["--chunk", "100000"],
            ["--random-chunks", "1"],
            ["--random-chunks", "2"],
        )
    ]
    assert all(p.returncode == 0 for p in proc)
    assert len({p.stdout for p in proc}) == 1 and proc[0].stdout.count("\n") > 3


def test_a_stream_shorter_than_a_window_gives_one_decision_on_what_there_is(stream, tmp_path):
    short = stream.pcm[: int(0.7 * stream.model.features.sample_rate)]
    wav = tmp_path / "short.wav"
    sf.write(wav, short, stream.model.features.sample_rate, subtype="PCM_16")
    c = _c_stream(stream.cli, wav)
    assert len(c) == 1 and c[0]["samples"] == [0, len(short)]
    _assert_same_decisions(c, _listen(stream.model, short), stream.model, PROBABILITIES)


def test_fixed_speaker_statistics_instead_of_the_running_estimate(stream, tmp_path):
    extractor = Extractor(stream.model.features)
    signal = stream.pcm.astype(np.float32) / 32768.0
    speaker = stream.model.enrol(np.stack([extractor(signal[i : i + 16000]) for i in (0, 20000, 40000)]))
    stats = tmp_path / "speaker.txt"
    stats.write_text(" ".join(f"{v:.9e}" for v in np.concatenate([speaker.mean, speaker.std])))
    c = _c_stream(stream.cli, stream.wav, "--speaker", str(stats))
    assert all("speaker_windows" not in line for line in c)
    _assert_same_decisions(c, _listen(stream.model, stream.pcm, speaker), stream.model, PROBABILITIES)


API_CHECKS = r"""
#include <stdio.h>
#include "ser.h"
static int decisions;
static void on_decision(const ser_decision_t *d, void *user) { (void)d; (void)user; ++decisions; }
#define CHECK(x) do { if (!(x)) { printf("failed: %s\n", #x); return 1; } } while (0)
int main(void) {
    static int16_t pcm[3 * SER_WINDOW];
    static float mean[SER_FEATURE_DIM], std[SER_FEATURE_DIM];
    int i, made = 0;
    for (i = 0; i < 3 * SER_WINDOW; ++i) pcm[i] = (int16_t)((i * 7919) % 20000 - 10000);
    CHECK(ser_push(pcm, 10) == SER_ESTATE);          /* before ser_init */
    CHECK(ser_flush() == SER_ESTATE);
    CHECK(ser_init(NULL, NULL) == SER_EINVAL);       /* no callback */
    CHECK(ser_push(pcm, 10) == SER_ESTATE);
    CHECK(ser_init(on_decision, NULL) == SER_OK);
    CHECK(ser_push(NULL, 10) == SER_EINVAL);
    CHECK(ser_push(pcm, 0) == SER_EINVAL);
    CHECK(ser_push(pcm, -5) == SER_EINVAL);
    CHECK(ser_set_speaker(mean, NULL) == SER_EINVAL);
    CHECK(ser_set_speaker(NULL, std) == SER_EINVAL);
    CHECK(decisions == 0);                           /* nothing was read */
    CHECK(ser_set_speaker(NULL, NULL) == SER_OK);
    for (i = 0; i < 3 * SER_WINDOW; i += 1000) {
        const int rc = ser_push(pcm + i, i + 1000 <= 3 * SER_WINDOW ? 1000 : 3 * SER_WINDOW - i);
        CHECK(rc >= 0);
        made += rc;
    }
    CHECK(made == decisions && made == (3 * SER_WINDOW - SER_WINDOW) / SER_WINDOW_HOP + 1);
    CHECK(ser_flush() == 0);                         /* windows were decided: nothing more */
    CHECK(ser_push(pcm, 10) == SER_ESTATE);          /* after the end of the stream */
    CHECK(ser_init(on_decision, NULL) == SER_OK);
    CHECK(ser_push(pcm, 100) == 0 && ser_flush() == 1 && decisions == made + 1);
    printf("ok\n");
    return 0;
}
"""


def test_the_device_api_answers_bad_input_with_error_codes_and_reads_nothing(stream, tmp_path):
    (stream.c_dir / "api_checks.c").write_text(API_CHECKS)
    proc = subprocess.run(
        [CC, *CFLAGS, "-o", str(tmp_path / "api_checks"), "api_checks.c", "ser.c", "ser_model.c", "-lm"],
        cwd=stream.c_dir,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    runner = (
        ["valgrind", "--error-exitcode=99", "-q"]
        if subprocess.run(["which", "valgrind"], capture_output=True).returncode == 0
        else []
    )
    proc = subprocess.run([*runner, str(tmp_path / "api_checks")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_streaming_with_random_chunk_sizes_is_valgrind_clean(stream):
    _need("valgrind")
    proc = subprocess.run(
        [
            "valgrind",
            "--error-exitcode=99",
            "--leak-check=full",
            "-q",
            str(stream.cli),
            "--stream",
            "--random-chunks",
            "3",
            str(stream.wav),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_streaming_decisions_equal_ser_listen_on_emodb(stream, tmp_path):
    """Real speech: 30 EMODB utterances (16 kHz, the model's rate here) back to back."""
    root = env_path("SER_EMODB_ROOT")
    files = sorted((root / "wav").glob("*.wav"))[::18]
    pcm = _int16(np.concatenate([load_audio(f, stream.model.features.sample_rate) for f in files]))
    wav = tmp_path / "emodb.wav"
    sf.write(wav, pcm, stream.model.features.sample_rate, subtype="PCM_16")
    _assert_same_decisions(_c_stream(stream.cli, wav), _listen(stream.model, pcm), stream.model, PROBABILITIES_REAL)


# -- Cortex-M4 (Debian's gcc-arm-none-eabi + newlib, qemu-system-arm) --------------------------------------------


def _need_arm() -> None:
    missing = c_measure.missing_tools()
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
            "qemu-system-arm make)"
        )


def test_streaming_on_the_emulated_cortex_m4_decides_as_the_host(stream, tmp_path):
    _need_arm()
    seconds = int(3 * stream.model.features.sample_rate)
    wav = tmp_path / "three_seconds.wav"
    sf.write(wav, stream.pcm[:seconds], stream.model.features.sample_rate, subtype="PCM_16")
    subprocess.run(["make", "ser_cli.elf"], cwd=stream.c_dir, capture_output=True, check=True)
    proc = subprocess.run(
        [
            "qemu-system-arm",
            "-M",
            "mps2-an386",
            "-nographic",
            "-semihosting-config",
            f"enable=on,target=native,arg=ser_cli,arg=--stream,arg={wav}",
            "-kernel",
            str(stream.c_dir / "ser_cli.elf"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    board = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    _assert_same_decisions(board, _c_stream(stream.cli, wav), stream.model, 1e-5)
    assert "stack used by ser_push" in proc.stderr + proc.stdout


def test_the_streaming_library_fits_32_kb_of_ram_and_its_stack_is_small(stream):
    _need_arm()
    size = c_measure.sizes(stream.c_dir)
    stack = c_measure.stack_bytes(stream.c_dir, stream.wav)
    assert 0 < stack < 2048
    assert size.static_ram + stack <= 32_000, (size, stack)  # audio buffers (the probe's DMA buffer) included
    assert size.flash <= 64_000, size


def test_instructions_per_second_of_audio_are_counted_on_the_emulated_board(stream):
    _need_arm()
    pcm = stream.pcm[: 3 * stream.model.features.sample_rate]
    count = c_measure.instructions(stream.c_dir, pcm)
    assert count.per_tick == pytest.approx(40.0, rel=1e-4)  # qemu -icount: 1 ns per instruction, a 25 MHz timer
    window, hop = window_samples(stream.model.features, WINDOW, HOP)
    assert count.decisions == (len(pcm) - window) // hop + 1
    # 16 kHz, 512-point frames every 160 samples, a 58 K-weight 3-bit network: a few million a second
    assert 1e6 < count.per_second < 2e7, count


def test_the_board_project_builds_with_arm_none_eabi_gcc(stream):
    _need_arm()
    proc = subprocess.run(["make"], cwd=stream.c_dir / "stm32l4", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (stream.c_dir / "stm32l4" / "ser_stm32l4.bin").stat().st_size > 10_000
    out = subprocess.run(
        ["arm-none-eabi-nm", "ser_stm32l4.elf"],
        cwd=stream.c_dir / "stm32l4",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert " T ser_push" in out and " T board_mic_wait" in out
