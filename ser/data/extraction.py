"""Decode a corpus, extract each file's features once, and keep them on disk for the next run.

The cache (``ser.data.cache``) holds one entry per file, keyed by the file's content hash and
every feature setting and audio check: a second run loads, adding a file to a corpus extracts
that file only, and a file whose bytes changed recomputes. Files that cannot be used are
cached too (their one-line reason), so a cached run reports them exactly like the first.
Parallel jobs of a sweep share it: entries are written atomically, and a job extracts the
files missing under one settings lock, so another job with the same settings waits and loads.

On CPU, extraction runs as many batches at once as there are cores that other processes leave
free (``ThreadPolicy``: running threads when it starts, then ``/proc/stat`` during extraction),
each batch on one torch thread. OpenMP threads that contend with a busy neighbour for the
same cores spin at every barrier, which made extraction under load as slow as a plain
per-file librosa loop; whole batches in parallel have no barriers to wait at.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ser.data.cache import FeatureCache, Result
from ser.data.corpora import Utterance
from ser.data.features import FeatureConfig, FeatureExtractor, resolve_device
from ser.data.problems import Problems
from ser.dsp.audio import AudioChecks, load_audio
from ser.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 64  # files decoded, extracted and written to the cache together


@dataclass
class FeatureTable:
    """Features of the utterances that decoded, and why the others did not."""

    features: np.ndarray
    utterances: list[Utterance]
    problems: list[str]
    seconds: float
    from_cache: bool


# -- thread policy --------------------------------------------------------------------------


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _busy_seconds(cpus: Sequence[int]) -> float | None:
    """CPU seconds spent busy so far on ``cpus``, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [int(v) for v in fields[1:]]
            ticks += sum(values[:8]) - values[3] - values[4]  # all but idle and iowait (guest is in user)
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _others_running() -> int | None:
    """Threads of other processes ready to run at this moment: /proc/stat's ``procs_running``
    less this process's own running threads; None where there is no /proc."""
    try:
        with open("/proc/stat") as fh:
            running = next((int(line.split()[1]) for line in fh if line.startswith("procs_running")), None)
        own = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as fh:
                own += fh.read().rsplit(")", 1)[-1].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return None if running is None else max(0, running - own)


class ThreadPolicy:
    """How many threads CPU extraction should use: the cores that other processes leave free.

    ``torch.get_num_threads()`` (e.g. ``OMP_NUM_THREADS=1`` for parallel sweep jobs) is the
    upper limit. The first choice counts the other processes' threads that are running right
    now (the fewest of three looks, a millisecond apart), so extraction starts at once; later
    ones use /proc/stat's busy time minus this process's own CPU time over the work since the
    last choice. ``sample_s`` > 0 waits that long and measures busy time instead.
    """

    def __init__(self, sample_s: float = 0.0) -> None:
        self.cpus = _cpus()
        self.limit = max(1, min(torch.get_num_threads(), len(self.cpus)))
        self._mark = self._now()
        self._last = self.limit
        if self.limit > 1 and self._mark[0] is not None:
            if sample_s > 0:
                time.sleep(sample_s)
                return
            looks = []
            for i in range(3):
                if i:
                    time.sleep(0.001)
                looks.append(_others_running())
            if None not in looks:
                self._last = self._fit(min(looks))

    def _now(self) -> tuple[float | None, float, float]:
        return _busy_seconds(self.cpus), _own_seconds(), time.perf_counter()

    def _fit(self, others: float) -> int:
        """Threads for the cores that ``others`` (busy cores' worth of other processes) leave free."""
        return max(1, min(self.limit, int(len(self.cpus) - others + 0.25)))

    def threads(self) -> int:
        """Threads for the next piece of work, from the load since the last call."""
        if self.limit == 1:
            return 1
        busy0, own0, wall0 = self._mark
        busy1, own1, wall1 = now = self._now()
        if busy0 is None or busy1 is None:
            return self.limit  # no /proc/stat: torch's own choice
        if wall1 - wall0 >= 0.05:  # shorter windows are below /proc/stat's resolution
            self._mark = now
            self._last = self._fit(max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))
        return self._last


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- extraction -----------------------------------------------------------------------------


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )


def extract_chunk(
    extractor: FeatureExtractor, signals: Sequence[np.ndarray], policy: ThreadPolicy | None
) -> np.ndarray:
    """Features of ``signals`` with the thread count ``policy`` picks for now (None: torch's own).

    On CPU that many batches run at once, each on one torch thread (inter-op parallelism):
    the operations of a batch are too small to split over cores without waiting at barriers.
    """
    if policy is None:
        return extractor(signals)
    with torch_threads(1):
        return extractor(signals, workers=policy.threads())


def extract_signals(extractor: FeatureExtractor, signals: Sequence[np.ndarray]) -> np.ndarray:
    """Features of decoded ``signals`` exactly as ``load_features`` computes them: chunks, thread policy."""
    policy = ThreadPolicy() if extractor.device.type == "cpu" else None
    parts = [extract_chunk(extractor, signals[i : i + CHUNK], policy) for i in range(0, len(signals), CHUNK)]
    return np.concatenate(parts) if parts else np.empty((0, *extractor.config.shape), dtype=np.float32)


