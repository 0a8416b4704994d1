"""Where fpxint finds the shared read-only material and its own cache.

These helpers read environment variables, so only the edges (CLI, app, test fixtures) call them;
the engine receives plain paths as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_shared", "cache_dir", "hub_checkpoint_dir", "shared_dataset"]

_REPO_ROOT = Path(__file__).resolve().parents[2]
# A registry dataset -> its evaluation images in the shared folder (labels from folders or labels.csv).
SHARED_DATASETS = {"cifar10": "data/cifar10-test", "imagenet": "data/imagenet-val-1300"}


def find_shared(explicit: str | os.PathLike | None = None) -> Path | None:
    """Locates the shared folder (pretrained checkpoints, CIFAR-10 test JPEGs).

    Args:
        explicit: A path given by the user; wins over everything else.

    Returns:
        The first given of ``explicit``, ``$FPXINT_SHARED`` and ``<repo root>/../shared``, resolved;
        None when that folder does not exist (a path the user named never silently falls back).
    """
    chosen = explicit or os.environ.get("FPXINT_SHARED") or _REPO_ROOT.parent / "shared"
    path = Path(chosen).expanduser()
    return path.resolve() if path.is_dir() else None


def cache_dir() -> Path:
    """Returns fpxint's cache folder (decoded images): ``$FPXINT_CACHE`` or ``~/.cache/fpxint``."""
    return Path(os.environ.get("FPXINT_CACHE") or Path.home() / ".cache" / "fpxint").expanduser()


def hub_checkpoint_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Returns the checkpoint folder: ``explicit`` or torch hub's ``<hub dir>/checkpoints``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    import torch.hub  # torch.hub honours TORCH_HOME itself; we only ask it

    return Path(torch.hub.get_dir()) / "checkpoints"


def shared_dataset(dataset: str | None, shared: Path | None) -> Path | None:
    """The shared folder's evaluation images for a registry ``dataset``, or None when absent."""
    if shared is None or dataset not in SHARED_DATASETS:
        return None
    folder = Path(shared) / SHARED_DATASETS[dataset]
    return folder if folder.is_dir() else None
