"""Sweeps and DDP training on a real one-node Slurm cluster (``.ci/slurm-cluster``): sbatch through
Hydra's Slurm launcher, srun, scancel and sacct, as on a university cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

CLUSTER = REPO / ".ci" / "slurm-cluster"
NEEDED = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sacct", "scancel")
# One core per job, so that both jobs of a sweep run at once on a 2-core machine.
LAUNCHER = (
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=4",
    "hydra.launcher.timeout_min=10",
)
RUN = ("trainer.max_epochs=2", "quant.fixed_bits=[8]")
SWEEP = (*LAUNCHER, "seed=0,1", *RUN)


@pytest.fixture(scope="session")
def slurm_env(cache_dir, default_corpus) -> Iterator[dict[str, str]]:
    """The environment of a process that uses the cluster (SLURM_CONF, the feature cache with the
    built-in corpus): a running cluster, or one started for the session, or a skip saying why not."""
    if os.geteuid() != 0:
        pytest.skip("the one-node Slurm cluster starts its daemons as root")
    missing = [command for command in NEEDED if shutil.which(command) is None]
    if missing:
        pytest.skip(
            f"Slurm is not installed: no {', '.join(missing)} "
            "(Debian: apt-get install slurm-wlm slurmdbd munge mariadb-server)"
        )
    exported = subprocess.run([CLUSTER, "env"], capture_output=True, text=True, check=True).stdout
    name, _, value = exported.strip().removeprefix("export ").partition("=")
    env = {**os.environ, name: value, "SER_CACHE_DIR": str(cache_dir)}
    running = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).returncode == 0
    if not running:
        started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, f"{CLUSTER} start failed:\n{started.stdout}{started.stderr}"
    yield env
    if not running:
        subprocess.run([CLUSTER, "stop"], capture_output=True, timeout=120)


def _train(*overrides: str, env: dict[str, str], **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *overrides],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """Wait for ``proc``; past ``timeout`` stop it (srun then cancels its job step) and fail."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(proc.args[:3])}… still ran after {timeout} s:\n{output[-3000:]}")
    return proc.returncode, output


def _array_id(sweep_dir: Path) -> str:
    """The Slurm job id of a sweep's job array, from submitit's folders (``<id>_<job number>``)."""
    (array,) = {p.name.split("_")[0] for p in (sweep_dir / ".submitit").iterdir() if "_" in p.name and p.is_dir()}
    return array


