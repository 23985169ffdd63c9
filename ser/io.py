"""Atomic writes: a reader, a crash or a concurrent job never sees a half-written file.

Temporary files and directories are created with ``os.open``/``os.mkdir`` and the usual
permissions (0666/0777), so the kernel applies the user's umask exactly as for any other new
file: what lands in place is e.g. 0644 / 0755 under umask 022, not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temp_name(parent: Path, prefix: str, suffix: str) -> Path:
    return parent / f"{prefix}{secrets.token_hex(6)}{suffix}"


def create_temp_file(parent: str | Path, prefix: str = ".", suffix: str = ".tmp") -> Path:
    """A new empty file in ``parent`` with a unique name and the umask's mode (like ``mkstemp``, but not 0600)."""
    parent = Path(parent)
    while True:
        path = _temp_name(parent, prefix, suffix)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


def create_temp_dir(parent: str | Path, prefix: str = ".", suffix: str = ".tmp") -> Path:
    """A new empty directory in ``parent`` with the umask's mode (like ``mkdtemp``, but not 0700)."""
    parent = Path(parent)
    while True:
        path = _temp_name(parent, prefix, suffix)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")
