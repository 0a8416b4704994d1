"""Where fpxint finds the shared read-only material and its own cache.

These helpers read environment variables, so only the edges (CLI, app, test fixtures) call them;
the engine receives plain paths as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_shared", "cache_dir", "hub_checkpoint_dir"]

_REPO_ROOT = Path(__file__).resolve().parents[2]


def find_shared(explicit: str | os.PathLike | None = None) -> Path | None:
    """Locates the shared folder (pretrained checkpoints, CIFAR-10 test JPEGs).

    Args:
        explicit: A path given by the user; wins over everything else.

    Returns:
        The first existing folder among ``explicit``, ``$FPXINT_SHARED`` and ``<repo root>/../shared``,
        or None when none of them exists.
    """
    candidates = [explicit, os.environ.get("FPXINT_SHARED"), _REPO_ROOT.parent / "shared"]
    for candidate in candidates:
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser().resolve()
    return None


def cache_dir() -> Path:
    """Returns fpxint's cache folder (decoded images): ``$FPXINT_CACHE`` or ``~/.cache/fpxint``."""
    return Path(os.environ.get("FPXINT_CACHE") or Path.home() / ".cache" / "fpxint").expanduser()


def hub_checkpoint_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Returns the checkpoint folder: ``explicit`` or torch hub's ``<hub dir>/checkpoints``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    import torch.hub  # torch.hub honours TORCH_HOME itself; we only ask it

    return Path(torch.hub.get_dir()) / "checkpoints"
