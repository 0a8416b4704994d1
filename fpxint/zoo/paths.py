"""Where fpxint finds the shared read-only material and its own cache.

These helpers read environment variables, so only the edges (CLI, app, test fixtures) call them;
the engine receives plain paths as arguments.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

__all__ = ["find_shared", "checkout_root", "cache_dir", "hub_checkpoint_dir", "shared_dataset", "private_folder",
           "UntrustedFolder"]

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # a checkout's root, or site-packages when installed
# A registry dataset -> its evaluation images in the shared folder (labels from folders or labels.csv).
SHARED_DATASETS = {"cifar10": "data/cifar10-test", "imagenet": "data/imagenet-val-1300"}


def checkout_root() -> Path | None:
    """The checkout this fpxint runs from, or None when it is an installed package.

    The ``../shared`` convention belongs to a checkout (the shared folder beside the clone). An installed
    fpxint sits in site-packages, whose parent is no project of ours: a ``shared`` folder there would be
    somebody else's. So the fallback applies only when the folder above the package holds fpxint's own
    ``pyproject.toml`` (a clone, an exported tree or an editable install).
    """
    try:
        meta = tomllib.loads((_PACKAGE_PARENT / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return _PACKAGE_PARENT if meta.get("project", {}).get("name") == "fpxint" else None


def find_shared(explicit: str | os.PathLike | None = None) -> Path | None:
    """Locates the shared folder (pretrained checkpoints, CIFAR-10 test JPEGs).

    Args:
        explicit: A path given by the user; wins over everything else.

    Returns:
        The first given of ``explicit``, ``$FPXINT_SHARED`` and, in a checkout only (`checkout_root`),
        ``<checkout>/../shared``, resolved; None when that folder does not exist (a path the user named
        never silently falls back).
    """
    root = checkout_root()
    chosen = explicit or os.environ.get("FPXINT_SHARED") or (root.parent / "shared" if root else None)
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    return path.resolve() if path.is_dir() else None


def cache_dir() -> Path:
    """Returns fpxint's cache folder (decoded images): ``$FPXINT_CACHE`` or ``~/.cache/fpxint``."""
    return Path(os.environ.get("FPXINT_CACHE") or Path.home() / ".cache" / "fpxint").expanduser()


class UntrustedFolder(OSError):
    """A cache folder (or a file in it) that could have been written by someone else."""


def private_folder(folder: Path, uid: int) -> Path:
    """Creates `folder` (mode 0700) if needed and checks it is a real folder of `uid` that nobody
    else can write: a library (the C kernel) or weights (a converted language model) that another
    user could plant there would be run or served as this user's. The parent may also belong to root
    and may be others-writable only when sticky (like /tmp).

    Raises:
        UntrustedFolder: a link or a file in its place, another owner, or group / others access.
    """
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    for path, private in ((folder.parent, False), (folder, True)):
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise UntrustedFolder(f"{path} is not a folder (a link or a file)")
        if st.st_uid not in ((uid,) if private else (uid, 0)):
            raise UntrustedFolder(f"{path} belongs to uid {st.st_uid}, not {uid}")
        bad = st.st_mode & (0o077 if private else 0o022)
        if bad and not (not private and st.st_mode & stat.S_ISVTX):  # a sticky parent (like /tmp) is fine
            raise UntrustedFolder(f"{path} has mode {stat.S_IMODE(st.st_mode):o}; group / others must not "
                                  f"{'access' if private else 'write'} it")
    return folder


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
