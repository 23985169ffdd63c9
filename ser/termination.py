"""A run stopped by SIGTERM ends as a failed run, with ``failed.json``, instead of vanishing.

Slurm stops a job (``scancel``, its time limit, preemption) by sending SIGTERM and, KillWait
seconds later (30 by default), SIGKILL; a shutdown or ``docker stop`` does the same. Python's
default is to die on SIGTERM at once, and submitit, behind Hydra's Slurm launcher, ignores it
until the SIGKILL: either way a cancelled job left neither ``results.json`` nor ``failed.json``,
and the sweep could only guess that it "did not finish". Raising an exception in the main
thread instead lets ``train.py`` record the job as failed (the other jobs of a sweep carry on)
and lets Hydra's launcher report it, well within KillWait. Lightning chains this handler
behind its own during ``Trainer.fit``, so the exception also stops training.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ser.errors import SERError


class Terminated(SERError):
    """The run received SIGTERM."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(
        f"stopped by {signal.Signals(signum).name} (scancel, a Slurm time limit, preemption or a "
        "shutdown) before it finished; run it again to complete it"
    )


@contextmanager
def sigterm_fails_the_run() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated``; the previous handler is restored after.

    Only the main thread can take signals: elsewhere (a launcher running jobs in threads) the
    process keeps its handler.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