def extract_results(
    paths: Sequence[Path],
    config: FeatureConfig,
    checks: AudioChecks,
    device: str,
    batch_size: int,
    done=None,
) -> list[Result]:
    """Decode and extract ``paths`` in chunks; ``done(index, result)`` is called as each chunk finishes."""
    device_ = resolve_device(device)
    extractor = FeatureExtractor(config, device_, batch_size)
    policy = ThreadPolicy() if device_.type == "cpu" else None
    results: list[Result | None] = [None] * len(paths)
    # By size, so that each chunk holds files of similar length and batches pad little.
    order = sorted(range(len(paths)), key=lambda i: _size(paths[i]))
    with _progress() as progress:
        task = progress.add_task("extracting features", total=len(paths))
        for start in range(0, len(paths), CHUNK):
            chunk = order[start : start + CHUNK]
            results_chunk, signals, rows = [], [], []
            for path in (paths[i] for i in chunk):
                try:
                    signals.append(load_audio(path, config.sample_rate, checks))
                    rows.append(len(results_chunk))
                    results_chunk.append(Result())
                except DataError as exc:
                    results_chunk.append(Result(error=str(exc)))
            if signals:
                features = extract_chunk(extractor, signals, policy)
                for row, vector in zip(rows, features):
                    results_chunk[row].features = vector
            for i, result in zip(chunk, results_chunk):
                results[i] = result
                if done is not None:
                    done(i, result)
            progress.advance(task, len(chunk))
    return results


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def load_features(
    utterances: Sequence[Utterance],
    config: FeatureConfig,
    problems: Problems,
    cache_dir: Path | None,
    checks: AudioChecks = AudioChecks(),
    device: str = "auto",
    batch_size: int = 8,
) -> FeatureTable:
    """Features for ``utterances``, from the cache where it holds them; bad files go to ``problems``.

    Only files the cache does not hold (by content) are decoded and extracted. Files that
    failed to decode are remembered in the cache too, so that a cached run reports them
    exactly like the run that found them, in the same order.
    """
    start = time.perf_counter()
    paths = [Path(u.path) for u in utterances]
    results: list[Result | None] = [None] * len(paths)
    extracted = 0
    if cache_dir is None:
        results = list(extract_results(paths, config, checks, device, batch_size))
        extracted = len(paths)
    else:
        cache = FeatureCache(cache_dir, config, checks)
        digests: list[str | None] = []
        for path in paths:
            try:
                digests.append(cache.memo.digest(path))
            except OSError:
                digests.append(None)  # missing or unreadable: decoding says why, every run
        cache.memo.save()
        for i, digest in enumerate(digests):
            if digest is not None:
                results[i] = cache.get(digest, paths[i])
        if any(r is None and d is not None for r, d in zip(results, digests)):
            cache.lock_path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(cache.lock_path)):
                cache.remove_leftovers()
                # Another job may have written some of them while this one waited for the lock.
                for i, digest in enumerate(digests):
                    if results[i] is None and digest is not None:
                        results[i] = cache.get(digest, paths[i])
                todo, first = [], {}
                for i, digest in enumerate(digests):
                    if results[i] is None and digest is not None and digest not in first:
                        todo.append(i)
                        first[digest] = i

                def done(k: int, result: Result) -> None:
                    results[todo[k]] = result
                    cache.put(digests[todo[k]], paths[todo[k]], result)

                extract_results([paths[i] for i in todo], config, checks, device, batch_size, done)
                extracted = len(todo)
                for i, digest in enumerate(digests):  # copies of a file extracted above
                    if results[i] is None and digest is not None:
                        source = results[first[digest]]
                        results[i] = Result(
                            source.features,
                            None
                            if source.error is None
                            else source.error.replace(str(paths[first[digest]]), str(paths[i])),
                        )
        unread = [i for i, digest in enumerate(digests) if digest is None]
        if unread:  # missing or unreadable when hashed: nothing to cache, decoding says why, every run
            for i, result in zip(
                unread, extract_results([paths[i] for i in unread], config, checks, device, batch_size)
            ):
                results[i] = result
                extracted += result.error is None
    kept = [i for i, r in enumerate(results) if r.error is None]
    failed = [r.error for r in results if r.error is not None]
    for message in failed:
        problems.report(message)
    features = (
        np.stack([results[i].features for i in kept]).astype(np.float32, copy=False)
        if kept
        else np.empty((0, *config.shape), dtype=np.float32)
    )
    seconds = time.perf_counter() - start
    log.info(
        "features for %d files in %.2f s: %d from the cache, %d extracted",
        len(kept),
        seconds,
        len(paths) - extracted,
        extracted,
    )
    return FeatureTable(
        features, [utterances[i] for i in kept], failed, seconds, cache_dir is not None and extracted == 0
    )