def _states(array: str, env: dict[str, str], timeout: float = 60) -> dict[str, str]:
    """sacct's final state of each job of the array, once none is pending or running any more."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "--parsable2", "-o", "JobID,State", "-j", array],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        states = dict(line.split("|") for line in out.splitlines())
        if states and not any(s in ("PENDING", "RUNNING", "COMPLETING") for s in states.values()):
            return states
        assert time.monotonic() < deadline, f"jobs of array {array} still active: {states}"
        time.sleep(0.5)


def _report(sweep_dir: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ser.report", str(sweep_dir)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (sweep_dir / "summary.md").read_text()


@pytest.fixture(scope="module")
def sweep(slurm_env, tmp_path_factory) -> Path:
    """``python train.py -m hydra/launcher=slurm … seed=0,1``: two jobs, one array task each."""
    sweep_dir = tmp_path_factory.mktemp("slurm_sweep")
    code, output = _finish(_train("-m", *SWEEP, f"hydra.sweep.dir={sweep_dir}", env=slurm_env))
    assert code == 0, output[-3000:]
    return sweep_dir


def test_each_job_of_a_sweep_runs_as_a_slurm_array_task_that_sacct_reports_completed(sweep, slurm_env):
    array = _array_id(sweep)
    assert _states(array, slurm_env) == {f"{array}_0": "COMPLETED", f"{array}_1": "COMPLETED"}


def test_each_job_of_a_slurm_sweep_writes_its_own_results(sweep):
    for job in (0, 1):
        results = json.loads((sweep / str(job) / "results.json").read_text())
        assert results["seed"] == job and results["laq"] is not None and results["fixed"][0]["bits"] == 8
        assert (sweep / str(job) / "quantized.pt").exists() and not (sweep / str(job) / "failed.json").exists()


def test_submitit_keeps_each_jobs_log_naming_its_slurm_job_and_its_results(sweep):
    array = _array_id(sweep)
    for job in (0, 1):
        log = sweep / ".submitit" / f"{array}_{job}" / f"{array}_{job}_0_log.out"
        text = log.read_text()
        assert f"Starting with JobEnvironment(job_id={array}_{job}," in text
        assert f"results in {sweep / str(job) / 'results.json'}" in text and "Job completed successfully" in text


def test_ser_report_pools_the_two_slurm_jobs(sweep):
    summary = _report(sweep)
    assert "2 of 2 jobs finished" in summary and "\n## Failed jobs\n\nnone" in summary
    accuracies = [json.loads((sweep / str(job) / "results.json").read_text())["baseline"]["test_acc"] for job in (0, 1)]
    mean_row = (sweep / "summary.csv").read_text().splitlines()
    row = dict(zip(mean_row[0].split(","), mean_row[1].split(",")))
    assert float(row["baseline/test_acc_mean"]) == pytest.approx(sum(accuracies) / 2)


@pytest.fixture(scope="module")
def srun_ddp(slurm_env, tmp_path_factory) -> tuple[Path, str]:
    """One training as two Slurm tasks: Lightning takes world size and ranks from Slurm (gloo on CPU)."""
    run_dir = tmp_path_factory.mktemp("srun_ddp")
    proc = subprocess.Popen(
        [
            "srun",
            "--nodes=1",
            "--ntasks-per-node=2",
            "--cpus-per-task=1",
            "--mem=4G",
            "--time=10",
            "--kill-on-bad-exit=1",
            sys.executable,
            "train.py",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            *RUN,
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        env=slurm_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    code, output = _finish(proc)
    assert code == 0, output[-3000:]
    return run_dir, output


def test_srun_ddp_trains_as_the_two_ranks_of_one_gloo_process_group(srun_ddp):
    _, output = srun_ddp
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in output and "GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output


def test_srun_ddp_writes_results_model_and_tensorboard_once_from_rank_0(srun_ddp):
    run_dir, output = srun_ddp
    assert output.count("results in ") == 1 and output.count("LAQ: bits") == 1
    assert (run_dir / "results.json").exists() and (run_dir / "quantized.pt").exists()
    assert not (run_dir / "failed.json").exists() and not list(run_dir.glob("superseded-*"))
    rank_0 = (run_dir / ".run.lock").read_text().strip()  # rank 0 claimed the directory; task 1 shares it
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and {path.name.split(".")[-2] for path in events} == {rank_0}  # ...<time>.<host>.<pid>.<n>


@dataclass
class Cancelled:
    sweep_dir: Path
    array: str
    driver_code: int
    driver_output: str
    states: dict[str, str]
    failed: dict
    left: list[str]  # what the cancelled job left in its directory
    summary: str
    kept_results: str


@pytest.fixture(scope="module")
def cancelled(slurm_env, tmp_path_factory) -> Cancelled:
    """A sweep whose job 1 is cancelled with scancel once it has trained an epoch; what it left."""
    sweep_dir = tmp_path_factory.mktemp("slurm_cancel")
    driver = _train("-m", *SWEEP, f"hydra.sweep.dir={sweep_dir}", env=slurm_env)
    deadline = time.monotonic() + 240
    while not (sweep_dir / "1" / "checkpoints" / "best.ckpt").exists():
        assert driver.poll() is None and time.monotonic() < deadline, "job 1 never got to train"
        time.sleep(0.05)
    array = _array_id(sweep_dir)
    subprocess.run(["scancel", f"{array}_1"], env=slurm_env, check=True)
    code, output = _finish(driver)
    states = _states(array, slurm_env)
    failed = json.loads((sweep_dir / "1" / "failed.json").read_text())
    left = sorted(path.name for path in (sweep_dir / "1").iterdir())
    return Cancelled(
        sweep_dir,
        array,
        code,
        output,
        states,
        failed,
        left,
        _report(sweep_dir),
        (sweep_dir / "0" / "results.json").read_text(),
    )


def test_a_job_cancelled_midway_is_recorded_as_failed_by_the_signal(cancelled):
    assert cancelled.states[f"{cancelled.array}_1"].startswith("CANCELLED")
    assert cancelled.failed["error"].startswith("stopped by SIGTERM (scancel, a Slurm time limit")
    assert "results.json" not in cancelled.left and "quantized.pt" not in cancelled.left
    # The sweep waits for every job, then fails naming the cancelled job's error.
    assert cancelled.driver_code == 1 and "Terminated: stopped by SIGTERM" in cancelled.driver_output


def test_cancelling_a_job_keeps_the_other_jobs_results(cancelled):
    assert cancelled.states[f"{cancelled.array}_0"] == "COMPLETED"
    assert json.loads(cancelled.kept_results)["seed"] == 0
    assert "1 of 2 jobs finished" in cancelled.summary
    assert f"- `{cancelled.sweep_dir / '1'}` (seed=1 {' '.join(RUN)}): stopped by SIGTERM" in cancelled.summary


def test_rerunning_the_sweep_completes_the_cancelled_job(cancelled, slurm_env):
    sweep_dir = cancelled.sweep_dir
    code, output = _finish(_train("-m", *SWEEP, f"hydra.sweep.dir={sweep_dir}", env=slurm_env))
    assert code == 0, output[-3000:]
    assert json.loads((sweep_dir / "1" / "results.json").read_text())["seed"] == 1
    assert not (sweep_dir / "1" / "failed.json").exists()
    (aside,) = (sweep_dir / "1").glob("superseded-*")  # the cancelled attempt, kept out of the way
    assert json.loads((aside / "failed.json").read_text()) == cancelled.failed
    assert "2 of 2 jobs finished" in _report(sweep_dir)
    # The finished job ran again to the same numbers (same config and seed).
    before, after = json.loads(cancelled.kept_results), json.loads((sweep_dir / "0" / "results.json").read_text())
    assert after["baseline"] == before["baseline"] and after["test_predictions"] == before["test_predictions"]
