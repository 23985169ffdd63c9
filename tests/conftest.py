"""Shared fixtures: a small built-in corpus and a feature cache per test session."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ser.data import synthetic
from ser.quant import config as quant_config

quant_config.register()  # quant/_base, as train.py does, for the tests that compose conf/ in process

TINY = synthetic.SyntheticSpec(speakers=3, per_speaker_per_emotion=4)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    """84 files: 3 speakers × 7 emotions × 4 takes."""
    return synthetic.generate(tmp_path_factory.mktemp("tiny") / "corpus", TINY)


@pytest.fixture(scope="session")
def default_corpus(cache_dir) -> Path:
    """The built-in corpus exactly as ``python train.py`` uses it."""
    root = cache_dir / "corpora" / "synthetic"
    synthetic.generate(root)
    return root


REPO = Path(__file__).resolve().parents[1]


def run_train(*overrides: str, cache_dir: Path, run_dir: Path) -> subprocess.CompletedProcess:
    """``python train.py`` as a user runs it, writing to ``run_dir``."""
    env = {**os.environ, "SER_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def default_run(default_corpus, cache_dir, tmp_path_factory) -> tuple[Path, dict]:
    """One ``python train.py`` with every default (built-in corpus, LAQ), shared by the tests that inspect it."""
    run_dir = tmp_path_factory.mktemp("default_run")
    proc = run_train(cache_dir=cache_dir, run_dir=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, json.loads((run_dir / "results.json").read_text())


def env_path(name: str) -> Path:
    """A real corpus from the environment, or skip: tests must never require one."""
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set")
    return Path(value)


_RUN_SIGNS = ("run_train(", "subprocess.", "export_main(", "train.py")


def _starts_runs(function, depth: int = 2) -> bool:
    """Whether a test or fixture function starts training runs or other processes (seconds each),
    itself or through the module's private helpers it calls (``_helper(...)``)."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    if any(sign in source for sign in _RUN_SIGNS):
        return True
    helpers = getattr(function, "__globals__", {})
    return depth > 0 and any(
        _starts_runs(helpers[name], depth - 1)
        for name in set(re.findall(r"\b(_\w+)\(", source))
        if inspect.isfunction(helpers.get(name))
    )


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that, itself or through any fixture it uses, starts a run or a
    process, so that ``pytest -m "not slow"`` is the fast loop."""
    for item in items:
        functions = [getattr(item, "function", None)]
        functions += [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
        if any(_starts_runs(f) for f in functions if f is not None):
            item.add_marker(pytest.mark.slow)
