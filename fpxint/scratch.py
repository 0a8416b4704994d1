"""Private scratch folders: one per app session for uploads, removed when the session ends.

A folder is made by `tempfile.mkdtemp` (mode 0700, a name nobody can guess or create first) and
named after the server's process id, so that a server starting later can tell the folders of
dead servers (`sweep`) from those of a live one. `ScratchDir` removes its folder when it is garbage
collected (the Streamlit session state that holds it is dropped when the session closes) or when
the process exits, whichever comes first.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import weakref
from pathlib import Path

__all__ = ["ScratchDir", "sweep", "PREFIX"]

PREFIX = "fpxint-session-"


def _owned_private(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077 == 0


class ScratchDir:
    """A private temporary folder that lives as long as this object (or the process).

    Example:
        >>> d = ScratchDir(); (d.path / "upload.zip").write_bytes(b"...")
        >>> del d  # the folder and its files are gone
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
        if not _owned_private(self.path):  # mkdtemp promises 0700 and our uid; a shared /tmp is checked anyway
            raise OSError(f"scratch folder {self.path.name} is not private")
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def cleanup(self) -> None:
        self._finalizer()

    @property
    def alive(self) -> bool:
        return self._finalizer.alive


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep(root: str | os.PathLike | None = None) -> list[str]:
    """Removes the scratch folders of processes that no longer run (ours only). Returns their names."""
    base = Path(root or tempfile.gettempdir())
    removed = []
    for entry in base.glob(f"{PREFIX}*"):
        pid_text = entry.name[len(PREFIX):].split("-", 1)[0]
        if not pid_text.isascii() or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            if pid == os.getpid() or _pid_alive(pid) or not _owned_private(entry):
                continue  # a live server's session (ours included), or not our folder to touch
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed
