"""Distributed training and cluster launchers, for real on this machine (CPU processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_train

pytestmark = pytest.mark.slow


def test_ddp_on_two_cpu_processes_trains_quantizes_once_and_writes_results_once(default_corpus, cache_dir, tmp_path):
    proc = run_train(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=3",
        "quant.fixed_bits=[8]",
        cache_dir=cache_dir,
        run_dir=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output
    assert output.count("results in ") == 1 and output.count("LAQ: bits") == 1
    results = json.loads((tmp_path / "results.json").read_text())
    # The Trainer's validation of the best checkpoint, split over both processes, agrees with the
    # callback's 8-bit copy of it on the whole split (56 utterances: within one utterance).
    assert abs(results["baseline"]["val_acc"] - results["fixed"][0]["val_acc"]) <= 1 / 56 + 1e-6
    assert (tmp_path / "quantized.pt").exists()


def test_submitit_local_launcher_runs_a_two_job_sweep_that_ser_report_aggregates(tiny_manifest, cache_dir, tmp_path):
    env = {**os.environ, "SER_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=submitit_local",
            "data=manifest",
            f"data.manifest={tiny_manifest}",
            "seed=0,1",
            "trainer.max_epochs=2",
            "quant=none",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (tmp_path / ".submitit").is_dir()
    report = subprocess.run(
        [sys.executable, "-m", "ser.report", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    assert "2 of 2 jobs finished" in (tmp_path / "summary.md").read_text()
