"""Atomic writes keep the user's umask and leave nothing behind on failure."""

from __future__ import annotations

import os
import stat

import pytest

from ser.io import atomic_path, create_temp_dir, write_json


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomically_written_file_gets_the_umasks_mode(tmp_path, umask, mask, mode):
    umask(mask)
    write_json(tmp_path / "results.json", {"a": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "results.json").st_mode) == mode


@pytest.mark.parametrize("mask, mode", [(0o022, 0o755), (0o027, 0o750)])
def test_temporary_directory_gets_the_umasks_mode(tmp_path, umask, mask, mode):
    umask(mask)
    assert stat.S_IMODE(os.stat(create_temp_dir(tmp_path)).st_mode) == mode


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary_one(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
