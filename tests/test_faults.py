"""Fault injection: runs killed at any stage, and damaged model files, never leave wrong results behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ser.runtime import model_file
from ser.runtime.model_file import ModelFileError, Section
from tests.conftest import REPO, run_train

RUN = (
    "data=manifest",
    "trainer.max_epochs=6",
    "callbacks.early_stopping=null",
    "quant.fixed_bits=[4]",
    "quant.recovery.epochs=20",
)


def _numbers(run_dir: Path) -> dict:
    """What a run measured, without timings and paths (which differ between any two runs)."""
    results = json.loads((run_dir / "results.json").read_text())
    laq = {k: v for k, v in results["laq"].items() if k not in ("search_s", "recovery")}
    return {
        "baseline": results["baseline"],
        "fixed": results["fixed"],
        "laq": laq,
        "predictions": results["test_predictions"]["models"],
    }


def _kill_when(
    args: list[str], run_dir: Path, ready, env: dict, sig: int = signal.SIGKILL, timeout: float = 300
) -> str:
    """Start ``train.py`` and send it ``sig`` as soon as ``ready(run_dir, output so far)`` holds;
    returns its output once it has ended."""
    log = run_dir.parent / f"{run_dir.name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        try:
            while not ready(run_dir, log.read_text()):
                assert proc.poll() is None, "the run finished before the fault could be injected"
                assert time.monotonic() < deadline
                time.sleep(0.02)
            proc.send_signal(sig)
        finally:
            proc.wait(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 1), log.read_text()[-3000:]
    return log.read_text()


@pytest.fixture(scope="module")
def clean_run(tiny_manifest, cache_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("clean")
    proc = run_train(*RUN, f"data.manifest={tiny_manifest}", cache_dir=cache_dir, run_dir=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, ready",
    [
        ("training", lambda run_dir, log: (run_dir / "checkpoints" / "best.ckpt").exists()),
        ("quantization", lambda run_dir, log: "LAQ: bits" in log),
    ],
)
def test_a_run_killed_during_a_stage_reruns_to_the_same_results(
    stage, ready, clean_run, tiny_manifest, cache_dir, tmp_path
):
    run_dir = tmp_path / "run"
    env = {**os.environ, "SER_CACHE_DIR": str(cache_dir)}
    args = [*RUN, f"data.manifest={tiny_manifest}"]
    _kill_when(args, run_dir, ready, env)
    assert not (run_dir / "results.json").exists() and not (run_dir / "quantized.pt").exists()
    proc = run_train(*args, cache_dir=cache_dir, run_dir=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _numbers(run_dir) == _numbers(clean_run)
    (aside,) = run_dir.glob("superseded-*")  # the killed run's checkpoint is kept, out of the way
    assert (aside / "checkpoints" / "best.ckpt").exists() and sorted(
        p.name for p in (run_dir / "checkpoints").iterdir()
    ) == ["best.ckpt"]


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_during_training_records_failed_json_and_exits_1(tiny_manifest, cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "SER_CACHE_DIR": str(cache_dir)}
    output = _kill_when(
        [*RUN, f"data.manifest={tiny_manifest}"],
        run_dir,
        lambda run_dir, log: (run_dir / "checkpoints" / "best.ckpt").exists(),
        env,
        sig=signal.SIGTERM,
    )
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["error"].startswith("stopped by SIGTERM (scancel, a Slurm time limit") and failed["traceback"] is None
    assert failed["error"] in output and "Traceback" not in output
    assert not (run_dir / "results.json").exists() and not (run_dir / "quantized.pt").exists()


@pytest.mark.slow
def test_an_export_killed_midway_leaves_no_partial_file_and_reruns_to_the_same_bytes(clean_run, tmp_path):
    target = tmp_path / "m.serq"
    complete = subprocess.run(
        [sys.executable, "-m", "ser.cli", "export", str(clean_run), "-o", str(tmp_path / "ref.serq")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert complete.returncode == 0, complete.stderr
    for delay in (0.05, 0.2, 0.5, 1.0, 2.0):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ser.cli", "export", str(clean_run), "-o", str(target)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Either nothing was written yet or the whole file was: never a partial one.
        assert not target.exists() or target.read_bytes() == (tmp_path / "ref.serq").read_bytes()
    rerun = subprocess.run(
        [sys.executable, "-m", "ser.cli", "export", str(clean_run), "-o", str(target)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0 and target.read_bytes() == (tmp_path / "ref.serq").read_bytes()


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("serq") / "m.serq"
    rng = np.random.default_rng(0)
    model_file.write(
        path,
        {"classes": ["a", "b"], "layers": [{"name": "w", "bits": 2}]},
        [
            Section("scales", rng.normal(size=4).astype(np.float32)),
            Section("w.codes", rng.integers(0, 4, size=(4, 9)).astype(np.uint8), bits=2),
        ],
    )
    return path.read_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_model_file_with_any_single_byte_changed_is_refused(small_model_file, tmp_path, data):
    position = data.draw(st.integers(0, len(small_model_file) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    damaged = bytearray(small_model_file)
    damaged[position] ^= flip
    path = tmp_path / "damaged.serq"
    path.write_bytes(bytes(damaged))
    with pytest.raises(ModelFileError):
        model_file.read(path)
