"""SIGTERM within a run raises Terminated, so that train.py can record the run as failed."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from ser.errors import SERError
from ser.termination import Terminated, sigterm_fails_the_run


def test_sigterm_within_the_block_raises_terminated_naming_the_signal():
    with pytest.raises(Terminated, match=r"^stopped by SIGTERM \(scancel, a Slurm time limit"):
        with sigterm_fails_the_run():
            os.kill(os.getpid(), signal.SIGTERM)
    assert issubclass(Terminated, SERError)  # train.py shows its message on one line, without a traceback


def test_the_previous_sigterm_handler_is_back_after_the_block():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with pytest.raises(Terminated):
            with sigterm_fails_the_run():
                os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_the_main_thread_the_handler_is_left_alone():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def run():
        with sigterm_fails_the_run():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before]
