"""One run per run directory: a lock with the holder's PID, and an earlier run's outputs set aside."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ser import rundir


def test_a_second_claim_on_a_busy_directory_names_the_holders_pid(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from ser import rundir
            with rundir.claim({str(tmp_path)!r}):
                print("held", flush=True)
                time.sleep(30)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            rundir.RunDirectoryBusy, match=f"another run \\(PID {holder.pid}\\) is using this run directory"
        ):
            with rundir.claim(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_lock_is_released_by_the_kernel(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from ser import rundir; import time\nwith rundir.claim({str(tmp_path)!r}):\n"
            "    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # SIGKILL: no cleanup code runs
    holder.wait()
    with rundir.claim(tmp_path) as claimed:
        assert (claimed / rundir.LOCK_NAME).read_text().strip() == str(os.getpid())


def test_an_earlier_runs_outputs_are_moved_aside_not_deleted(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"old weights")
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    with rundir.claim(tmp_path):
        pass
    (aside,) = tmp_path.glob("superseded-*")
    assert (aside / "checkpoints" / "best.ckpt").read_bytes() == b"old weights"
    assert (aside / "results.json").exists() and not (tmp_path / "results.json").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_ddp_worker_processes_share_their_launchers_claim(tmp_path, monkeypatch):
    with rundir.claim(tmp_path):
        monkeypatch.setenv("LOCAL_RANK", "1")
        with rundir.claim(tmp_path):  # would raise RunDirectoryBusy for any other process
            pass


def test_the_other_tasks_of_an_srun_share_rank_0s_claim(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "0")
    with rundir.claim(tmp_path):
        with pytest.raises(rundir.RunDirectoryBusy):  # a second task 0: another run
            with rundir.claim(tmp_path):
                pass
        monkeypatch.setenv("SLURM_PROCID", "1")
        with rundir.claim(tmp_path):
            pass


def test_train_into_a_busy_run_directory_stops_with_one_line_and_writes_nothing(tmp_path, cache_dir):
    from tests.conftest import run_train

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from ser import rundir; import time\nwith rundir.claim({str(tmp_path)!r}):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_train("trainer.max_epochs=1", cache_dir=cache_dir, run_dir=tmp_path)
        output = proc.stderr + proc.stdout
        assert proc.returncode == 1 and "Traceback" not in output
        (line,) = [l for l in output.splitlines() if "is using this run directory" in l]
        assert f"PID {holder.pid}" in line
        assert not (tmp_path / "failed.json").exists() and not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
