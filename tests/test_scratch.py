"""Private per-session scratch folders (fpxint/scratch.py): 0700, removed with their owner, dead servers' swept."""
import gc
import os
import stat
import subprocess
import sys

from fpxint.scratch import PREFIX, ScratchDir, sweep


def test_scratch_dir_is_private_and_removed_when_dropped(tmp_path):
    d = ScratchDir(tmp_path)
    path = d.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o700 and path.name.startswith(f"{PREFIX}{os.getpid()}-")
    (path / "upload.zip").write_bytes(b"x")
    del d
    gc.collect()
    assert not path.exists()


def test_sweep_removes_folders_of_dead_servers_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"{PREFIX}{dead}-abc"
    stale.mkdir(mode=0o700)
    (stale / "old.zip").write_bytes(b"x")
    mine = ScratchDir(tmp_path)
    shared = tmp_path / f"{PREFIX}{dead}-open"
    shared.mkdir()
    shared.chmod(0o755)  # not private: not one of ours, left alone
    other = tmp_path / "something-else"
    other.mkdir()
    assert sweep(tmp_path) == [stale.name]
    assert not stale.exists() and mine.path.exists() and shared.exists() and other.exists()
