"""Decode a corpus, extract its features once, and keep them on disk for the next run.

The cache key covers every feature setting, the audio checks, and each file's path, size and
modification time, so a second run with the same inputs loads in milliseconds while a
changed setting or a touched file recomputes. Entries are written atomically under a file
lock, so parallel jobs of a sweep never read a half-written table or extract twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from filelock import FileLock
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ser.data.audio import AudioChecks, load_audio
from ser.data.corpora import Utterance
from ser.data.features import FeatureConfig, FeatureExtractor, resolve_device
from ser.data.problems import Problems
from ser.errors import DataError
from ser.io import atomic_path

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class FeatureTable:
    """Features of the utterances that decoded, and why the others did not."""

    features: np.ndarray
    utterances: list[Utterance]
    problems: list[str]
    seconds: float
    from_cache: bool


def cache_key(paths: Sequence[Path], config: FeatureConfig, checks: AudioChecks) -> str:
    digest = hashlib.sha256()
    settings = {"version": CACHE_VERSION, "features": config.to_dict(), "checks": dataclasses.asdict(checks)}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:32]


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )


def _extract(
    utterances: Sequence[Utterance], config: FeatureConfig, checks: AudioChecks, device: str, batch_size: int
) -> tuple[np.ndarray, list[int], list[str]]:
    signals, kept, failed = [], [], []
    with _progress() as progress:
        task = progress.add_task("decoding audio", total=len(utterances))
        for i, utterance in enumerate(utterances):
            try:
                signals.append(load_audio(utterance.path, config.sample_rate, checks))
                kept.append(i)
            except DataError as exc:
                failed.append(str(exc))
            progress.advance(task)
        extractor = FeatureExtractor(config, resolve_device(device), batch_size)
        task = progress.add_task("extracting features", total=len(signals))
        features = extractor(signals, progress=lambda n: progress.advance(task, n))
    return features, kept, failed


def load_features(
    utterances: Sequence[Utterance],
    config: FeatureConfig,
    problems: Problems,
    cache_dir: Path | None,
    checks: AudioChecks = AudioChecks(),
    device: str = "auto",
    batch_size: int = 8,
) -> FeatureTable:
    """Features for ``utterances``, from the cache when it holds them; bad files go to ``problems``.

    Files that failed to decode are remembered in the cache entry too, so that a cached run
    reports them exactly like the run that found them.
    """
    start = time.perf_counter()
    paths = [u.path for u in utterances]
    entry = None
    if cache_dir is not None:
        entry = Path(cache_dir) / "features" / f"{cache_key(paths, config, checks)}.npz"
        entry.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(entry) + ".lock") if entry is not None else None
    from_cache = False
    if lock is not None:
        lock.acquire()
    try:
        if entry is not None and entry.exists():
            with np.load(entry) as stored:
                features, kept, failed = stored["features"], list(stored["kept"]), list(stored["failed"])
            from_cache = True
        else:
            features, kept, failed = _extract(utterances, config, checks, device, batch_size)
            if entry is not None:
                with atomic_path(entry) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, features=features, kept=np.asarray(kept, dtype=np.int64), failed=np.asarray(failed, dtype=str))
    finally:
        if lock is not None:
            lock.release()
    for message in failed:
        problems.report(str(message))
    seconds = time.perf_counter() - start
    log.info("features for %d files %s in %.2f s", len(kept), "loaded from cache" if from_cache else "extracted", seconds)
    return FeatureTable(features, [utterances[int(i)] for i in kept], [str(m) for m in failed], seconds, from_cache)
