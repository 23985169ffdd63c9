"""The per-file feature cache, and ``ser cache`` to see where it is and how big, or clear it.

Layout under ``<cache_dir>/features/``::

    <settings>/<dd>/<digest>.feat   one file's features, or why it could not be used
    <settings>.lock                 taken while a job extracts files missing under <settings>
    files.memo                      (path, device, inode, size, mtime, ctime) -> content digest

``<settings>`` is a hash of every feature setting and audio check; ``<digest>`` is the BLAKE2b
hash of the file's bytes, so adding a file to a corpus extracts that file only, a renamed or
copied file is found again, and a file rewritten in place recomputes even when its size and
mtime are unchanged. The memo only saves re-reading files that have not been touched since
they were hashed (its key includes the inode change time, which every write updates and no
``touch`` can set back); any change sends the file through the hash again.

Every entry ends with a BLAKE2b checksum of its bytes and is written atomically (a temporary
file renamed into place), so a reader never sees a half-written entry, and an entry damaged
on disk (truncated, flipped bits) fails its checksum and is recomputed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.io import write_bytes

log = logging.getLogger(__name__)

CACHE_VERSION = 2
MAGIC = b"SERFEAT2"
_CHECK = 32  # bytes of the BLAKE2b checksum at the end of every entry
_PATH = "\x00path\x00"  # stands for the file's path in a stored error message
_MEMO_LIMIT = 200_000


def _checksum(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=_CHECK).digest()


def pack(header: dict, payload: bytes = b"") -> bytes:
    """MAGIC, header length, JSON header, payload, then a checksum of all of it."""
    head = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + struct.pack("<I", len(head)) + head + payload
    return body + _checksum(body)


def unpack(data: bytes) -> tuple[dict, memoryview] | None:
    """``(header, payload)`` of an intact entry; None for anything truncated, damaged or foreign."""
    if len(data) < len(MAGIC) + 4 + _CHECK or not data.startswith(MAGIC):
        return None
    view = memoryview(data)
    if _checksum(view[:-_CHECK]) != data[-_CHECK:]:
        return None
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(bytes(view[start : start + size]))
    except ValueError:
        return None
    return header, view[start + size : -_CHECK]


def file_digest(path: str | Path) -> str:
    """BLAKE2b (128 bits) of the file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def settings_key(config, checks) -> str:
    """Hash of every setting that changes the numbers or which files are usable."""
    settings = {"version": CACHE_VERSION, "features": config.to_dict(), "checks": dataclasses.asdict(checks)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Result:
    """What the cache holds for one file: its features, or the one-line reason it is unusable."""

    features: np.ndarray | None = None
    error: str | None = None


class DigestMemo:
    """(path, device, inode, size, mtime_ns, ctime_ns) -> content digest, kept in one checked file.

    Lost updates between concurrent jobs only cost a re-hash; a damaged memo is ignored.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list] = {}
        self.changed = False
        try:
            unpacked = unpack(path.read_bytes())
        except OSError:
            unpacked = None
        if unpacked is not None and unpacked[0].get("kind") == "memo":
            self.entries = unpacked[0].get("files", {})

    def digest(self, path: Path) -> str:
        """The content digest of ``path``; raises OSError if it cannot be read."""
        key = os.path.abspath(path)
        st = os.stat(key)
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        known = self.entries.get(key)
        if known is not None and known[:5] == stamp:
            return known[5]
        digest = file_digest(key)
        self.entries.pop(key, None)
        self.entries[key] = [*stamp, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        entries = self.entries
        if len(entries) > _MEMO_LIMIT:  # keep the most recently hashed
            entries = dict(list(entries.items())[-_MEMO_LIMIT:])
        try:
            write_bytes(self.path, pack({"kind": "memo", "files": entries}))
        except OSError as exc:
            log.warning("could not update %s (%s); files will be hashed again next run", self.path, exc)
        self.changed = False


class FeatureCache:
    """Entries of one feature configuration under ``<cache_dir>/features/<settings>/``."""

    def __init__(self, cache_dir: str | Path, config, checks) -> None:
        self.root = Path(cache_dir) / "features"
        self.dir = self.root / settings_key(config, checks)
        self.lock_path = self.root / f"{self.dir.name}.lock"
        self.shape = tuple(config.shape)
        self.memo = DigestMemo(self.root / "files.memo")

    def remove_leftovers(self) -> int:
        """Delete temporary files of jobs killed mid-write; call only while holding ``lock_path``.

        Entries of one settings directory are written only under its lock, so while this
        process holds it every temporary file there belongs to a job that is gone.
        """
        removed = 0
        for tmp in self.dir.glob("*/.*.tmp") if self.dir.is_dir() else ():
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass
        return removed

    def entry(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.feat"

    def get(self, digest: str, path: Path) -> Result | None:
        """The stored result for this content, or None when there is none or it is damaged."""
        entry = self.entry(digest)
        try:
            data = entry.read_bytes()
        except OSError:
            return None
        unpacked = unpack(data)
        if unpacked is not None:
            header, payload = unpacked
            if header.get("kind") == "error":
                return Result(error=str(header["message"]).replace(_PATH, str(path)))
            if header.get("kind") == "features" and tuple(header.get("shape", ())) == self.shape:
                array = np.frombuffer(payload, dtype=header["dtype"])
                if array.size == int(np.prod(self.shape)):
                    return Result(features=array.reshape(self.shape))
        log.warning("feature cache entry %s is damaged; recomputing it", entry)
        return None

    def put(self, digest: str, path: Path, result: Result) -> None:
        if result.error is not None:
            data = pack({"kind": "error", "message": result.error.replace(str(path), _PATH)})
        else:
            array = np.ascontiguousarray(result.features, dtype=np.float32)
            data = pack({"kind": "features", "dtype": "<f4", "shape": list(array.shape)}, array.astype("<f4").tobytes())
        entry = self.entry(digest)
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(entry, data)


def usage(cache_dir: str | Path) -> dict:
    """Entries and bytes of the feature cache (everything under ``<cache_dir>/features``)."""
    root = Path(cache_dir) / "features"
    entries = total = files = 0
    settings = set()
    if root.is_dir():
        for dirpath, _, names in os.walk(root):
            for name in names:
                try:
                    size = os.stat(os.path.join(dirpath, name)).st_size
                except OSError:
                    continue
                total += size
                files += 1
                if name.endswith(".feat") and not name.startswith("."):
                    entries += 1
                    settings.add(Path(dirpath).parent.name)
    return {"location": str(root), "entries": entries, "settings": len(settings), "files": files, "bytes": total}


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def default_cache_dir() -> Path:
    """``$SER_CACHE_DIR``, else the platform's user cache directory (~/.cache/ser), as training uses."""
    from platformdirs import user_cache_path

    return Path(os.environ["SER_CACHE_DIR"]) if os.environ.get("SER_CACHE_DIR") else user_cache_path("ser")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ser cache", description="Where the feature cache is, how big, and clearing it."
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="the cache directory, as data.cache_dir (default: $SER_CACHE_DIR or ~/.cache/ser)",
    )
    parser.add_argument("--clear", action="store_true", help="delete every cached feature (the built-in corpus stays)")
    args = parser.parse_args(argv)
    cache_dir = (args.dir or default_cache_dir()).expanduser()
    before = usage(cache_dir)
    if args.clear:
        root = Path(before["location"])
        if root.exists():
            shutil.rmtree(root)
        print(f"cleared {before['location']}: {before['entries']} entries, {_human(before['bytes'])}")
        return 0
    size = _human(before["bytes"])
    exact = "" if before["bytes"] < 1000 else f" ({before['bytes']} bytes)"
    print(f"{before['location']}: {before['entries']} entries ({before['settings']} feature settings), {size}{exact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
