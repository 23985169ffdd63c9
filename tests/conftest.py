"""Shared fixtures: a small built-in corpus and a feature cache per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ser.data import synthetic

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


def env_path(name: str) -> Path:
    """A real corpus from the environment, or skip: tests must never require one."""
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set")
    return Path(value)
