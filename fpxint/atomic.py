"""Atomic file writes: what the CLI's `--out` / `--save` files and `export.save_expanded` are written with.

Every file goes to a unique temporary name beside its target, is flushed to disk, then renamed over
(or, when overwriting is not allowed, hard-linked to) its final name: a reader never sees half a file,
a crash or a full disk leaves the old files as they were and no temporary behind, and without
`overwrite` a file that exists, or appears while we write, is never replaced.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path


def existing(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The paths that exist (a dangling symlink counts: writing through it would create its target)."""
    return [str(p) for p in paths if os.path.lexists(p)]


def refusal(there: list[str]) -> str:
    """The one-line reason for refusing to replace `there` (the caller says how to ask for it)."""
    return f"{' and '.join(there)} already exist{'s' if len(there) == 1 else ''}"


def write_files(files: Sequence[tuple[str | os.PathLike, bytes | str]], overwrite: bool = False) -> None:
    """Writes every (path, content) under a temporary name, then renames them in order.

    Args:
        files: target paths and their contents (str is written as UTF-8); parent folders are created.
        overwrite: replace files that exist; without it nothing is written when one exists.

    Raises:
        FileExistsError: a target exists and `overwrite` is False (message from `refusal`); the files
            that existed are untouched.
    """
    targets = [(Path(p), data.encode() if isinstance(data, str) else data) for p, data in files]
    if not overwrite:
        there = existing(p for p, _ in targets)
        if there:
            raise FileExistsError(refusal(there))
    tmps: list[str] = []
    try:
        for final, data in targets:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            tmps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for (final, _), tmp in zip(targets, tmps):
            if overwrite:
                os.replace(tmp, final)
            else:
                try:
                    os.link(tmp, final)  # fails if someone created `final` meanwhile: never clobbers
                except FileExistsError:
                    raise FileExistsError(refusal([str(final)])) from None
                os.unlink(tmp)
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)
