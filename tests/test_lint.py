"""The tree is clean under the linter and formatter configured in pyproject.toml (ruff)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO

RUFF = shutil.which("ruff")
pytestmark = pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install -e '.[test]')")


def test_ruff_finds_nothing_to_lint():
    proc = subprocess.run([RUFF, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_every_file_is_formatted():
    proc = subprocess.run([RUFF, "format", "--check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
