"""One run per run directory: a lock while it runs, and an earlier run's outputs set aside.

Two runs writing into one directory interleave their checkpoints, results and TensorBoard
events, and a run killed mid-way leaves a ``best.ckpt`` that Lightning would keep beside the
next run's (as ``best-v1.ckpt``), so a later export could pick up the wrong weights. The lock
is an OS file lock (``flock``): the kernel releases it when its process dies, even by SIGKILL,
so a crash never leaves a stale lock behind. Outputs of an earlier run in the same directory
are moved into ``superseded-<time>/`` rather than deleted: results already written are never
lost.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ser.errors import SERError

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
# What a run writes besides Hydra's own .hydra/ and train.log (which Hydra opens before us).
OUTPUTS = (
    "results.json",
    "failed.json",
    "report.md",
    "accuracy_vs_bits.png",
    "quantized.pt",
    "checkpoints",
    "tensorboard",
    "splits",
    "teacher",
)


class RunDirectoryBusy(SERError):
    """Another live process is running in this run directory."""


# Where a process of a distributed run learns its rank: Lightning's DDP launcher sets LOCAL_RANK
# and NODE_RANK in the processes it starts, Slurm sets SLURM_PROCID in each task of an `srun`.
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_worker() -> bool:
    """Whether this is a process other than rank 0 of a distributed run; such processes run
    train.py in rank 0's directory and write nothing there but what Lightning has them write."""
    return any(os.environ.get(name, "0") != "0" for name in RANK_VARIABLES)


@contextmanager
def claim(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir`` for this process; set aside what an earlier run left there.

    Raises ``RunDirectoryBusy`` naming the PID of a run that holds it. The other processes of a
    distributed run (Lightning's DDP workers, the tasks of an ``srun``) share rank 0's claim.
    """
    run_dir = Path(run_dir)
    if is_worker():
        yield run_dir
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise RunDirectoryBusy(
                f"{run_dir}: another run (PID {owner}) is using this run directory; "
                "wait for it to finish or choose another hydra.run.dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        set_aside(run_dir)
        yield run_dir
    finally:
        handle.close()  # closing the descriptor releases the lock


def set_aside(run_dir: Path) -> Path | None:
    """Move an earlier run's outputs into ``superseded-<time>/``; returns that folder, if any."""
    stale = [run_dir / name for name in OUTPUTS if (run_dir / name).exists()]
    if not stale:
        return None
    target = run_dir / time.strftime("superseded-%Y%m%d-%H%M%S")
    suffix = 1
    while target.exists():
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
        suffix += 1
    target.mkdir()
    for path in stale:
        os.replace(path, target / path.name)
    log.warning(
        "%s held an earlier run's outputs (%s); moved them to %s: this run replaces it",
        run_dir,
        ", ".join(p.name for p in stale),
        target,
    )
    return target
