"""The decoded-image cache: `data.load_data` keeps decoded, preprocessed images as uint8 tensors under
``<cache>/images/<sha256 of the key>.pt``, so a second run skips JPEG decoding.

Entries load with ``weights_only=True`` (tensors, lists and strings: no pickle of arbitrary objects),
are written under a unique temporary name and renamed (a reader sees no entry or a whole one), and
the folder is bounded: least recently used entries go beyond `MAX_BYTES`. A damaged entry is a miss.
The writer streams `torch.save` to its file (`fpxint.atomic` takes bytes in memory: a second copy of
a 200 MB image set).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

VERSION = 1
MAX_BYTES = 2 << 30  # least recently used entries go beyond this


def entry_file(cache_dir, parts: list) -> Path | None:
    """The entry for a key (any JSON-able parts), or None without a cache folder."""
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps([VERSION, *parts], default=str).encode()).hexdigest()[:24]
    return Path(cache_dir) / "images" / f"{digest}.pt"


def read(candidates: list[Path | None]) -> tuple[dict | None, Path | None]:
    """The first entry that loads (tensors only: `weights_only`), and its path; (None, None) on a miss."""
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            try:
                blob = torch.load(candidate, weights_only=True)
                with contextlib.suppress(OSError):
                    os.utime(candidate)  # the mtime is the entry's last use (atime is often off)
                return blob, candidate
            except Exception:  # a damaged entry is only a cache miss; it is rewritten below
                continue
    return None, None


def write(target: Path | None, blob: dict) -> None:
    """Writes a cache entry under a unique temporary name, then renames it: concurrent fills of the
    same entry (threads of one server, or processes) never share a temporary file."""
    if target is None:
        return
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        os.replace(tmp, target)  # atomic: a crash or a parallel run never leaves half an entry
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    prune(target.parent, MAX_BYTES, keep=target)


def prune(folder: Path, max_bytes: int, keep: Path) -> None:
    """Deletes the least recently used entries until the folder holds at most `max_bytes`: a visitor
    stepping through every subset size must not fill the disk."""
    entries = []
    for p in folder.glob("*.pt"):
        with contextlib.suppress(OSError):
            st = p.stat()
            entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries):
        if total <= max_bytes:
            break
        if p != keep:
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size
