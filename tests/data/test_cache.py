"""``ser cache``: where the feature cache is, how big, and clearing it; cache files keep the umask."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from ser.cli import main as cli
from ser.data.corpora import load_corpus
from ser.data.extraction import load_features
from ser.data.features import FeatureConfig
from ser.data.problems import Problems

CONFIG = FeatureConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=40, n_mfcc=13)


@pytest.fixture
def filled(tiny_manifest, tmp_path):
    """A cache dir holding the features of 5 files (and the memo and lock beside them)."""
    root = tmp_path / "corpus"
    shutil.copytree(tiny_manifest.parent, root)
    load_features(load_corpus("manifest", manifest=root / "manifest.csv")[:5], CONFIG, Problems(), tmp_path / "cache")
    return tmp_path / "cache"


def _size(root):
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_cache_command_shows_location_entries_and_bytes(filled, capsys):
    assert cli(["cache", "--dir", str(filled)]) == 0
    out = capsys.readouterr().out
    total = _size(filled / "features")
    assert out.startswith(f"{filled / 'features'}: 5 entries (1 feature settings), ")
    assert out.rstrip().endswith(f"({total} bytes)")


def test_cache_command_reads_the_directory_from_ser_cache_dir(filled, capsys, monkeypatch):
    monkeypatch.setenv("SER_CACHE_DIR", str(filled))
    assert cli(["cache"]) == 0
    assert capsys.readouterr().out.startswith(f"{filled / 'features'}: 5 entries")


def test_cache_clear_removes_every_entry_and_says_what_it_freed(filled, capsys):
    total = _size(filled / "features")
    (filled / "corpora").mkdir()
    assert cli(["cache", "--dir", str(filled), "--clear"]) == 0
    assert capsys.readouterr().out.startswith(f"cleared {filled / 'features'}: 5 entries, ")
    assert not (filled / "features").exists() and (filled / "corpora").exists(), "the built-in corpus stays"
    assert total > 0
    cli(["cache", "--dir", str(filled)])
    assert ": 0 entries (0 feature settings), 0 bytes\n" in capsys.readouterr().out


def test_cache_files_and_directories_get_the_umasks_modes(tiny_manifest, tmp_path):
    previous = os.umask(0o022)
    try:
        load_features(load_corpus("manifest", manifest=tiny_manifest)[:3], CONFIG, Problems(), tmp_path / "cache")
    finally:
        os.umask(previous)
    paths = list((tmp_path / "cache").rglob("*"))
    modes = lambda kind: {stat.S_IMODE(p.stat().st_mode) for p in paths if kind(p)}  # noqa: E731
    assert modes(lambda p: p.is_dir()) == {0o755}
    assert modes(lambda p: p.is_file()) == {0o644}
    assert len([p for p in paths if p.suffix == ".feat"]) == 3
